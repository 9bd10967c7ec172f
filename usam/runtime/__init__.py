"""Inference runtimes for the image encoder: eager PyTorch, OpenVINO, ONNX Runtime.

The encoder is the whole cost of a new image (a prompt costs ~15x less), so it is the part worth compiling.
A compiled runtime is built from the encoder as :func:`usam.adapters.lora.merged_copy` leaves it (the active adapter's
LoRA merged into the weights), exported once to ONNX and cached on disk under
``$USAM_CACHE/runtime/<key>/encoder.onnx``; the key hashes the backbone checksum, the merged LoRA weights and the
usam / torch versions, so a changed adapter builds a new one and the old one is never used for it.

- ``torch``: eager PyTorch; ``precision`` bf16 = autocast.
- ``openvino``: OpenVINO on the CPU; ``precision`` bf16 = its bf16 inference hint where the CPU has native bf16
  (AMX / AVX-512 bf16), fp32 elsewhere (emulated bf16 was 20x slower than fp32); ``precision auto`` takes bf16 only
  where it timed faster than fp32 on this CPU (:mod:`usam.runtime.choose`).
- ``onnx``: ONNX Runtime CPU execution provider, fp32 (it has no bf16 kernels on the CPU).
- ``auto``: ``openvino`` where it is installed, the model is on the CPU and the backbone is segment-anything style
  (litemedsam, sam_vit_*); ``torch`` otherwise. Each runtime's accuracy against eager fp32 is checked on real images
  in ``tests/test_runtime.py``; speeds side by side: ``benchmarks/bench_speed.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import importlib.util
import os
import threading
import weakref
from pathlib import Path

import torch

from ..adapters.lora import is_lora_layer, merged_copy
from ..errors import ConfigError, UsamError
from ..version import __version__
from .onnx import OPSET, export_onnx_file
from .session import OnnxSession

RUNTIMES = ("auto", "torch", "openvino", "onnx")
#: pip package (and module name) that provides each compiled runtime.
PACKAGES = {"openvino": "openvino", "onnx": "onnxruntime"}


def runtime_root() -> Path:
    return Path(os.environ.get("USAM_CACHE", Path.home() / ".cache" / "usam")) / "runtime"


def installed(name: str) -> bool:
    """Whether the package of runtime ``name`` can be imported (``torch`` always can)."""
    return name == "torch" or importlib.util.find_spec(PACKAGES[name]) is not None


def supports(backbone) -> bool:
    """Compiled runtimes take segment-anything style encoders (one ``(1, 3, S, S)`` input, one output)."""
    return hasattr(backbone, "image_encoder") and hasattr(backbone, "mask_decoder") and not hasattr(backbone, "model")


def resolve_runtime(name: str | None, backbone) -> str:
    """The runtime that ``name`` means for ``backbone``; a clear error when it cannot run here."""
    name = name or os.environ.get("USAM_RUNTIME") or "auto"
    if name not in RUNTIMES:
        where = " ($USAM_RUNTIME)" if name == os.environ.get("USAM_RUNTIME") else ""
        raise ConfigError(f"unknown runtime {name!r}{where}: choose one of {', '.join(RUNTIMES)}")
    on_cpu = backbone.device.type == "cpu"
    if name == "auto":
        return "openvino" if installed("openvino") and on_cpu and supports(backbone) else "torch"
    if name == "torch":
        return name
    if not installed(name):
        raise UsamError(f"runtime {name!r} needs the {PACKAGES[name]!r} package: pip install {PACKAGES[name]} "
                        f"(or pip install 'usam[{'openvino' if name == 'openvino' else 'onnx'}]'), or use --runtime torch")
    if not supports(backbone):
        raise UsamError(f"runtime {name!r} supports segment-anything style backbones (litemedsam, sam_vit_*), "
                        f"not {backbone.name!r}: use --runtime torch")
    if not on_cpu:
        raise UsamError(f"runtime {name!r} runs on the CPU; the model is on {backbone.device}: use --runtime torch")
    return name


def versions_tag() -> str:
    """What the exported ONNX file depends on (the runtimes read the same file)."""
    return f"usam {__version__} torch {torch.__version__}"


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of every parameter of a (merged) encoder."""
    h = hashlib.sha256()
    for n, p in encoder.state_dict().items():
        t = p.detach().cpu().contiguous()
        h.update(n.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


class CompiledEncoder:
    """One compiled encoder: ``__call__(x (1, 3, S, S) float32) -> (1, C, h, w) float32 tensor``."""

    def __init__(self, name: str, onnx_path: Path, precision: str, threads: int):
        self.name, self.path = name, onnx_path
        self._session = OnnxSession(name, onnx_path, precision, threads)
        self.precision = self._session.precision

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._session.run([x.detach().cpu().float().numpy()])[0]
        return torch.from_numpy(out)


def weights_key(*modules: torch.nn.Module) -> tuple:
    """Cheap identity of the modules' current weights: storage, in-place version, dtype of every tensor, and the LoRA
    adapters each peft layer would merge (active ones, none where disabled). Any training step, ``load_state_dict``,
    ``.to()`` or adapter switch changes it; computing it reads no tensor data."""
    key = []
    for m in modules:
        # parameters + buffers are the state dict's tensors (it holds them detached: same storage and version),
        # read without building it (~10x faster: this runs on every compiled-decoder call)
        key += [(t.data_ptr(), t._version, t.dtype) for t in itertools.chain(m.parameters(), m.buffers())]
        key += [(n, bool(getattr(layer, "disable_adapters", False)), tuple(layer.active_adapters))
                for n, layer in m.named_modules() if is_lora_layer(layer)]
    return tuple(key)


_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()
_FINGERPRINT_LOCK = threading.Lock()


def merged_fingerprint(encoder: torch.nn.Module) -> str:
    """:func:`encoder_fingerprint` of ``encoder`` as :func:`~usam.adapters.lora.merged_copy` leaves it (active LoRA
    merged), remembered per encoder until its :func:`weights_key` changes: copying and hashing the weights is paid
    once per weights (tens of ms for LiteMedSAM, seconds for a SAM ViT-H), not on every runtime build or int8 lookup."""
    key = weights_key(encoder)
    with _FINGERPRINT_LOCK:
        hit = _FINGERPRINTS.get(encoder)
        if hit is not None and hit[0] == key:
            return hit[1]
    fingerprint = encoder_fingerprint(merged_copy(encoder).cpu().float())
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[encoder] = (key, fingerprint)
    return fingerprint


def cache_folder(tag: str, module: torch.nn.Module | None = None, fingerprint: str | None = None) -> Path:
    """``$USAM_CACHE/runtime/<key>``: the key hashes ``tag``, the weights (``module``'s, or their ``fingerprint``
    when given), the versions and the opset."""
    fingerprint = fingerprint if fingerprint is not None else encoder_fingerprint(module)
    key = hashlib.sha256(f"{tag}|{fingerprint}|{versions_tag()}|opset{OPSET}".encode())
    return runtime_root() / key.hexdigest()[:24]


def cached_onnx(tag: str, module: torch.nn.Module | None, filename: str, export, what: str, log=None,
                fingerprint: str | None = None) -> Path:
    """Path of ``module``'s ONNX file in the runtime cache, keyed by ``tag``, its weights (or their ``fingerprint``),
    the versions and the opset; ``export(path)`` writes it the first time (and ``log`` says so, naming ``what``)."""
    folder = cache_folder(tag, module, fingerprint)
    path = folder / filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if log:
            log(f"usam: building {what} (once; cached in {folder})")
        export(path)
    return path


def encoder_onnx(backbone, name: str, log=None) -> Path:
    """The on-disk ONNX file of ``backbone``'s encoder (active LoRA merged), exported the first time."""
    s = int(backbone.input_size)

    def export(path: Path) -> None:
        encoder = merged_copy(backbone.image_encoder).cpu().float().eval()
        try:
            export_onnx_file(encoder, (torch.zeros(1, 3, s, s),), path, ["image"], ["image_embeddings"], None)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means: this runtime cannot serve the model
            raise UsamError(f"could not export the {backbone.name} encoder for runtime {name!r} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): use --runtime torch") from exc

    return cached_onnx(backbone.name, None, "encoder.onnx", export, f"the {name} encoder for {backbone.name}", log,
                       fingerprint=merged_fingerprint(backbone.image_encoder))


def build_compiled_encoder(backbone, name: str, precision: str, log=None, fallback: str | None = None) -> CompiledEncoder:
    """Compile ``backbone``'s encoder (active LoRA merged) for runtime ``name``, reusing the on-disk ONNX file.

    ``precision`` int8 (OpenVINO) runs the quantised model ``usam export int8`` left beside that file; where there is
    none, ``fallback`` (``precision auto``'s other choice) is used instead, or without one a clear error is raised.
    """
    onnx_path = encoder_onnx(backbone, name, log)
    if precision == "int8":
        from .quantize import INT8_MODEL, read_record

        record = read_record(onnx_path.parent) if name == "openvino" else None
        if record is not None and (fallback is None or record.get("passed")):  # auto takes a checked one only
            compiled = CompiledEncoder(name, onnx_path.parent / INT8_MODEL, "bf16", threads=torch.get_num_threads())
            compiled.precision = "int8"
            return compiled
        if fallback is None:
            raise UsamError("precision int8 needs runtime openvino and an int8 encoder for this model: run "
                            "`usam export int8 --data DATA_ROOT` (add --adapter NAME for an adapter with encoder LoRA)")
        if log:
            log(f"usam: no int8 encoder for this adapter's LoRA (usam export int8 --adapter ...): {fallback}")
        precision = fallback
    return CompiledEncoder(name, onnx_path, precision, threads=torch.get_num_threads())


def checked_int8(backbone) -> bool:
    """Whether the runtime cache holds an int8 encoder of ``backbone``'s encoder as it is (active LoRA merged) that
    passed its Dice check: what ``precision auto`` needs, besides a CPU with int8 dot-product instructions."""
    from .quantize import read_record

    record = read_record(cache_folder(backbone.name, fingerprint=merged_fingerprint(backbone.image_encoder)))
    return bool(record and record.get("passed"))
