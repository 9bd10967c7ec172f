"""Adapters: a small, named, hot-swappable bundle on one frozen backbone.

An adapter holds, for one organ / task group:

- optional LoRA weights in the image encoder (``peft``; shared encoder, switched by name),
- an optional tuned prompt decoder (a copy of SAM's prompt encoder + mask decoder whose small
  parts are trained and whose transformer carries LoRA) that has learned clicks for this organ, or that serves
  the heads while a separate click decoder (``decoder.clicks: separate``) answers the clicks,
- one head per task (classification, detection, keypoints, automatic segmentation).

As in ``peft``: :meth:`Adapter.save_pretrained` writes its directory (:mod:`usam.adapters.layout`) and
:meth:`Adapter.from_pretrained` reads one (a local directory or a Hub id in the local cache) onto a backbone;
:func:`install_adapter` puts it into a model under its name (injecting its encoder LoRA).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..backbones.base import sha256_state_dict
from ..backbones.sam_style import sam_decode
from ..errors import AdapterError, ConfigError, OutputError, short_repr
from ..heads.locate import attach_locators
from ..io import dumps_json
from ..tasks import TaskSpec, kind_of
from ..version import __version__
from .config import (DEFAULT_DECODER_TRAIN, INFERENCE_CHOICES, USER_BOX_ROUTES, AdapterConfig, DecoderSettings,
                     check_adapter_name)
from .layout import CARD_NAME, HEADS_NAME, LORA_CONFIG_NAME, LORA_NAME, METRICS_NAME, output_problem
from .lora import LoraSettings, add_lora, load_lora_state, lora_state_dict, remove_lora
from .resolve import resolve_adapter
from .settings import Invalid
from .validate import validate_adapter_dir, write_config


class PromptDecoder(nn.Module):
    """A whole, trainable copy of a backbone's prompt encoder + mask decoder (the click decoder of ``clicks: separate``)."""

    def __init__(self, backbone):
        super().__init__()
        self.prompt_encoder = copy.deepcopy(backbone.prompt_encoder)
        self.mask_decoder = copy.deepcopy(backbone.mask_decoder)
        self.requires_grad_(True)


class TunedDecoder(nn.Module):
    """A trainable copy of a segment-anything backbone's prompt encoder + mask decoder, and optionally a second,
    whole copy that answers clicks (``clicks="separate"``; attribute ``clicks``, ``None`` otherwise).

    Which weights answer a prompt (:meth:`answering`): a box alone goes to the backbone's own decoder
    (``box_prompts="base"``, out of training); a prompt with clicks goes to the click decoder when there is one (in
    training a box alone too: the box passes of simulated interactions train it);
    ``box_prompts="clicks"`` sends a box alone there as well (``"bare"``: to the backbone's own, on the bare
    encoder's embedding, which :class:`~usam.predictor.Predictor` gives it; ``"boxes"``: to the box decoder, a third
    whole copy fine-tuned on boxes alone, ``boxes="separate"``, attribute ``boxes``, on that same embedding);
    everything else (the heads' learned tokens, ``box_prompts="tuned"``, clicks without a click decoder) to this one.
    """

    def __init__(self, backbone, train: tuple[str, ...] = DEFAULT_DECODER_TRAIN, lora: LoraSettings | None = None,
                 box_prompts: str = "base", clicks: str = "shared", click_window: int | None = None,
                 click_zoom: tuple[int, float] | None = None, first_click: str = "direct", quality: str = "predicted",
                 quality_fit: tuple[float, float, float] | None = None, click_merge: int | None = None,
                 boxes: str = "base"):
        super().__init__()
        if not hasattr(backbone, "prompt_encoder") or not hasattr(backbone, "mask_decoder") or hasattr(backbone, "model"):
            raise ConfigError(f"decoder tuning needs a segment-anything style backbone (litemedsam, sam_vit_*), not {backbone.name}")
        # the backbone's own prompt encoder / decoder (not registered: not saved, not trained)
        object.__setattr__(self, "_base", (backbone.prompt_encoder, backbone.mask_decoder))
        self.box_prompts = box_prompts
        self.click_window = click_window  # read by Predictor.predict (see DecoderSettings)
        self.click_zoom = click_zoom  # (after, expand), read by Predictor.predict (see DecoderSettings)
        self.click_merge = click_merge  # after N clicks, read by Predictor.predict (see DecoderSettings)
        self.first_click = first_click  # read by Predictor.predict (see DecoderSettings)
        self.quality = quality  # read by Predictor.quality (see DecoderSettings)
        self.quality_fit = quality_fit  # (a, b, c) of quality "fitted"
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
        self.clicks = PromptDecoder(backbone) if clicks == "separate" else None
        # trained apart, after the rest (usam.train.boxes), never by usam train
        self.boxes = PromptDecoder(backbone).requires_grad_(False) if boxes == "separate" else None

    def answering(self, points=None, boxes=None, mask_input=None, sparse_extra=None,
                  box_prompts: str | None = None) -> tuple[nn.Module, nn.Module]:
        """The ``(prompt_encoder, mask_decoder)`` that answer this prompt (see the class docstring)."""
        route = box_prompts or self.box_prompts
        alone = not self.training and boxes is not None and points is None and mask_input is None and sparse_extra is None
        if alone and route == "boxes" and self.boxes is not None:
            return self.boxes.prompt_encoder, self.boxes.mask_decoder
        if alone and route in ("base", "bare"):
            return self._base
        # training: the box that clicks follow; box_prompts "clicks": a user's box alone too
        interactive = points is not None or (boxes is not None and (self.training or route == "clicks"))
        if self.clicks is not None and interactive and sparse_extra is None:
            return self.clicks.prompt_encoder, self.clicks.mask_decoder
        return self.prompt_encoder, self.mask_decoder

    @property
    def heads_box_route(self) -> str:
        """The route of the heads' own boxes (refinement, localisation) when they name none: ``box_prompts``,
        except a route for a user's box only (:data:`~usam.adapters.config.USER_BOX_ROUTES`: the click decoder, the
        bare encoder's embedding), for which the backbone's decoder (``base``) on the embedding given."""
        return "base" if self.box_prompts in USER_BOX_ROUTES else self.box_prompts

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask_output=True, sparse_extra=None,
               box_prompts: str | None = None):
        """As :meth:`usam.backbones.Backbone.decode`, on the weights :meth:`answering` names. With
        ``box_prompts == "base"`` a box-only prompt (no clicks, no previous mask, no learned tokens) goes to the
        backbone's own decoder: LiteMedSAM was trained on boxes and click training costs its box path about a point
        of Dice, so both are kept. ``box_prompts`` given here overrides the adapter's setting for this call
        (``"base"``, ``"tuned"``, ``"clicks"``, ``"bare"`` or ``"boxes"``)."""
        pe, md = self.answering(points, boxes, mask_input, sparse_extra, box_prompts)
        return sam_decode(pe, md, embeddings, points, boxes, mask_input, multimask_output, sparse_extra)

    @contextlib.contextmanager
    def using(self, **settings):
        """Inference settings (``box_prompts``, ``click_window``, ``click_zoom``, ``click_merge``, ``first_click``,
        ``quality``, ``quality_fit``), checked as ``config.json``'s are, changed for a ``with`` block and restored
        after it, whatever happens inside: ``with decoder.using(first_click="direct"):``."""
        unknown = set(settings) - set(INFERENCE_CHOICES)
        if unknown:
            raise ConfigError(f"not a decoder inference setting: {', '.join(sorted(unknown))}")
        checks = {f.name: f.metadata.get("check") for f in fields(DecoderSettings)}
        for k, v in settings.items():  # the checks config.json's values pass
            try:
                settings[k] = checks[k](v) if checks.get(k) else v
            except Invalid as exc:
                raise ConfigError(f"decoder.{k} {exc}, got {short_repr(v)}") from None
        own = {"clicks": self.clicks, "boxes": self.boxes}  # routes to a decoder the adapter may lack
        if settings.get("box_prompts") in own and own[settings["box_prompts"]] is None:
            raise ConfigError(f"decoder.box_prompts {settings['box_prompts']!r}: this adapter has no "
                              f"{settings['box_prompts'][:-1]} decoder of its own")
        saved = {k: getattr(self, k) for k in settings}
        try:
            for k, v in settings.items():
                setattr(self, k, v)
            yield self
        finally:
            for k, v in saved.items():
                setattr(self, k, v)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors that differ from the backbone: trained parts + decoder LoRA + the whole click and box decoders.

        Selected by name, not ``requires_grad``: a loaded (frozen) adapter must report the same tensors.
        """
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters()
                if n.startswith(self.train_prefixes) or "lora_" in n or n.startswith((CLICKS_PREFIX, BOXES_PREFIX))}


#: parameter names of the click decoder inside :class:`TunedDecoder`
CLICKS_PREFIX = "clicks."
#: parameter names of the box decoder inside :class:`TunedDecoder`
BOXES_PREFIX = "boxes."


class Adapter(nn.Module):
    """Heads (+ optional tuned decoder, + optional encoder LoRA name) for a group of tasks.

    Attributes:
      encoder_lora: the peft tensors of the encoder LoRA read by :meth:`from_pretrained`, injected into the
        backbone by :func:`install_adapter` (``None`` otherwise).
    """

    def __init__(self, config: AdapterConfig, backbone):
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict({tid: kind_of(t).build_head(t, config.input_size, backbone.embedding_shape[0])
                                    for tid, t in config.tasks.items()})
        attach_locators(self.heads, config.head_options)  # localisation heads named by head_options (locate)
        self.decoder = None
        if config.decoder:
            dec = DecoderSettings.from_adapter(config.decoder)
            self.decoder = TunedDecoder(backbone, tuple(dec.train or DEFAULT_DECODER_TRAIN), dec.lora,
                                        box_prompts=dec.box_prompts, clicks=dec.clicks, click_window=dec.click_window,
                                        click_zoom=dec.click_zoom, first_click=dec.first_click, quality=dec.quality,
                                        quality_fit=dec.quality_fit, click_merge=dec.click_merge, boxes=dec.boxes)
        self.lora_name = config.name if config.lora else None
        self.encoder_lora: dict[str, torch.Tensor] | None = None

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
        """Copy ``state`` (``heads.safetensors``) into the heads and tuned decoder; refuses a set of names or shapes
        that does not fit this adapter's modules (the file checks are :func:`validate_adapter_dir`'s)."""
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

    def weights_sha256(self, encoder: nn.Module | None = None) -> str:
        """SHA-256 of every weight the adapter adds: heads, tuned decoder and (from ``encoder``) its encoder LoRA."""
        state = dict(self.head_state())
        if self.lora_name:
            state.update({f"lora.{k}": v for k, v in lora_state_dict(encoder, self.lora_name).items()})
        return sha256_state_dict(state)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, ref: str | os.PathLike, backbone, revision: str | None = None,
                        name: str | None = None) -> "Adapter":
        """Read an adapter directory, or a Hub id from the local HF cache (offline; :func:`resolve_adapter`), onto
        ``backbone``: files checked by :func:`validate_adapter_dir`, backbone name / checksum / input size by
        :func:`check_compatible`. ``name`` renames it. Frozen, in eval mode; attach it with :func:`install_adapter`."""
        directory = resolve_adapter(str(ref), revision=revision)
        check = validate_adapter_dir(directory)
        config = check.config
        check_compatible(config, backbone, repr(str(ref)))
        if name is not None:
            try:
                config.name = check_adapter_name(name, "adapter name")
            except ConfigError as exc:
                raise AdapterError(f"cannot load adapter {str(ref)!r}: {exc}") from exc
        try:
            adapter = cls(config, backbone)
        except (ConfigError, ValueError, RuntimeError) as exc:
            raise AdapterError(f"adapter {str(directory)!r} cannot be built on {backbone.name}: {exc}") from exc
        adapter.load_head_state(check.heads, str(directory / HEADS_NAME))
        adapter.encoder_lora = check.lora
        adapter.requires_grad_(False)
        return adapter.eval()

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike, encoder: nn.Module | None = None,
                        metrics: dict | None = None, card: str | None = None) -> Path:
        """Write the adapter directory atomically (a temp dir renamed into place); ``metrics`` / ``card``: ``None``
        keeps those of an adapter already there. ``encoder``: the backbone's encoder (its LoRA is saved with the
        adapter), needed with encoder LoRA, ignored without: a caller may always pass it."""
        out = Path(directory)
        problem = output_problem(out)
        if problem:
            raise OutputError(f"will not write the adapter to {str(out)!r}: {problem}")
        if self.lora_name and encoder is None:
            raise AdapterError("saving an adapter with encoder LoRA needs the encoder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            self._write_files(tmp, encoder)
            _write_or_keep(tmp, out, METRICS_NAME, None if metrics is None else dumps_json(metrics, indent=2) + "\n")
            _write_or_keep(tmp, out, CARD_NAME, card)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; an adapter is meant to be shared
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            _replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    def _write_files(self, folder: Path, encoder: nn.Module | None) -> None:
        """``config.json``, ``heads.safetensors`` and, with encoder LoRA, the two peft files. The click and box
        decoders (4M parameters each for LiteMedSAM, the bulk of the file) are stored in fp16 and read back into fp32."""
        write_config(folder, self.config)
        half = (f"decoder.{CLICKS_PREFIX}", f"decoder.{BOXES_PREFIX}")
        state = {k: v.half() if k.startswith(half) and v.is_floating_point() else v for k, v in self.head_state().items()}
        save_file(state, str(folder / HEADS_NAME), metadata={"format": "pt", "usam": __version__})
        if self.lora_name:
            save_file(lora_state_dict(encoder, self.lora_name), str(folder / LORA_NAME), metadata={"format": "pt"})
            cfg = self.config.lora.peft_config().to_dict()
            cfg["base_model_name_or_path"] = self.config.backbone
            (folder / LORA_CONFIG_NAME).write_text(dumps_json(_jsonable(cfg), indent=2) + "\n")


def _write_or_keep(tmp: Path, out: Path, name: str, text: str | None) -> None:
    """Write ``text`` as ``tmp/name``; ``None``: copy the file of the adapter in ``out``, if there is one."""
    if text is not None:
        (tmp / name).write_text(text)
    elif (out / name).exists():
        shutil.copy2(out / name, tmp / name)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename the complete ``tmp`` onto ``out``; an old ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def check_compatible(config: AdapterConfig, backbone, where: str) -> None:
    """The adapter was trained on this backbone: same name, weights (sha256) and input size."""
    if config.backbone != backbone.name or config.backbone_checksum != backbone.checksum:
        raise AdapterError(
            f"adapter {where} was trained on backbone {config.backbone!r} (sha256 {config.backbone_checksum[:12]}...) "
            f"but this model runs {backbone.name!r} (sha256 {backbone.checksum[:12]}...): load it with "
            f"--backbone {config.backbone} and the same weights, or retrain it"
        )
    if int(config.input_size) != int(backbone.input_size):
        raise AdapterError(f"adapter {where} was trained on {config.input_size} px inputs (its config.json "
                           f"preprocessing) but {backbone.name} takes {backbone.input_size} px: retrain it")


def attach_adapter(model, adapter: Adapter, name: str) -> None:
    """Register ``adapter`` on ``model`` under ``name`` (replacing one of the same name and its encoder LoRA)."""
    if name in model.adapters:
        old = model.adapters[name]
        if old.lora_name:
            remove_lora(model.backbone.image_encoder, old.lora_name)
        del model.adapters[name]
    adapter.to(model.device)
    model.adapters[name] = adapter


def install_adapter(model, adapter: Adapter) -> str:
    """Attach an adapter from :meth:`Adapter.from_pretrained` to ``model`` under its name, inject its encoder LoRA
    (``adapter.encoder_lora``) and make it active; returns the name. Refused LoRA weights leave nothing behind."""
    name, active = adapter.name, model.active_adapter
    attach_adapter(model, adapter, name)
    if adapter.lora_name:
        encoder = model.backbone.image_encoder
        try:
            add_lora(encoder, name, adapter.config.lora)
            load_lora_state(encoder, name, adapter.encoder_lora or {})
        except Exception:  # refused LoRA weights: leave no half-loaded adapter behind
            remove_lora(encoder, name)
            del model.adapters[name]
            if active == name:
                model.cache.clear()
                model.set_adapter(None)
            raise
        if active == name:
            model.cache.clear()  # same name, new LoRA weights: old embeddings are stale
    model.set_adapter(name)
    for p in model.parameters():
        p.requires_grad_(False)
    return name
