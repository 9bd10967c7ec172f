"""int8 encoder: OpenVINO with NNCF post-training quantisation, calibrated on real images, checked against eager fp32.

``usam export int8 --data ROOT [--adapter A]`` (:func:`quantize_encoder`) quantises the encoder as the runtime cache
holds it (``encoder.onnx``, the adapter's LoRA merged) with NNCF's transformer recipe (``ModelType.TRANSFORMER``,
mixed preset: symmetric weights, asymmetric activations, SmoothQuant; stem and neck left float, :data:`FLOAT_LAYERS`)
on ``calibration`` training images, then checks
it: mean GT-box Dice of the prompted masks on ``check`` validation images, int8 vs eager fp32 (never the calibration
images). It writes, next to ``encoder.onnx``::

    encoder_int8.xml / .bin   the quantised OpenVINO model
    int8.json                 calibration images (count, SHA-256 of their paths), the check's figures, ``passed``

``precision int8`` runs that model (an error names the command when there is none); ``precision auto`` runs it on
the OpenVINO runtime where the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX) and the check
passed (Dice drop <= :data:`MAX_DICE_DROP`). Layers NNCF leaves in floating point run in bf16 where the CPU computes
bf16 natively, else fp32. Measured on an AMD EPYC with AVX-512 bf16 + VNNI, 2 threads (``benchmarks/
bench_interleaved.py``): eager fp32 1975 ms, OpenVINO bf16 422 ms (4.50x), this int8 337 ms (5.82x); GT-box Dice
0.9446 -> 0.9433 on 20 breast val images (every layer int8: 6.6x, but -0.0082 Dice).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import UsamError

INT8_MODEL = "encoder_int8.xml"
INT8_RECORD = "int8.json"
#: the largest drop of mean GT-box Dice (int8 vs eager fp32) that ``precision auto`` accepts
MAX_DICE_DROP = 0.005
#: layers left in floating point: the stem that reads pixels and the neck that writes the embedding (quantised too,
#: they cost 0.008 GT-box Dice on 20 breast val images; kept float, 0.001 at the same speed)
FLOAT_LAYERS = (".*patch_embed.*", ".*neck.*")
#: CPU flags of int8 dot-product instructions (without them int8 ran no faster than fp32 here)
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_capable() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return any(f in flags for f in INT8_FLAGS)


def read_record(folder: Path) -> dict | None:
    """The ``int8.json`` of a runtime-cache folder, or ``None`` when it has no int8 model."""
    record, model = Path(folder) / INT8_RECORD, Path(folder) / INT8_MODEL
    if not (record.is_file() and model.is_file() and model.with_suffix(".bin").is_file()):
        return None
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def _preprocessed(backbone, images) -> list[np.ndarray]:
    from ..io import read_image

    out = []
    for im in images:
        x, _ = backbone.preprocess(read_image(im) if isinstance(im, (str, Path)) else im)
        out.append(x.cpu().float().numpy())
    return out


def quantize_encoder(model, calibration: list, check, log=print) -> dict:
    """Quantise the encoder of ``model``'s active adapter (LoRA merged) and check it; returns the ``int8.json`` record.

    Args:
      model: a :class:`~usam.model.UsamModel` on the CPU whose backbone the OpenVINO runtime supports.
      calibration: image paths (or ``(H, W, 3)`` arrays) the activation ranges are taken from.
      check: ``check(model) -> {"n", "dice_fp32", "dice_int8", "dice_drop"}`` once the int8 model is saved
        (:func:`usam.export.check_int8` on images disjoint from ``calibration``).
    """
    try:
        import nncf  # optional package, imported only to quantise
        import openvino as ov
    except ImportError as exc:
        raise UsamError(f"int8 needs NNCF and OpenVINO ({exc.name} is missing): pip install 'usam[int8]'") from exc
    from . import encoder_onnx, installed, supports

    if not installed("openvino") or not supports(model.backbone) or model.device.type != "cpu":
        raise UsamError(f"int8 runs on OpenVINO on the CPU, for segment-anything style backbones, not "
                        f"{model.backbone.name!r} on {model.device}")
    if not calibration:
        raise UsamError("int8 calibration needs at least one image")
    path = encoder_onnx(model.backbone, "openvino", log)
    data = _preprocessed(model.backbone, calibration)
    log(f"usam: quantising the {model.backbone.name} encoder to int8 on {len(data)} calibration images")
    quantized = nncf.quantize(ov.Core().read_model(str(path)), nncf.Dataset(data), subset_size=len(data),
                              model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_LAYERS), validate=False))
    (path.parent / INT8_RECORD).unlink(missing_ok=True)  # a half-written model is never taken for a checked one
    ov.save_model(quantized, str(path.parent / INT8_MODEL))
    names = "\n".join(str(c) for c in calibration if isinstance(c, (str, Path)))
    record = {"calibration_images": len(data), "calibration_sha256": hashlib.sha256(names.encode()).hexdigest(),
              "backbone": model.backbone.name, "adapter": model.active_adapter, "check": None,
              "max_dice_drop": MAX_DICE_DROP, "passed": False}
    (path.parent / INT8_RECORD).write_text(json.dumps(record, indent=1))  # unchecked: explicit int8 runs it (the check does)
    record["check"] = check(model)
    record["passed"] = bool(record["check"]["n"] > 0 and record["check"]["dice_drop"] <= MAX_DICE_DROP)
    (path.parent / INT8_RECORD).write_text(json.dumps(record, indent=1))
    log(f"usam: int8 encoder {'passed' if record['passed'] else 'FAILED'} its check: GT-box Dice "
        f"{record['check']['dice_fp32']:.4f} (eager fp32) -> {record['check']['dice_int8']:.4f} (int8) on "
        f"{record['check']['n']} images; {path.parent / INT8_MODEL}")
    return record
