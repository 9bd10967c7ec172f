"""The fast prompt path (issue #16) answers clicks as the PyTorch path does.

Parity: on 20 real breast-lesion test images, each with a first click (multimask), a corrective click pair with the
previous logits as ``mask_input`` (single mask), a click inside a box and a box alone (single and multimask), the compiled prompt decoder's masks have
IoU >= 0.999 with eager PyTorch's and its scores are within 1e-4; for the bare backbone and the shipped breast
adapter's tuned decoder. Caches: the compiled decoder and the dense positional encoding follow weight changes.
Speed is not asserted here: ``benchmarks/bench_click.py`` times the variants side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import breast_lesion_rows

import usam.runtime as rt
from usam import Predictor
from usam.backbones.sam_style import dense_pe
from usam.io import read_image, read_mask
from usam.ops.masks import iou as mask_iou
from usam.runtime.decoder import compiled_decoder

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 20
MIN_IOU = 0.999
MAX_SCORE_DIFF = 1e-4
COMPILED = [pytest.param(n, marks=pytest.mark.skipif(not rt.installed(n), reason=f"{rt.PACKAGES[n]} is not installed"))
            for n in ("openvino", "onnx")]


def _prompts(mask: np.ndarray):
    """(kwargs without mask_input, needs the previous logits) for the three prompts of one image."""
    ys, xs = np.nonzero(mask)
    first = np.array([[xs.mean(), ys.mean()]])
    beside = np.array([[min(xs.max() + 10, mask.shape[1] - 1), ys.mean()]])
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
    return [
        ({"point_coords": first, "point_labels": np.array([1]), "multimask_output": True}, False),
        ({"point_coords": np.concatenate([first, beside]), "point_labels": np.array([1, 0]), "multimask_output": False}, True),
        ({"point_coords": first, "point_labels": np.array([1]), "box": box, "multimask_output": False}, False),
        ({"box": box, "multimask_output": False}, False),  # a box alone: the backbone's decoder (box_prompts: base)
        ({"box": box, "multimask_output": True}, False),
    ]


def _assert_same(fast, ref, what: str) -> None:
    assert fast[0].shape == ref[0].shape and fast[0].dtype == ref[0].dtype == bool, what
    for a, b in zip(fast[0], ref[0]):
        assert mask_iou(a, b) >= MIN_IOU, f"{what}: mask IoU {mask_iou(a, b):.5f} < {MIN_IOU}"
    np.testing.assert_allclose(fast[1], ref[1], atol=MAX_SCORE_DIFF, err_msg=what)


@pytest.fixture(scope="module")
def breast_model(data_root):
    """Eager fp32 LiteMedSAM + the shipped breast adapter (no encoder LoRA: one embedding per image for both
    decoders), its cache large enough for the 20 images."""
    import usam

    return usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32", runtime="torch", cache_size=N_IMAGES)


@pytest.mark.real
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_decoder_clicks_match_pytorch_on_real_images(breast_model, data_root, name):
    model = breast_model
    fast, ref = Predictor(model, runtime=name), Predictor(model, runtime="torch")
    try:
        for image_path, mask_path in breast_lesion_rows(data_root, N_IMAGES):
            image, mask = read_image(image_path), read_mask(mask_path) > 0
            for adapter in (None, "breast"):  # the backbone's decoder, the adapter's tuned one
                model.set_adapter(adapter)
                fast.set_image(image)
                ref.set_image(image)
                previous = None
                for kwargs, with_mask in _prompts(mask):
                    if with_mask:
                        kwargs["mask_input"] = previous
                    r = ref.predict(**kwargs)
                    _assert_same(fast.predict(**kwargs), r, f"{name} {adapter} {image_path.name} {sorted(kwargs)}")
                    previous = r[2][int(np.argmax(r[1]))][None]
    finally:
        model.set_adapter("breast")


def _native_bf16() -> bool:
    from usam.model import resolve_precision

    return resolve_precision("auto", torch.device("cpu")) == "bf16"


@pytest.mark.real
@pytest.mark.skipif(not rt.installed("openvino") or not _native_bf16(), reason="needs OpenVINO and a CPU with native bf16")
def test_bf16_compiled_decoder_keeps_the_click_dice_of_fp32(breast_model, data_root):
    """Where the encoder runs bf16 (precision auto on a native-bf16 CPU) the compiled decoder does too: on 20 real
    images its first-click masks (click decoder of the breast adapter) keep the GT Dice of eager fp32 within 0.005
    and overlap them (mean IoU >= 0.97)."""
    from usam.ops.masks import dice

    model = breast_model
    fast, ref = Predictor(model, runtime="openvino"), Predictor(model, runtime="torch")
    got, want, overlap = [], [], []
    try:
        for image_path, mask_path in breast_lesion_rows(data_root, N_IMAGES):
            image, mask = read_image(image_path), read_mask(mask_path) > 0
            model.set_adapter("breast")
            fast.set_image(image)
            ref.set_image(image)  # both hold the fp32 embedding: only the decoders differ
            kwargs = _prompts(mask)[0][0]
            model.precision = "bf16"  # what the predictor's compiled decoder reads
            try:
                f = fast.predict(**kwargs)
            finally:
                model.precision = "fp32"
            r = ref.predict(**kwargs)
            a, b = f[0][int(np.argmax(f[1]))], r[0][int(np.argmax(r[1]))]
            got.append(dice(a, mask))
            want.append(dice(b, mask))
            overlap.append(mask_iou(a, b))
    finally:
        model.set_adapter("breast")
    assert abs(np.mean(got) - np.mean(want)) <= 0.005, (np.mean(got), np.mean(want))
    assert np.mean(overlap) >= 0.97, np.mean(overlap)


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_decoder_is_rebuilt_when_the_decoder_weights_change(tiny_vit, tmp_path, monkeypatch, name):
    monkeypatch.setenv("USAM_CACHE", str(tmp_path))
    pe, md = tiny_vit.prompt_encoder, tiny_vit.mask_decoder
    first = compiled_decoder(pe, md, tiny_vit.input_size, name)
    assert compiled_decoder(pe, md, tiny_vit.input_size, name) is first  # same weights: the same graph
    assert len(list(tmp_path.glob("runtime/*/decoder.onnx"))) == 1
    weight = md.iou_prediction_head.layers[-1].bias
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1.0)
        second = compiled_decoder(pe, md, tiny_vit.input_size, name)
        assert second is not first
        assert len(list(tmp_path.glob("runtime/*/decoder.onnx"))) == 2  # a new file for the new weights
        emb = torch.randn(1, *tiny_vit.embedding_shape)
        coords, labels = torch.tensor([[[40.0, 30.0], [0.0, 0.0]]]), torch.tensor([[1.0, -1.0]])
        _, iou = second(emb, coords, labels)
        _, ref = tiny_vit.decode(emb, points=(coords[:, :1], labels[:, :1].long()), multimask_output=True)
        torch.testing.assert_close(iou[:, 1:], ref, atol=1e-4, rtol=1e-4)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_dense_pe_is_cached_and_follows_its_buffer(tiny_vit):
    pe = tiny_vit.prompt_encoder
    with torch.inference_mode():
        a = dense_pe(pe)
        assert dense_pe(pe) is a
        torch.testing.assert_close(a, pe.get_dense_pe(), atol=0, rtol=0)
    g = pe.pe_layer.positional_encoding_gaussian_matrix
    saved = g.clone()
    try:
        with torch.no_grad():
            g.mul_(2.0)
            b = dense_pe(pe)
            assert b is not a
            torch.testing.assert_close(b, pe.get_dense_pe(), atol=0, rtol=0)
    finally:
        with torch.no_grad():
            g.copy_(saved)


@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_several_boxes_run_on_the_compiled_decoder_one_set_at_a_time(tiny_vit, monkeypatch):
    """K boxes (e.g. the tracker's click-to-box search): the compiled decoder answers each box in turn (on 1 busy
    LiteMedSAM thread 2.1x faster than one eager batch of 6 boxes, 3.3x for 16), each exactly as it would alone."""
    from usam import UsamModel

    model = UsamModel(tiny_vit)
    predictor = Predictor(model, runtime="openvino")
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    used = []
    real = compiled_decoder
    # each run of a compiled decoder records the mask decoder it was built from (one lookup serves all K sets)
    monkeypatch.setattr("usam.predictor.compiled_decoder",
                        lambda *a, **k: (lambda *x: used.append(a[1]) or real(*a, **k)(*x)))
    predictor.predict(box=np.array([10.0, 10.0, 80.0, 90.0]))
    assert used == [tiny_vit.mask_decoder]  # a box alone: the backbone's own decoder, compiled
    boxes = np.array([[10.0, 10.0, 80.0, 90.0], [0, 0, 50, 50], [30, 20, 150, 110]])
    click = {"point_coords": np.array([[40.0, 50.0]]), "point_labels": np.array([1])}
    for extra in ({}, click):
        used.clear()
        masks, scores, low = predictor.predict(box=boxes, multimask_output=False, **extra)
        assert len(used) == 3 and masks.shape == (3, 1, 120, 160) and scores.shape == (3, 1) and low.shape[:2] == (3, 1)
        for k, box in enumerate(boxes):
            m1, s1, l1 = predictor.predict(box=box, multimask_output=False, **extra)
            np.testing.assert_array_equal(masks[k], m1)
            np.testing.assert_array_equal(scores[k], s1)
            np.testing.assert_array_equal(low[k], l1)
