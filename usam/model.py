"""``UsamModel``: one frozen backbone, any number of named adapters, every task from one encoder pass.

``model.embed(image)`` runs the encoder (with the active adapter's LoRA, if it has one) once per image
and caches the embedding; prompted masks, automatic masks, class probabilities, boxes and keypoints
all read that embedding.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sys
import time

import numpy as np
import torch
from torch import nn

from .adapters.adapter import Adapter, install_adapter
from .adapters.lora import activate_lora, is_lora_layer
from .backbones import DEFAULT_BACKBONE, Backbone, build_backbone
from .embedding import Embedded, EmbeddingCache, image_digest
from .errors import AdapterError, ConfigError, UsamError
from .heads import Prediction, run_heads
from .io import to_rgb_uint8
from .runtime import build_compiled_encoder, resolve_runtime

PRECISIONS = ("fp32", "bf16", "int8", "auto")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``); a
    :class:`~usam.errors.ConfigError` naming it otherwise (torch raises only once a tensor moves, with a traceback)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {str(device)!r} is not a torch device: give cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"device {str(device)!r}: torch sees no CUDA GPU on this machine; give cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device {str(device)!r}: this machine has {n} CUDA GPU(s), cuda:0 .. cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {str(device)!r}: MPS is not available on this machine; give cpu (or auto)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {str(device)!r}: usam runs on cpu, cuda or mps")
    return dev


def resolve_precision(precision: str, device: torch.device, runtime: str | None = None, backbone=None) -> str:
    """``auto`` -> ``int8`` on the OpenVINO runtime where the CPU has int8 dot-product instructions, ``usam export
    int8`` left a checked int8 encoder of ``backbone`` (:mod:`usam.runtime.quantize`) and it timed faster than the
    float choice on this CPU (:func:`usam.runtime.choose.openvino_int8_or`: on AMX, bf16 beat int8), else
    :func:`float_precision`. ``int8`` is the OpenVINO runtime's only."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime is not None and runtime != "openvino":
        raise UsamError(f"precision int8 runs on runtime openvino, not {runtime!r}")
    if precision != "auto":
        return precision
    if runtime == "openvino" and backbone is not None:
        from .runtime import checked_int8
        from .runtime.quantize import int8_capable

        if int8_capable() and checked_int8(backbone):
            from .runtime.choose import openvino_int8_or

            return openvino_int8_or(backbone, float_precision(device, runtime, backbone))
    return float_precision(device, runtime, backbone)


@functools.lru_cache(maxsize=1)
def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 bf16 / AMX in its flags)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def float_precision(device: torch.device, runtime: str | None = None, backbone=None) -> str:
    """What ``precision auto`` runs short of int8: ``bf16`` on CUDA with bf16 and on CPUs with native bf16, ``fp32``
    elsewhere; on the OpenVINO runtime (given ``backbone``) whichever of the two runs its encoder faster on this CPU,
    timed once (:func:`usam.runtime.choose.openvino_float_precision`: native bf16 was slower than fp32 on an Intel
    Xeon without AMX)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if not native_bf16_cpu():
        return "fp32"
    if runtime == "openvino" and backbone is not None:
        from .runtime.choose import openvino_float_precision

        return openvino_float_precision(backbone)
    return "bf16"


class UsamModel(nn.Module):
    """A backbone plus named adapters.

    Args:
      backbone: a built :class:`~usam.backbones.Backbone` (frozen).
      cache_size: number of image embeddings kept (LRU).
      precision: ``fp32``, ``bf16`` (autocast in the encoder) or ``auto``.
      runtime: encoder runtime, ``torch`` (eager), ``openvino``, ``onnx`` or ``auto`` (:mod:`usam.runtime`).

    Attributes:
      encoder_calls: how many images the encoder has run on (tests assert cache hits with it).
      active_adapter: name of the adapter in use, or ``None`` for the bare backbone.
    """

    def __init__(self, backbone: Backbone, cache_size: int = 16, precision: str = "fp32", runtime: str = "torch"):
        super().__init__()
        self.backbone = backbone
        self.adapters = nn.ModuleDict()
        self.active_adapter: str | None = None
        self.cache = EmbeddingCache(cache_size)
        self.encoder_calls = 0
        self.last_encode_seconds = 0.0
        self.requested_precision = precision
        self.runtime = resolve_runtime(runtime, backbone)
        self.precision = resolve_precision(precision, backbone.device, self.runtime, backbone)
        self._compiled: dict[str, object] = {}

    @classmethod
    def from_pretrained(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        checkpoint: str | None = None,
        adapters: list[str] | tuple[str, ...] = (),
        precision: str = "auto",
        device: str | None = None,
        cache_size: int = 16,
        runtime: str | None = "auto",
    ) -> "UsamModel":
        """Build the backbone by name and load adapters (local paths or Hub ids resolved offline).
        ``device`` is checked first (:func:`check_device`)."""
        device = check_device(device) if device else None
        model = cls(build_backbone(backbone, checkpoint=checkpoint), cache_size=cache_size, precision="fp32")
        if device:
            model.to(device)
        model.requested_precision = precision
        model.set_runtime(runtime)
        for ref in adapters:
            model.load_adapter(ref)
        return model

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def train(self, mode: bool = True) -> "UsamModel":
        """Train mode for adapters only: the frozen backbone stays in eval mode (its batch norms keep
        their running statistics, so LoRA training never changes a base tensor)."""
        super().train(mode)
        self.backbone.eval()
        return self

    # ------------------------------------------------------------------ adapters
    def load_adapter(self, ref: str, name: str | None = None, revision: str | None = None) -> str:
        """Load an adapter directory or Hub id (offline) under ``name`` (default: its own name); returns the name."""
        return install_adapter(self, Adapter.from_pretrained(ref, self.backbone, revision=revision, name=name))

    def set_adapter(self, name: str | None) -> None:
        """Switch to adapter ``name`` (``None``: the bare backbone). The encoder is not reloaded."""
        if name is not None and name not in self.adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {sorted(self.adapters) or 'none'})")
        activate_lora(self.backbone.image_encoder, self.adapters[name].lora_name if name else None)
        self.active_adapter = name

    @contextlib.contextmanager
    def using_adapter(self, name: str | None):
        """Adapter ``name`` (``None``: the bare backbone) active for a ``with`` block, the one active before restored
        after it, whatever happens inside."""
        active = self.active_adapter
        if name == active:
            yield self
            return
        self.set_adapter(name)
        try:
            yield self
        finally:
            self.set_adapter(active)

    @property
    def adapter(self):
        """The active :class:`~usam.adapters.adapter.Adapter`, or ``None``."""
        return self.adapters[self.active_adapter] if self.active_adapter else None

    # ------------------------------------------------------------------ encoder
    def set_runtime(self, runtime: str | None) -> str:
        """Use encoder runtime ``runtime`` (see :mod:`usam.runtime`; ``None``: ``$USAM_RUNTIME`` or ``auto``); the
        precision asked for is resolved again for it (``auto`` picks int8 on OpenVINO only)."""
        self.runtime = resolve_runtime(runtime, self.backbone)
        self.precision = resolve_precision(self.requested_precision, self.device, self.runtime, self.backbone)
        return self.runtime

    def encoder_key(self) -> str:
        lora = self.adapter.lora_name if self.adapter is not None and self.adapter.lora_name else "-"
        return f"{self.backbone.name}|{self.backbone.checksum[:16]}|{lora}|{self.encoder_precision()}|{self.runtime}"

    def encoder_precision(self) -> str:
        """What the encoder computes in now: :attr:`precision`, except that an ``auto`` int8 falls back to bf16 / fp32
        for an adapter whose LoRA has no int8 encoder (and a compiled runtime may run fp32 for bf16, see
        :class:`~usam.runtime.session.OnnxSession`)."""
        if self.precision == "int8" and self.runtime != "torch":
            return self._compiled_encoder().precision
        return self.precision

    def decoder_precision(self) -> str:
        """What a compiled prompt decoder computes in: ``bf16`` where the encoder runs bf16, or int8 with bf16 as
        this CPU's faster float precision (:func:`float_precision`), else ``fp32``."""
        if self.precision == "int8":
            return float_precision(self.device, self.runtime, self.backbone)
        return "bf16" if self.precision == "bf16" else "fp32"

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed images -> ``(B, C, h, w)`` embeddings on the configured runtime."""
        if self.runtime == "torch" or torch.is_grad_enabled():
            with self.autocast():
                return self.backbone.encode(x.to(self.device))
        compiled = self._compiled_encoder()
        return torch.cat([compiled(x[i : i + 1]) for i in range(x.shape[0])]).to(self.device)

    def _compiled_encoder(self):
        """The compiled encoder for the current LoRA state (built once per LoRA weights, cached on disk)."""
        h = hashlib.sha1(f"{self.runtime}|{self.precision}".encode())
        for n, m in self.backbone.image_encoder.named_modules():
            if is_lora_layer(m):  # which LoRA is on, and its weights (they change in training)
                h.update(f"{n}|{m.disable_adapters}|{sorted(m.active_adapters)}".encode())
                for k, p in m.named_parameters():
                    if "lora_" in k:
                        h.update(p.detach().cpu().float().numpy().tobytes())
        key = h.hexdigest()
        if key not in self._compiled:
            fallback = None
            if self.precision == "int8" and self.requested_precision == "auto":
                fallback = float_precision(self.device, self.runtime, self.backbone)  # auto without int8
            self._compiled[key] = build_compiled_encoder(self.backbone, self.runtime, self.precision,
                                                         log=lambda m: print(m, file=sys.stderr), fallback=fallback)
        return self._compiled[key]

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> Embedded:
        """Encode an image (any dtype / channels :func:`~usam.io.to_rgb_uint8` accepts), cached by content.

        Returns an :class:`Embedded` with ``embedding (1, C, h, w)`` float32 and the image geometry.
        """
        image = to_rgb_uint8(image)
        key = image_digest(image) + "|" + self.encoder_key()
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        x, geometry = self.backbone.preprocess(image)
        t0 = time.perf_counter()
        emb = self._encode(x)
        self.last_encode_seconds = time.perf_counter() - t0
        self.encoder_calls += 1
        item = Embedded(emb.float(), geometry, key)
        self.cache.put(item)
        return item

    def embed_bare(self, image: np.ndarray) -> Embedded:
        """:meth:`embed` by the bare encoder (without the active adapter's encoder LoRA, which stays active after),
        cached by content as :meth:`embed`'s: what ``decoder.box_prompts: bare`` answers a box alone on."""
        with self.using_adapter(None):
            return self.embed(image)

    @torch.no_grad()
    def embed_batch(self, images: list[np.ndarray]) -> list[Embedded]:
        """:meth:`embed` for several images in one encoder call (the ones not cached yet; repeats encoded once).

        Returns one :class:`Embedded` per image, in order, each ``embedding (1, C, h, w)`` float32; all are
        cached (the cache should hold ``len(images)`` more items for them to stay there).
        """
        images = [to_rgb_uint8(im) for im in images]
        keys = [image_digest(im) + "|" + self.encoder_key() for im in images]
        found = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = {k: im for k, im in zip(keys, images) if found[k] is None}
        if todo:
            xs, geos = zip(*(self.backbone.preprocess(im) for im in todo.values()))
            t0 = time.perf_counter()
            emb = self._encode(torch.cat(xs))
            self.last_encode_seconds = time.perf_counter() - t0
            self.encoder_calls += len(todo)
            for i, (key, g) in enumerate(zip(todo, geos)):
                found[key] = Embedded(emb[i : i + 1].float().clone(), g, key)
                self.cache.put(found[key])
        return [found[k] for k in keys]

    # ------------------------------------------------------------------ prompt decoder
    def prompt_decoder(self) -> nn.Module:
        """The module whose ``decode`` answers prompts: the active adapter's tuned decoder, else the backbone."""
        adapter = self.adapter
        if adapter is not None and adapter.decoder is not None:
            return adapter.decoder
        return self.backbone

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask_output=True, sparse_extra=None):
        """See :meth:`usam.backbones.Backbone.decode`; uses the active adapter's decoder when it has one."""
        return self.prompt_decoder().decode(
            embeddings, points=points, boxes=boxes, mask_input=mask_input,
            multimask_output=multimask_output, sparse_extra=sparse_extra,
        )

    # ------------------------------------------------------------------ all heads
    @torch.no_grad()
    def predict(self, image: np.ndarray, adapter: str | None = None) -> Prediction:
        """Every head of ``adapter`` (default: the active one) on one image, from one encoder pass."""
        if adapter is not None and adapter != self.active_adapter:
            self.set_adapter(adapter)
        if self.adapter is None:
            raise AdapterError("model.predict needs an adapter with heads: load one with model.load_adapter(...)")
        embedded = self.embed(image)
        return run_heads(self, embedded)
