"""Adapters: a small, named, hot-swappable bundle on one frozen backbone.

An adapter holds, for one organ / task group:

- optional LoRA weights in the image encoder (``peft``; shared encoder, switched by name),
- an optional tuned prompt decoder (a copy of SAM's prompt encoder + mask decoder whose small
  parts are trained and whose transformer carries LoRA) that has learned clicks for this organ,
- one head per task (classification, detection, keypoints, automatic segmentation).

Directory layout (Hugging Face Hub style, no pickles)::

    config.json                  usam config: backbone name + checksum, tasks, classes, heads, LoRA, preprocessing
    adapter_config.json          peft LoraConfig of the encoder LoRA       (only with LoRA)
    adapter_model.safetensors    encoder LoRA weights, peft format          (only with LoRA)
    heads.safetensors            heads + tuned-decoder weights
    metrics.json                 validation / test metrics (optional)
    README.md                    model card
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import AdapterError, ConfigError, OutputError, short_repr
from ..heads.automask import AutoMaskHead
from ..heads.classify import ClassifyHead
from ..heads.refine import check_head_options
from ..heads.spatial import DetectHead, KeypointHead
from ..io import dumps_json
from ..tasks.spec import TaskSpec
from ..version import __version__
from .lora import (
    DECODER_TARGETS,
    LoraSettings,
    add_lora,
    load_lora_state,
    lora_state_dict,
)

CONFIG_NAME = "config.json"
HEADS_NAME = "heads.safetensors"
LORA_NAME = "adapter_model.safetensors"
LORA_CONFIG_NAME = "adapter_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: Decoder parameters trained in full when a decoder is tuned (small: about 0.7M of the decoder's 4M).
DEFAULT_DECODER_TRAIN = (
    "prompt_encoder.point_embeddings",
    "prompt_encoder.not_a_point_embed",
    "mask_decoder.iou_token",
    "mask_decoder.mask_tokens",
    "mask_decoder.output_hypernetworks_mlps",
    "mask_decoder.iou_prediction_head",
)


@dataclass
class AdapterConfig:
    """What an adapter is: enough to rebuild it on a compatible backbone."""

    name: str
    backbone: str
    backbone_checksum: str
    tasks: dict[str, TaskSpec]
    lora: LoraSettings | None = None
    decoder: dict | None = None
    input_size: int = 256
    training: dict = field(default_factory=dict)
    #: per-task head options, e.g. ``{"breast_lesion_det": {"refine_with_decoder": true}}``
    head_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "library_name": "usam",
            "usam_version": __version__,
            "name": self.name,
            "backbone": {"name": self.backbone, "checksum": self.backbone_checksum, "input_size": self.input_size},
            "tasks": {tid: {"kind": t.kind, "num_classes": t.num_classes, "class_names": t.class_names}
                      for tid, t in self.tasks.items()},
            "lora": self.lora.to_dict() if self.lora else None,
            "decoder": self.decoder,
            "preprocessing": {"input_size": self.input_size, "resize": "longest side", "pad": "bottom/right zeros"},
            "training": self.training,
            "head_options": self.head_options,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> "AdapterConfig":
        try:
            _check_config_dict(d)
            tasks = {tid: TaskSpec(task_id=tid, kind=t["kind"], num_classes=int(t["num_classes"]),
                                   class_names=t.get("class_names")) for tid, t in d["tasks"].items()}
            config = cls(
                name=d["name"], backbone=d["backbone"]["name"], backbone_checksum=d["backbone"]["checksum"],
                tasks=tasks, lora=LoraSettings.from_dict(d["lora"]) if d.get("lora") else None,
                decoder=d.get("decoder"), input_size=int(d["backbone"].get("input_size", 256)),
                training=d.get("training") or {},
                head_options=d.get("head_options") or {},
            )
            check_head_options(config.head_options, {tid: t.kind for tid, t in tasks.items()})
            return config
        except ConfigError as exc:
            raise AdapterError(f"{where} is not a usam adapter config ({exc})") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AdapterError(f"{where} is not a usam adapter config ({type(exc).__name__}: {exc})") from exc


#: An adapter's name: it names LoRA modules, Hub commits and folders, so a plain identifier (no '.', no '/').
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
#: Most classes (or points) a task may declare: the heads grow with it (the automatic head runs once per class).
MAX_CLASSES = 256
#: Fewest classes per kind: background + 1 for segmentation, two for classification, one box / point otherwise.
_MIN_CLASSES = {"segmentation": 2, "classification": 2, "detection": 1, "regression": 1}


def check_adapter_name(name, what: str = "name") -> str:
    """Raise :class:`ConfigError` unless ``name`` is a plain adapter name (letters, digits, '_' and '-')."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what} {short_repr(name)} must be a plain adapter name: 1-100 letters, digits, '_' or '-' "
                          "(no '.', '/' or spaces)")
    return name


def _check_config_dict(d) -> None:
    """Types and ranges of an adapter's ``config.json`` (raises :class:`ConfigError`)."""
    from ..tasks.spec import KINDS

    if not isinstance(d, dict):
        raise ConfigError(f"it must be a JSON object, got {type(d).__name__}")
    check_adapter_name(d["name"])  # a missing key: KeyError, reported by from_dict
    bb = d["backbone"]
    if not isinstance(bb, dict) or not isinstance(bb.get("name"), str) or not isinstance(bb.get("checksum"), str):
        raise ConfigError("backbone must be an object with a name and a checksum (strings)")
    size = bb.get("input_size", 256)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
        raise ConfigError(f"backbone.input_size must be a positive integer, got {short_repr(size)}")
    tasks = d["tasks"]
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"tasks must be a non-empty object task_id -> task, got {short_repr(tasks)}")
    for tid, t in tasks.items():
        if not tid or "." in tid or "/" in tid:
            raise ConfigError(f"task id {tid!r} must be non-empty, without '.' or '/'")
        if not isinstance(t, dict):
            raise ConfigError(f"task {tid!r} must be an object with kind and num_classes, got {short_repr(t)}")
        kind, n = t.get("kind"), t.get("num_classes")
        if kind not in KINDS:
            raise ConfigError(f"task {tid!r} has unknown kind {short_repr(kind)} (known: {', '.join(KINDS)})")
        lo = _MIN_CLASSES[kind]
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= MAX_CLASSES:
            raise ConfigError(f"task {tid!r}: num_classes must be an integer in [{lo}, {MAX_CLASSES}] for a {kind} task, "
                              f"got {short_repr(n)}")
        names = t.get("class_names")
        if names is not None and (not isinstance(names, list) or len(names) != n
                                  or not all(isinstance(x, str) for x in names)):
            raise ConfigError(f"task {tid!r}: class_names must be null or a list of {n} strings")
    for key in ("lora", "decoder", "training", "head_options"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise ConfigError(f"{key} must be an object or null, got {type(d[key]).__name__}")
    dec = d.get("decoder")
    if dec:
        train = dec.get("train")
        if train is not None and (not isinstance(train, list) or not all(isinstance(x, str) and x for x in train)):
            raise ConfigError("decoder.train must be a list of parameter-name prefixes")
        if dec.get("lora") is not None and not isinstance(dec["lora"], dict):
            raise ConfigError("decoder.lora must be an object or null")
        if dec.get("box_prompts", "base") not in ("base", "tuned"):
            raise ConfigError(f"decoder.box_prompts must be 'base' or 'tuned', got {short_repr(dec['box_prompts'])}")
    if dec and dec.get("lora"):
        try:
            LoraSettings.from_dict(dec["lora"], DECODER_TARGETS)
        except ConfigError as exc:
            raise ConfigError(f"decoder.lora: {exc}") from None


class TunedDecoder(nn.Module):
    """A trainable copy of a segment-anything backbone's prompt encoder + mask decoder."""

    def __init__(self, backbone, train: tuple[str, ...] = DEFAULT_DECODER_TRAIN, lora: LoraSettings | None = None,
                 box_prompts: str = "base"):
        super().__init__()
        if not hasattr(backbone, "prompt_encoder") or not hasattr(backbone, "mask_decoder") or hasattr(backbone, "model"):
            raise ConfigError(f"decoder tuning needs a segment-anything style backbone (litemedsam, sam_vit_*), not {backbone.name}")
        # the backbone's own prompt encoder / decoder (not registered: not saved, not trained)
        object.__setattr__(self, "_base", (backbone.prompt_encoder, backbone.mask_decoder))
        if box_prompts not in ("base", "tuned"):
            raise ConfigError(f"decoder.box_prompts must be 'base' or 'tuned', got {box_prompts!r}")
        self.box_prompts = box_prompts
        self.prompt_encoder = copy.deepcopy(backbone.prompt_encoder)
        self.mask_decoder = copy.deepcopy(backbone.mask_decoder)
        self.train_prefixes = tuple(train)
        for n, p in self.named_parameters():
            p.requires_grad_(n.startswith(self.train_prefixes))
        self.lora = lora
        if lora is not None:
            add_lora(self.mask_decoder, "decoder", lora)
            for n, p in self.mask_decoder.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask_output=True, sparse_extra=None,
               box_prompts: str | None = None):
        """As :meth:`usam.backbones.Backbone.decode`. With ``box_prompts == "base"`` a box-only prompt (no clicks,
        no previous mask, no learned tokens) goes to the backbone's own decoder: LiteMedSAM was trained on boxes
        and click training costs its box path about a point of Dice, so both are kept. ``box_prompts`` given
        here overrides the adapter's setting for this call (``"base"`` or ``"tuned"``)."""
        from ..backbones.sam_style import sam_decode

        route = box_prompts or self.box_prompts
        if (route == "base" and not self.training and boxes is not None and points is None
                and mask_input is None and sparse_extra is None):
            pe, md = self._base
            return sam_decode(pe, md, embeddings, None, boxes, None, multimask_output, None)
        return sam_decode(self.prompt_encoder, self.mask_decoder, embeddings, points, boxes, mask_input,
                          multimask_output, sparse_extra)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors that differ from the backbone: trained parts + decoder LoRA.

        Selected by name, not ``requires_grad``: a loaded (frozen) adapter must report the same tensors.
        """
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters()
                if n.startswith(self.train_prefixes) or "lora_" in n}


def build_head(task: TaskSpec, input_size: int, embed_dim: int = 256) -> nn.Module:
    if task.kind == "classification":
        return ClassifyHead(task.num_classes, embed_dim)
    if task.kind == "detection":
        return DetectHead(embed_dim, input_size=input_size)
    if task.kind == "regression":
        return KeypointHead(task.num_classes, embed_dim, input_size=input_size)
    if task.kind == "segmentation":
        return AutoMaskHead(task.num_classes, embed_dim)
    raise ConfigError(f"task {task.task_id!r} has unknown kind {task.kind!r}")


class Adapter(nn.Module):
    """Heads (+ optional tuned decoder, + optional encoder LoRA name) for a group of tasks."""

    def __init__(self, config: AdapterConfig, backbone):
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict({tid: build_head(t, config.input_size, backbone.embedding_shape[0])
                                    for tid, t in config.tasks.items()})
        self.decoder = None
        if config.decoder:
            dl = config.decoder.get("lora")
            self.decoder = TunedDecoder(backbone, tuple(config.decoder.get("train", DEFAULT_DECODER_TRAIN)),
                                        LoraSettings.from_dict(dl, DECODER_TARGETS) if dl else None,
                                        box_prompts=config.decoder.get("box_prompts", "base"))
        self.lora_name = config.name if config.lora else None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return self.config.tasks

    def head_state(self) -> dict[str, torch.Tensor]:
        state = {f"heads.{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        if self.decoder is not None:
            state.update({f"decoder.{k}": v for k, v in self.decoder.trainable_state().items()})
        return state

    def load_head_state(self, state: dict[str, torch.Tensor], where: str) -> None:
        expected = self.head_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            what = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unexpected[:3]}" if unexpected else "") + \
                   (f" wrong shape {wrong[:3]}" if wrong else "")
            raise AdapterError(f"{where} does not match the adapter's config.json:{what}. The adapter files are damaged or mixed up.")
        heads = {k[len("heads."):]: v for k, v in state.items() if k.startswith("heads.")}
        self.heads.load_state_dict(heads, strict=True)
        if self.decoder is not None:
            params = dict(self.decoder.named_parameters())
            with torch.no_grad():
                for k, v in state.items():
                    if k.startswith("decoder."):
                        params[k[len("decoder."):]].copy_(v)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike, encoder: nn.Module | None = None,
                        metrics: dict | None = None, card: str | None = None) -> Path:
        """Write the adapter directory atomically (a temp dir renamed into place)."""
        out = Path(directory)
        problem = output_problem(out)
        if problem:
            raise OutputError(f"will not write the adapter to {str(out)!r}: {problem}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / CONFIG_NAME).write_text(dumps_json(self.config.to_dict(), indent=2) + "\n")
            save_file(self.head_state(), str(tmp / HEADS_NAME), metadata={"format": "pt", "usam": __version__})
            if self.lora_name:
                if encoder is None:
                    raise AdapterError("saving an adapter with encoder LoRA needs the encoder")
                save_file(lora_state_dict(encoder, self.lora_name), str(tmp / LORA_NAME), metadata={"format": "pt"})
                cfg = self.config.lora.peft_config().to_dict()
                cfg["base_model_name_or_path"] = self.config.backbone
                (tmp / LORA_CONFIG_NAME).write_text(dumps_json(_jsonable(cfg), indent=2) + "\n")
            if metrics is not None:
                (tmp / "metrics.json").write_text(dumps_json(metrics, indent=2) + "\n")
            elif (out / "metrics.json").exists():
                shutil.copy2(out / "metrics.json", tmp / "metrics.json")
            if card is not None:
                (tmp / "README.md").write_text(card)
            elif (out / "README.md").exists():
                shutil.copy2(out / "README.md", tmp / "README.md")
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; an adapter is meant to be shared
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


#: Every file an adapter directory may hold (see the module docstring).
ADAPTER_DIR_FILES = (CONFIG_NAME, HEADS_NAME, LORA_CONFIG_NAME, LORA_NAME, "metrics.json", "README.md")


def is_usam_adapter_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is an adapter written by usam: nothing but adapter files, and a ``config.json`` with
    ``"library_name": "usam"``. Only such a directory (or an empty one) is ever replaced by a new adapter."""
    d = Path(directory)
    try:
        names = [p.name for p in d.iterdir()]
        if not names or any(n not in ADAPTER_DIR_FILES or not (d / n).is_file() for n in names):
            return False
        cfg = json.loads((d / CONFIG_NAME).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("library_name") == "usam"


def output_problem(directory: str | os.PathLike) -> str | None:
    """Why an adapter must not be written to ``directory`` (``None`` when it may be): it must not exist yet, be
    empty, or be an adapter usam wrote (:func:`is_usam_adapter_dir`, replaced only once the new one is complete);
    nothing else is ever replaced or deleted. The current directory and its parents are refused too."""
    out = Path(directory)
    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except OSError:  # pragma: no cover - the working directory was removed
        here, target = None, out.absolute()
    if here is not None and (target == here or target in here.parents):
        return "it is the current directory (or holds it): give a new folder, e.g. --output runs/NAME"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        return "it is a file, not a folder: give a new folder"
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            return f"it cannot be read ({exc.strerror or exc})"
        if entries and not is_usam_adapter_dir(out):
            foreign = [n for n in entries if n not in ADAPTER_DIR_FILES][:3] or entries[:3]
            return (f"the folder already holds files that are not a usam adapter's ({', '.join(foreign)}"
                    f"{', ...' if len(entries) > 3 else ''}): give a new or empty folder")
        parent = out.parent
    else:
        parent = out.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"{str(parent)!r} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {str(parent)!r} is not writable"
    return None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ---------------------------------------------------------------------- loading
def read_adapter_dir(directory: Path) -> tuple[AdapterConfig, dict, dict | None]:
    """Read and check an adapter directory; refuses pickles and incomplete layouts."""
    if not directory.is_dir():
        raise AdapterError(f"adapter directory {str(directory)!r} does not exist")
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {str(directory)!r} contains pickled files {pickles}: usam loads only safetensors weights "
            "(pickles can run code). Remove them or re-save the adapter with usam."
        )
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise AdapterError(f"{str(directory)!r} is not a usam adapter: it has no {CONFIG_NAME}")
    try:
        raw = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AdapterError(f"{cfg_path} is not UTF-8 text (byte {exc.start}): re-save the adapter with usam") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AdapterError(f"{cfg_path} is not valid JSON: {exc}") from exc
    config = AdapterConfig.from_dict(raw, str(cfg_path))
    heads_path = directory / HEADS_NAME
    if not heads_path.is_file():
        raise AdapterError(f"adapter {str(directory)!r} has no {HEADS_NAME}")
    try:
        heads = load_file(str(heads_path))
    except Exception as exc:
        raise AdapterError(f"{heads_path} is not a readable safetensors file: {exc}") from exc
    lora = None
    if config.lora:
        lp = directory / LORA_NAME
        if not lp.is_file():
            raise AdapterError(f"adapter {str(directory)!r} declares encoder LoRA but has no {LORA_NAME}")
        try:
            lora = load_file(str(lp))
        except Exception as exc:
            raise AdapterError(f"{lp} is not a readable safetensors file: {exc}") from exc
    return config, heads, lora


def check_compatible(config: AdapterConfig, backbone, where: str) -> None:
    if config.backbone != backbone.name or config.backbone_checksum != backbone.checksum:
        raise AdapterError(
            f"adapter {where} was trained on backbone {config.backbone!r} (sha256 {config.backbone_checksum[:12]}...) "
            f"but this model runs {backbone.name!r} (sha256 {backbone.checksum[:12]}...): load it with "
            f"--backbone {config.backbone} and the same weights, or retrain it"
        )


def attach_adapter(model, adapter: Adapter, name: str) -> None:
    """Register ``adapter`` on ``model`` under ``name`` (replacing one of the same name)."""
    from .lora import remove_lora

    if name in model.adapters:
        old = model.adapters[name]
        if old.lora_name:
            remove_lora(model.backbone.image_encoder, old.lora_name)
        del model.adapters[name]
    adapter.to(model.device)
    model.adapters[name] = adapter


def load_adapter(model, ref: str, name: str | None = None, revision: str | None = None) -> str:
    """Load an adapter (local directory or Hub id in the local HF cache) into ``model``; returns its name."""
    from .resolve import resolve_adapter

    directory = resolve_adapter(ref, revision=revision)
    config, heads, lora = read_adapter_dir(directory)
    check_compatible(config, model.backbone, repr(ref))
    if name is not None:
        try:
            check_adapter_name(name, "adapter name")
        except ConfigError as exc:
            raise AdapterError(f"cannot load adapter {ref!r}: {exc}") from exc
    name = name or config.name
    config.name = name
    try:
        adapter = Adapter(config, model.backbone)
    except (ConfigError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"adapter {str(directory)!r} cannot be built on {model.backbone.name}: {exc}") from exc
    adapter.load_head_state(heads, str(directory / HEADS_NAME))
    active = model.active_adapter
    attach_adapter(model, adapter, name)
    if config.lora:
        try:
            add_lora(model.backbone.image_encoder, name, config.lora)
            load_lora_state(model.backbone.image_encoder, name, lora)
        except Exception:  # refused LoRA weights: leave no half-loaded adapter behind
            from .lora import remove_lora

            remove_lora(model.backbone.image_encoder, name)
            del model.adapters[name]
            if active == name:
                model.cache.clear()
                model.set_adapter(None)
            raise
    adapter.eval()
    if config.lora and active == name:
        model.cache.clear()  # same name, new LoRA weights: old embeddings are stale
    model.set_adapter(name)
    for p in model.parameters():
        p.requires_grad_(False)
    return name
