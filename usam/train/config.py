"""Training configuration (``usam train CONFIG.yaml``), validated up front.

Example (``configs/breast.yaml``)::

    name: breast                       # adapter name
    backbone: litemedsam
    data:
      root: ../shared/data/fmc_uia_dev # FMC_UIA root with train/ and val/ (or a split dir, or an images/+masks/ folder)
      tasks: [breast_lesion, breast_3cls]   # default: every task found
      limit: null                      # at most this many rows per task and split (tiny runs)
    mode: cache                        # cache: frozen encoder, embeddings cached on disk; lora: LoRA in the encoder
    lora: {rank: 8, alpha: 16, dropout: 0.05}
    decoder: {tune: true, lora: {rank: 16, alpha: 16}}
    train: {epochs: 10, batch_size: 8, lr: 3.0e-4, seed: 0}
    output: runs/breast
    init: null                         # optional: an adapter directory to start from (same tasks and settings)

Relative paths are resolved against the working directory, then against the config file's folder.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

DEFAULT_TRAIN = {
    "epochs": 10,
    "steps_per_epoch": None,     # default: samples of all tasks / batch_size
    "batch_size": 8,             # segmentation batch (each row runs the mask decoder several times)
    "batch_size_heads": 32,      # classification / detection / regression batch (cheap heads on the embedding)
    "lr": 3.0e-4,
    "weight_decay": 1.0e-4,
    "seed": 0,
    "sampling": "sqrt",          # task sampling: sqrt | uniform | proportional (to sample count)
    "task_weights": {},          # extra sampling weight per task id, e.g. {breast_lesion: 3}
    "box_prob": 0.35,            # prompted segmentation: share of steps with a jittered box instead of clicks
    "click_iters": 3,            # simulated clicks per step (first innermost, then error-region corrections); the maximum
    "click_iters_min": None,     # with a value: the number of clicks is drawn uniformly in [click_iters_min, click_iters]
    "box_click_iters": 0,        # box steps: up to this many corrective clicks after the box (drawn uniformly from 0)
    "val_clicks": 1,             # validation: Dice after 1..val_clicks simulated clicks (the score uses their mean)
    "auto_weight": 1.0,          # weight of the automatic-segmentation loss
    "augment": True,             # lora mode: image augmentation
    "mixed_precision": "auto",   # auto: bf16 on CUDA, none on CPU
    "val_limit": None,           # at most this many validation rows per task
    "num_workers": 0,
}
DEFAULT_DECODER = {"tune": True, "lora": {"rank": 16, "alpha": 16, "dropout": 0.0}}
DEFAULT_LORA = {"rank": 8, "alpha": 16, "dropout": 0.05}
TOP_KEYS = {"name", "backbone", "checkpoint", "data", "mode", "lora", "decoder", "train", "output", "precision", "init"}


@dataclass
class TrainConfig:
    name: str
    output: Path
    data_root: Path
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    tasks: list[str] | None = None
    limit: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    mode: str = "cache"
    lora: dict = field(default_factory=lambda: dict(DEFAULT_LORA))
    decoder: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_DECODER))
    train: dict = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    precision: str = "auto"
    init: Path | None = None  # start from this adapter's weights (same tasks), e.g. to continue training
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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


def load_config(path: str | os.PathLike | dict, overrides: list[str] = ()) -> TrainConfig:
    """Read and validate a training config (YAML file or dict); ``overrides`` are ``a.b=value`` strings."""
    base = None
    if isinstance(path, dict):
        raw, source = copy.deepcopy(path), "<dict>"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"training config {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p} is not UTF-8 text (byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        source, base = str(p), p.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a training config must be a mapping, got {type(raw).__name__}")
    for o in overrides:
        set_override(raw, o)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    for key in ("name", "data", "output"):
        if key not in raw:
            raise ConfigError(f"{source}: missing required key {key!r}")
    from ..adapters.adapter import check_adapter_name

    name = str(raw["name"]) if _is_int(raw["name"]) else raw["name"]
    try:
        check_adapter_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    output = raw["output"]
    if not isinstance(output, (str, os.PathLike)) or not str(output).strip():
        raise ConfigError(f"{source}: output must be a folder path, got {output!r}")
    for key in ("train", "lora"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {raw[key]!r}")
    for key in ("backbone", "checkpoint", "init"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigError(f"{source}: {key} must be a string, got {raw[key]!r}")
    data = raw["data"]
    if isinstance(data, str):
        data = {"root": data}
    if not isinstance(data, dict) or "root" not in data:
        raise ConfigError(f"{source}: data must be a mapping with at least 'root'")
    unknown = set(data) - {"root", "tasks", "limit", "train", "val"}
    if unknown:
        raise ConfigError(f"{source}: unknown data keys {sorted(unknown)}")
    root = _resolve(data["root"], base)
    if not root.exists():
        raise ConfigError(f"{source}: data root {str(data['root'])!r} does not exist (resolved to {root})")
    mode = raw.get("mode", "cache")
    if mode not in ("cache", "lora"):
        raise ConfigError(f"{source}: mode must be 'cache' or 'lora', got {mode!r}")
    train = dict(DEFAULT_TRAIN)
    t_raw = raw.get("train") or {}
    unknown = set(t_raw) - set(DEFAULT_TRAIN)
    if unknown:
        raise ConfigError(f"{source}: unknown train keys {sorted(unknown)} (known: {sorted(DEFAULT_TRAIN)})")
    train.update(t_raw)
    for k in ("epochs", "batch_size", "batch_size_heads", "click_iters", "val_clicks"):
        if not _is_int(train[k]) or train[k] < 1:
            raise ConfigError(f"{source}: train.{k} must be a positive integer, got {train[k]!r}")
    for k in ("box_click_iters", "num_workers"):
        if not _is_int(train[k]) or train[k] < 0:
            raise ConfigError(f"{source}: train.{k} must be a non-negative integer, got {train[k]!r}")
    for k in ("steps_per_epoch", "val_limit", "click_iters_min"):
        if train[k] is not None and (not _is_int(train[k]) or train[k] < 1):
            raise ConfigError(f"{source}: train.{k} must be a positive integer or null, got {train[k]!r}")
    if train["click_iters_min"] is not None and train["click_iters_min"] > train["click_iters"]:
        raise ConfigError(f"{source}: train.click_iters_min ({train['click_iters_min']}) is above train.click_iters ({train['click_iters']})")
    if not _is_int(train["seed"]):
        raise ConfigError(f"{source}: train.seed must be an integer, got {train['seed']!r}")
    for k, lo, hi in (("lr", 0.0, None), ("weight_decay", 0.0, None), ("box_prob", 0.0, 1.0), ("auto_weight", 0.0, None)):
        v = train[k]
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ConfigError(f"{source}: train.{k} must be a number, got {v!r}")
        try:
            v = float(v)
        except ValueError:
            raise ConfigError(f"{source}: train.{k} must be a number, got {train[k]!r}") from None
        if not math.isfinite(v) or v < lo or (hi is not None and v > hi) or (k == "lr" and v == 0):
            rng = f"in [{lo}, {hi}]" if hi is not None else ("> 0" if k == "lr" else ">= 0")
            raise ConfigError(f"{source}: train.{k} must be a finite number {rng}, got {train[k]!r}")
        train[k] = v
    if not isinstance(train["augment"], bool):
        raise ConfigError(f"{source}: train.augment must be true or false, got {train['augment']!r}")
    if train["mixed_precision"] not in ("auto", "no", "bf16", "fp16"):
        raise ConfigError(f"{source}: train.mixed_precision must be auto, no, bf16 or fp16, got {train['mixed_precision']!r}")
    tw = train["task_weights"] or {}
    if not isinstance(tw, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in tw.values()):
        raise ConfigError(f"{source}: train.task_weights must map task ids to non-negative numbers")
    train["task_weights"] = tw
    if train["sampling"] not in ("sqrt", "uniform", "proportional"):
        raise ConfigError(f"{source}: train.sampling must be sqrt, uniform or proportional")
    decoder = copy.deepcopy(DEFAULT_DECODER)
    if raw.get("decoder") is not None:
        if not isinstance(raw["decoder"], dict):
            raise ConfigError(f"{source}: decoder must be a mapping")
        unknown = set(raw["decoder"]) - {"tune", "lora", "train", "box_prompts"}
        if unknown:
            raise ConfigError(f"{source}: unknown decoder keys {sorted(unknown)} (known: box_prompts, lora, train, tune)")
        decoder.update(raw["decoder"])
        if decoder.get("box_prompts", "base") not in ("base", "tuned"):
            raise ConfigError(f"{source}: decoder.box_prompts must be 'base' or 'tuned', got {decoder['box_prompts']!r}")
        if decoder.get("train") is not None and (not isinstance(decoder["train"], list)
                                                 or not all(isinstance(x, str) and x for x in decoder["train"])):
            raise ConfigError(f"{source}: decoder.train must be a list of parameter-name prefixes")
    lora = dict(DEFAULT_LORA)
    lora.update(raw.get("lora") or {})
    from ..adapters.lora import DECODER_TARGETS, LoraSettings

    for what, settings, targets in (("lora", lora, None), ("decoder.lora", decoder.get("lora"), DECODER_TARGETS)):
        if settings is None:
            continue
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: {what} must be a mapping, got {settings!r}")
        for k in ("rank", "alpha"):
            v = settings.get(k, 1)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 \
                    or (k == "rank" and not _is_int(v)):
                raise ConfigError(f"{source}: {what}.{k} must be a positive {'integer' if k == 'rank' else 'number'}, got {v!r}")
        try:
            LoraSettings.from_dict(settings, *([targets] if targets else []))
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {what}: {exc}") from None
    if raw.get("precision", "auto") not in ("fp32", "bf16", "auto"):
        raise ConfigError(f"{source}: precision must be fp32, bf16 or auto, got {raw['precision']!r}")
    tasks = data.get("tasks")
    if tasks is not None and (not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks) or not tasks):
        raise ConfigError(f"{source}: data.tasks must be a non-empty list of task ids")
    limit = data.get("limit")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(f"{source}: data.limit must be a positive integer or null, got {limit!r}")
    for key in ("train", "val"):
        if not isinstance(data.get(key, key), str) or not data.get(key, key):
            raise ConfigError(f"{source}: data.{key} must be a split folder name, got {data[key]!r}")
    init = _resolve(raw["init"], base) if raw.get("init") else None
    if init is not None and not init.is_dir():
        raise ConfigError(f"{source}: init adapter {raw['init']!r} is not a folder (resolved to {init})")
    return TrainConfig(
        name=name, output=_resolve(output, None), data_root=root, backbone=raw.get("backbone", "litemedsam"),
        checkpoint=raw.get("checkpoint"), tasks=tasks, limit=limit, train_split=data.get("train", "train"),
        val_split=data.get("val", "val"), mode=mode, lora=lora, decoder=decoder, train=train,
        precision=raw.get("precision", "auto"), source=source, raw=raw,
        init=init,
    )
