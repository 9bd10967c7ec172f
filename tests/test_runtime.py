"""Encoder runtimes (usam.runtime): accuracy against eager fp32, on-disk cache, LoRA invalidation, clear errors.

Accuracy guard (issue #16): each runtime x precision on 20 real breast-lesion test images, ground-truth boxes,
``multimask_output=False``: mean Dice within 0.005 of eager fp32; the adapter heads' outputs within stated
tolerances. Speeds are not asserted here: ``benchmarks/bench_speed.py`` prints them side by side.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import breast_lesion_rows

import usam.runtime as rt
from usam.errors import UsamError
from usam.ops.masks import dice, mask_box

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 20
MAX_DICE_CHANGE = 0.005
COMPILED = [(name, precision) for name in ("openvino", "onnx") for precision in ("fp32", "bf16")
            if not (name == "onnx" and precision == "bf16")]


def test_unknown_runtime_is_refused(tiny_vit, monkeypatch, tmp_path, capsys):
    from usam.apps.cli import main
    from usam.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        rt.resolve_runtime("tensorrt", tiny_vit)
    # from the environment: a configuration error (exit 6) naming the variable, not a crash (exit 1)
    monkeypatch.setenv("USAM_RUNTIME", "bogus")
    with pytest.raises(ConfigError, match=r"unknown runtime 'bogus' \(\$USAM_RUNTIME\)"):
        rt.resolve_runtime(None, tiny_vit)
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.full((40, 48), 90, np.uint8))
    assert main(["segment", str(image), "--box", "5", "5", "30", "30", "--out", str(tmp_path / "mask.png")]) == 6
    err = capsys.readouterr().err
    assert "$USAM_RUNTIME" in err and "Traceback" not in err


def test_a_missing_runtime_package_is_a_clear_error(tiny_vit, monkeypatch):
    monkeypatch.setattr(rt, "installed", lambda name: name == "torch")
    with pytest.raises(UsamError, match=r"needs the 'openvino' package: pip install openvino"):
        rt.resolve_runtime("openvino", tiny_vit)
    with pytest.raises(UsamError, match=r"needs the 'onnxruntime' package"):
        rt.resolve_runtime("onnx", tiny_vit)
    assert rt.resolve_runtime("auto", tiny_vit) == "torch"  # auto falls back to eager PyTorch


def test_transformers_backbones_stay_on_torch(hf_backbone):
    assert rt.resolve_runtime("auto", hf_backbone) == "torch"
    with pytest.raises(UsamError, match="segment-anything style backbones"):
        rt.resolve_runtime("openvino", hf_backbone)


def test_auto_picks_openvino_when_installed(tiny_vit, monkeypatch):
    monkeypatch.delenv("USAM_RUNTIME", raising=False)
    assert rt.resolve_runtime("auto", tiny_vit) == ("openvino" if rt.installed("openvino") else "torch")
    monkeypatch.setenv("USAM_RUNTIME", "torch")
    assert rt.resolve_runtime(None, tiny_vit) == "torch"


@pytest.mark.parametrize("name", ["openvino", "onnx"])
def test_compiled_encoder_is_cached_on_disk_and_rebuilt_when_the_lora_changes(tiny_vit, tmp_path, monkeypatch, name):
    if not rt.installed(name):
        pytest.skip(f"{rt.PACKAGES[name]} is not installed")
    from usam import UsamModel
    from usam.adapters.lora import LoraSettings, activate_lora, add_lora, lora_parameters

    monkeypatch.setenv("USAM_CACHE", str(tmp_path))
    backbone = __import__("copy").deepcopy(tiny_vit)
    add_lora(backbone.image_encoder, "a", LoraSettings(rank=2))
    model = UsamModel(backbone, runtime="torch")
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        for p in lora_parameters(backbone.image_encoder, "a"):
            p.normal_(0, 0.2)
    activate_lora(backbone.image_encoder, "a")
    ref = model.embed(image).embedding
    model.set_runtime(name)
    got = model.embed(image).embedding
    assert model.encoder_calls == 2, "the runtime is part of the embedding cache key"
    # fp32 kernels of two libraries: agreement relative to the embedding's scale (|max| ~4.5 here; measured max
    # difference 3e-5 alone, up to 2.8e-4 with other thread settings in the same process)
    tol = 1e-4 * float(ref.abs().max())
    assert torch.allclose(got, ref, atol=tol), float((got - ref).abs().max())
    files = sorted(tmp_path.rglob("encoder.onnx"))
    assert len(files) == 1
    # change the LoRA weights: a new compiled encoder (a second file), matching eager PyTorch again
    with torch.no_grad():
        for n, p in backbone.image_encoder.named_parameters():
            if "lora_B" in n:
                p.mul_(-1.0)
    model.cache.clear()
    got2 = model.embed(image).embedding
    model.set_runtime("torch")
    model.cache.clear()
    ref2 = model.embed(image).embedding
    assert float((ref2 - ref).abs().max()) > 100 * tol, "the LoRA change must move the embedding far beyond tol"
    assert torch.allclose(got2, ref2, atol=tol), float((got2 - ref2).abs().max())
    assert len(sorted(tmp_path.rglob("encoder.onnx"))) == 2
    # a second model on the same weights reuses the file (no new export)
    m2 = UsamModel(backbone, runtime=name)
    m2.embed(image)
    assert len(sorted(tmp_path.rglob("encoder.onnx"))) == 2


def test_merged_fingerprint_is_hashed_once_per_weights(tiny_vit, monkeypatch):
    """precision auto's int8 lookup and the runtime build both key the cache by the merged encoder's hash: it is
    computed once per weights, and again after any change of the weights or of the LoRA merged."""
    from usam.adapters.lora import LoraSettings, activate_lora, add_lora, lora_parameters, merged_copy

    encoder = __import__("copy").deepcopy(tiny_vit.image_encoder)
    add_lora(encoder, "a", LoraSettings(rank=2))
    with torch.no_grad():
        for p in lora_parameters(encoder, "a"):
            p.normal_(0, 0.2)
    activate_lora(encoder, "a")
    calls = []
    real = rt.encoder_fingerprint
    monkeypatch.setattr(rt, "encoder_fingerprint", lambda m: calls.append(1) or real(m))
    first = rt.merged_fingerprint(encoder)
    assert first == real(merged_copy(encoder).cpu().float())
    assert rt.merged_fingerprint(encoder) == first and len(calls) == 1, "the second lookup must not hash again"
    with torch.no_grad():  # a training step on the LoRA weights (in place)
        next(p for n, p in encoder.named_parameters() if "lora_B" in n).mul_(-1.0)
    second = rt.merged_fingerprint(encoder)
    assert second != first and second == real(merged_copy(encoder).cpu().float()) and len(calls) == 2
    activate_lora(encoder, None)  # LoRA off: the bare weights' hash
    assert rt.merged_fingerprint(encoder) == real(merged_copy(encoder, []).cpu().float()) != second
    activate_lora(encoder, "a")
    assert rt.merged_fingerprint(encoder) == second


@pytest.fixture(scope="module")
def cases(data_root):
    from usam.io import read_image, read_mask

    out = []
    for image_path, mask_path in breast_lesion_rows(data_root, N_IMAGES):
        gt = read_mask(mask_path) > 0
        out.append((read_image(image_path), gt, mask_box(gt)))
    return out


def _box_dices(model, cases) -> list[float]:
    from usam import Predictor

    predictor = Predictor(model)
    out = []
    for image, gt, box in cases:
        predictor.set_image(image)
        masks, _, _ = predictor.predict(box=box, multimask_output=False)
        out.append(dice(masks[0], gt))
    return out


@pytest.fixture(scope="module")
def reference(litemedsam_model, cases):
    model = litemedsam_model
    saved = (model.precision, model.runtime, model.active_adapter)
    model.precision, model.runtime = "fp32", "torch"
    model.set_adapter(None)
    try:
        return _box_dices(model, cases)
    finally:
        model.precision, model.runtime = saved[:2]
        model.set_adapter(saved[2])


@pytest.mark.real
@pytest.mark.parametrize("name,precision", COMPILED)
def test_runtime_keeps_the_box_dice_of_eager_fp32(litemedsam_model, cases, reference, name, precision):
    if not rt.installed(name):
        pytest.skip(f"{rt.PACKAGES[name]} is not installed")
    model = litemedsam_model
    saved = (model.precision, model.runtime, model.active_adapter)
    model.set_adapter(None)
    model.precision = precision
    model.set_runtime(name)
    try:
        got = _box_dices(model, cases)
    finally:
        model.precision, model.runtime = saved[:2]
        model.set_adapter(saved[2])
    assert len(got) == N_IMAGES
    change = abs(float(np.mean(got)) - float(np.mean(reference)))
    assert change <= MAX_DICE_CHANGE, (name, precision, np.mean(got), np.mean(reference))
    assert np.mean(got) > 0.9


@pytest.mark.real
@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_adapter_heads_agree_between_runtimes(data_root):
    """Every head of the shipped breast adapter: probabilities within 0.02, box corners within 3 px,
    automatic mask Dice >= 0.97 between eager fp32 and OpenVINO fp32."""
    import usam
    from usam.io import read_image

    images = [read_image(p) for p, _ in breast_lesion_rows(data_root, 3)]
    outs = {}
    for name in ("torch", "openvino"):
        model = usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32", runtime=name)
        outs[name] = [model.predict(im, adapter="breast") for im in images]
    for a, b in zip(outs["torch"], outs["openvino"]):
        for tid in a.probabilities:
            np.testing.assert_allclose(a.probabilities[tid], b.probabilities[tid], atol=0.02)
        for tid in a.boxes:
            np.testing.assert_allclose(a.boxes[tid], b.boxes[tid], atol=3.0)
        for tid in a.masks:
            assert dice(a.masks[tid] > 0, b.masks[tid] > 0) >= 0.97
