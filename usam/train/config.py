"""Training configuration (``usam train CONFIG.yaml``): typed sections, validated up front in one place.

Example (``configs/breast.yaml``)::

    name: breast                       # adapter name
    backbone: litemedsam
    data:
      root: ../shared/data/fmc_uia_dev # FMC_UIA root with train/ and val/ (or a split dir, or an images/+masks/ folder)
      tasks: [breast_lesion, breast_3cls]   # default: every task found
      limit: null                      # at most this many rows per task and split (tiny runs)
    mode: cache                        # cache: frozen encoder, embeddings cached on disk; lora: LoRA in the encoder;
                                       # tail: LoRA in the last lora.stages encoder stages, their inputs cached for train.views views
                                       # (cache mode caches train.views embeddings per image too: default 1)
    lora: {rank: 8, alpha: 16, dropout: 0.0, stages: null}   # stages: LoRA in the last K encoder stages only (null: all; tail: 1)
    decoder: {tune: true, lora: {rank: 16, alpha: 16}}
    train: {epochs: 10, batch_size: 8, lr: 3.0e-4, seed: 0}
    output: runs/breast
    init: null                         # optional: an adapter directory to start from (same tasks and settings)

Each section is a dataclass (:class:`DataSettings`, :class:`~usam.adapters.lora.LoraSettings` via
:class:`EncoderLoraSettings`, :class:`~usam.adapters.config.DecoderSettings`, :class:`TrainSettings`) whose fields
hold the defaults and the checks; :func:`load_config` builds them from YAML + ``--set`` overrides with
:func:`~usam.adapters.settings.build_section`, which refuses unknown keys naming the key and the section.
Relative paths are resolved against the working directory, then against the config file's folder.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..adapters.config import DecoderSettings, check_adapter_name
from ..adapters.lora import LoraSettings
from ..adapters.settings import (
    Invalid,
    SectionView,
    boolean,
    build_section,
    check,
    integer,
    is_int,
    non_negative_int,
    number,
    one_of,
    optional,
    positive_int,
    text,
)
from ..backbones import DEFAULT_BACKBONE
from ..data.augment import DEFAULT_SCALE
from ..errors import ConfigError

MODES = ("cache", "lora", "tail")


# ------------------------------------------------------------------------------------------- sections
def _task_weights(v):
    if not isinstance(v, dict) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                                          for w in v.values()):
        raise Invalid("must map task ids to non-negative numbers")
    return dict(v)


def _zoom_range(v):
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            or not 0 < v[0] <= v[1]):
        raise Invalid("must be [min, max] zoom factors with 0 < min <= max, e.g. [0.9, 1.1]")
    return (float(v[0]), float(v[1]))


@dataclass(frozen=True)
class TrainSettings(SectionView):
    """The ``train`` section (read as ``cfg.train.lr`` or ``cfg.train["lr"]``)."""

    epochs: int = field(default=10, metadata=check(positive_int))
    #: default: samples of all tasks / batch_size
    steps_per_epoch: int | None = field(default=None, metadata=check(optional(positive_int)))
    #: segmentation batch (each row runs the mask decoder several times)
    batch_size: int = field(default=8, metadata=check(positive_int))
    #: classification / detection / regression batch (cheap heads on the embedding)
    batch_size_heads: int = field(default=32, metadata=check(positive_int))
    lr: float = field(default=3.0e-4, metadata=check(number(0.0, above=True)))
    weight_decay: float = field(default=1.0e-4, metadata=check(number(0.0)))
    seed: int = field(default=0, metadata=check(integer))
    #: task sampling: sqrt | uniform | proportional (to sample count)
    sampling: str = field(default="sqrt", metadata=check(one_of("sqrt", "uniform", "proportional")))
    #: extra sampling weight per task id, e.g. {breast_lesion: 3}
    task_weights: dict = field(default_factory=dict, metadata=check(_task_weights))
    #: prompted segmentation: share of steps with a jittered box instead of clicks
    box_prob: float = field(default=0.35, metadata=check(number(0.0, 1.0)))
    #: simulated clicks per step (first innermost, then error-region corrections); the maximum
    click_iters: int = field(default=3, metadata=check(positive_int))
    #: with a value: the number of clicks is drawn uniformly in [click_iters_min, click_iters]
    click_iters_min: int | None = field(default=None, metadata=check(optional(positive_int)))
    #: box steps: up to this many corrective clicks after the box (drawn uniformly from 0)
    box_click_iters: int = field(default=0, metadata=check(non_negative_int))
    #: which decoder passes of a simulated interaction carry the loss: first_last (the first and the last),
    #: last (the last only) or all (every pass, each with its own graph: the previous logits are fed back detached)
    click_loss: str = field(default="first_last", metadata=check(one_of("first_last", "last", "all")))
    #: keep the heads as they are (from ``init``) and train only the tuned decoder: only segmentation tasks are
    #: sampled (their prompted interaction + the automatic masks through the frozen head tokens); with a click decoder
    #: (``decoder.clicks: separate``) the tuned decoder, which serves the heads, stays too: only the click decoder trains
    freeze_heads: bool = field(default=False, metadata=check(boolean))
    #: keep the tuned decoder and the click decoder as they are (from ``init``): the heads and the encoder LoRA
    #: (``lora`` / ``tail`` mode) train, the prompted and automatic losses reaching the encoder through the frozen
    #: decoders (an encoder LoRA that adapts the embeddings to decoders already tuned for the organ)
    freeze_decoder: bool = field(default=False, metadata=check(boolean))
    #: validation: Dice after 1..val_clicks simulated clicks (the score uses their mean)
    val_clicks: int = field(default=1, metadata=check(positive_int))
    #: weight of the automatic-segmentation loss
    auto_weight: float = field(default=1.0, metadata=check(number(0.0)))
    #: lora mode: image augmentation; tail / cache mode: views after the first are augmented
    augment: bool = field(default=True, metadata=check(boolean))
    #: the augmentation's zoom range ``[min, max]`` (its small affine, drawn with p = 0.5 per image or view); wider
    #: for an organ whose size varies more than the training images show (e.g. one cine loop)
    augment_scale: tuple = field(default=DEFAULT_SCALE, metadata=check(_zoom_range))
    #: tail / cache mode: views cached per training image (the first un-augmented, the others augmented once each;
    #: a cached view costs one stage-input pass (tail) or one encoder pass (cache) per image, once). Unset: 4 in tail
    #: mode, 1 in cache mode (the embeddings of the images as read)
    views: int | None = field(default=None, metadata=check(optional(positive_int)))
    #: auto: bf16 on CUDA, none on CPU
    mixed_precision: str = field(default="auto", metadata=check(one_of("auto", "no", "bf16", "fp16")))
    #: at most this many validation rows per task
    val_limit: int | None = field(default=None, metadata=check(optional(positive_int)))
    num_workers: int = field(default=0, metadata=check(non_negative_int))

    def __post_init__(self):
        if self.click_iters_min is not None and self.click_iters_min > self.click_iters:
            raise ConfigError(f"train.click_iters_min ({self.click_iters_min}) is above train.click_iters ({self.click_iters})")
        if self.freeze_heads and self.freeze_decoder:
            raise ConfigError("train.freeze_heads and train.freeze_decoder together leave only the encoder LoRA: give one of them")


@dataclass
class EncoderLoraSettings(SectionView, LoraSettings):
    """The ``lora`` section: encoder LoRA (``lora`` / ``tail`` modes). ``targets`` ``None``: the encoder's attention
    projections (or, with ``stages``, those of the trained stages); :meth:`settings` gives the adapter's LoRA."""

    targets: str | None = field(default=None, metadata=check(optional(text)))
    #: LoRA in the last ``stages`` encoder stages only (``None``: all; tail mode: 1)
    stages: int | None = field(default=None, metadata=check(optional(positive_int)))

    def __post_init__(self):
        if self.stages is not None and self.targets is not None:
            raise ConfigError("give lora.stages or lora.targets, not both")

    def settings(self) -> LoraSettings:
        if self.targets is None:
            return LoraSettings(self.rank, self.alpha, self.dropout)
        return LoraSettings(self.rank, self.alpha, self.dropout, self.targets)


@dataclass(frozen=True)
class DataSettings(SectionView):
    """The ``data`` section (a string: the root alone)."""

    root: Path = field(metadata=check(text))
    tasks: list[str] | None = field(default=None, metadata=check(optional(
        lambda v: _names(v, "must be a non-empty list of task ids"), "")))
    limit: int | None = field(default=None, metadata=check(optional(positive_int)))
    train: str = field(default="train", metadata=check(lambda v: _split(v)))
    val: str = field(default="val", metadata=check(lambda v: _split(v)))


def _names(v, what: str):
    if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v):
        raise Invalid(what)
    return list(v)


def _split(v):
    if not isinstance(v, str) or not v:
        raise Invalid("must be a split folder name")
    return v


# ------------------------------------------------------------------------------------------- the config
def _name(v):
    return check_adapter_name(str(v) if is_int(v) else v)


def _folder(v):
    if not isinstance(v, (str, os.PathLike)) or not str(v).strip():
        raise Invalid("must be a folder path")
    return v


def _string(v):
    if not isinstance(v, str):
        raise Invalid("must be a string")
    return v


@dataclass
class TrainConfig:
    """A checked training config. ``data_root`` / ``tasks`` / ``limit`` / ``train_split`` / ``val_split`` read
    :attr:`data`; ``source`` is where it came from and ``raw`` the mapping as given (overrides applied)."""

    name: str = field(metadata=check(_name))
    data: DataSettings = field(metadata=check(lambda v: build_section(DataSettings, {"root": v} if isinstance(v, str) else v, "data")))
    output: Path = field(metadata=check(_folder))
    backbone: str = field(default=DEFAULT_BACKBONE, metadata=check(_string))
    checkpoint: str | None = field(default=None, metadata=check(optional(_string)))
    mode: str = field(default="cache", metadata=check(one_of(*MODES)))
    lora: EncoderLoraSettings = field(default_factory=EncoderLoraSettings,
                                      metadata=check(lambda v: EncoderLoraSettings.from_dict(v, None, "lora")))
    decoder: DecoderSettings = field(default_factory=DecoderSettings,
                                     metadata=check(lambda v: build_section(DecoderSettings, v, "decoder")))
    train: TrainSettings = field(default_factory=TrainSettings, metadata=check(lambda v: build_section(TrainSettings, v, "train")))
    precision: str = field(default="auto", metadata=check(one_of("fp32", "bf16", "auto")))
    #: start from this adapter's weights (same tasks), e.g. to continue training
    init: Path | None = field(default=None, metadata=check(optional(_string)))
    source: str = field(default="<dict>", init=False)
    raw: dict = field(default_factory=dict, init=False)

    @property
    def data_root(self) -> Path:
        return Path(self.data.root)

    @property
    def tasks(self) -> list[str] | None:
        return self.data.tasks

    @property
    def limit(self) -> int | None:
        return self.data.limit

    @property
    def train_split(self) -> str:
        return self.data.train

    @property
    def val_split(self) -> str:
        return self.data.val


def _resolve(path: str, base: Path | None) -> Path:
    p = Path(os.path.expandvars(str(path))).expanduser()
    if p.is_absolute() or p.exists() or base is None:
        return p.resolve() if p.exists() else p
    alt = (base / p)
    return alt.resolve() if alt.exists() else p


def set_override(raw: dict, assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: the key must be a.b.c, without empty parts")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({exc})") from exc


def _read(path: str | os.PathLike | dict) -> tuple[dict, str, Path | None]:
    """The raw mapping, where it came from, and the folder relative paths may be relative to."""
    if isinstance(path, dict):
        return copy.deepcopy(path), "<dict>", None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"training config {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a training config must be a mapping, got {type(raw).__name__}")
    return raw, str(p), p.resolve().parent


def load_config(path: str | os.PathLike | dict, overrides: list[str] = ()) -> TrainConfig:
    """Read and validate a training config (YAML file or dict); ``overrides`` are ``a.b=value`` strings."""
    raw, source, base = _read(path)
    for o in overrides:
        set_override(raw, o)
    try:
        cfg = build_section(TrainConfig, raw, "")
        _resolve_paths(cfg, raw, base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    cfg.source, cfg.raw = source, raw
    return cfg


def _resolve_paths(cfg: TrainConfig, raw: dict, base: Path | None) -> None:
    """Paths made absolute where they exist; the data root and an ``init`` adapter must exist."""
    root = _resolve(cfg.data.root, base)
    if not root.exists():
        raise ConfigError(f"data root {str(cfg.data.root)!r} does not exist (resolved to {root})")
    object.__setattr__(cfg.data, "root", root)
    cfg.output = _resolve(cfg.output, None)
    if cfg.init:
        init = _resolve(cfg.init, base)
        if not init.is_dir():
            raise ConfigError(f"init adapter {raw['init']!r} is not a folder (resolved to {init})")
        cfg.init = init
    else:
        cfg.init = None
