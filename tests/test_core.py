"""Core: image conversion, geometry, the embedding cache, the Predictor API and real LiteMedSAM accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ODD_HW, breast_lesion_rows, capture_prompts
from segment_anything.utils.transforms import ResizeLongestSide

from usam import Predictor, UsamModel
from usam.geometry import Geometry, preprocess_shape
from usam.io import read_image, read_mask, to_rgb_uint8
from usam.ops.masks import dice, mask_box


# ---------------------------------------------------------------------------------------------- to_rgb_uint8
def _grey(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_to_rgb_uint8_converts_every_supported_layout_and_dtype_to_the_same_pixels():
    g = _grey()
    rgb = np.repeat(g[..., None], 3, axis=2)
    rgba = np.dstack([rgb, np.full_like(g, 7)])
    variants = {
        "grey uint8": g,
        "grey (H, W, 1)": g[..., None],
        "rgb uint8": rgb,
        "rgba uint8 (alpha dropped)": rgba,
        "grey uint16 (x 257)": g.astype(np.uint16) * 257,
        "rgba uint16": rgba.astype(np.uint16) * 257,
        "grey float [0, 1]": g / 255.0,
        "rgb float32 [0, 1]": (rgb / 255.0).astype(np.float32),
        "grey float [0, 255]": g.astype(np.float64),
        "rgba float [0, 1]": rgba / 255.0,
    }
    for what, arr in variants.items():
        out = to_rgb_uint8(arr)
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3), what
        assert out.flags["C_CONTIGUOUS"], what
        np.testing.assert_array_equal(out, rgb, err_msg=what)


def test_to_rgb_uint8_scaling_rules():
    # uint16 whose values all fit 8 bits is taken as 8-bit
    small = np.array([[0, 10], [200, 255]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    np.testing.assert_array_equal(to_rgb_uint8(small)[..., 0], small.astype(np.uint8))
    # full-range uint16 is scaled by 65535
    full = np.array([[0, 65535], [32896, 257]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    np.testing.assert_array_equal(to_rgb_uint8(full)[:8:8, ::8, 0], [[0, 255]])
    assert to_rgb_uint8(full)[8, 0, 0] == 128 and to_rgb_uint8(full)[8, 8, 0] == 1
    # float outside [0, 255] is min-max scaled
    f = np.linspace(-3.0, 1000.0, 64).reshape(8, 8)
    out = to_rgb_uint8(f)[..., 0]
    assert out.min() == 0 and out.max() == 255 and np.all(np.diff(out.ravel().astype(int)) >= 0)
    # bool -> 0 / 255
    b = np.zeros((8, 8), bool)
    b[2:4] = True
    assert set(np.unique(to_rgb_uint8(b))) == {0, 255}
    # RGB keeps colour channels apart
    c = np.zeros((8, 8, 3), np.uint8)
    c[..., 0], c[..., 1], c[..., 2] = 10, 20, 30
    np.testing.assert_array_equal(to_rgb_uint8(c)[0, 0], [10, 20, 30])


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("hw", [ODD_HW, (500, 300), (471, 562), (256, 256), (37, 1000)])
@pytest.mark.parametrize("size", [256, 1024])
def test_geometry_matches_segment_anything_and_round_trips(hw, size):
    h, w = hw
    geo = Geometry.for_image(h, w, size)
    nh, nw = geo.resized_hw
    assert (nh, nw) == ResizeLongestSide.get_preprocess_shape(h, w, size) == preprocess_shape(h, w, size)
    assert max(nh, nw) == size
    rng = np.random.default_rng(h * w + size)
    pts = rng.uniform(0, 1, (7, 2)) * [w - 1, h - 1]
    pin = geo.points_to_input(pts)
    np.testing.assert_allclose(pin[:, 0], pts[:, 0] * nw / w)
    np.testing.assert_allclose(pin[:, 1], pts[:, 1] * nh / h)
    np.testing.assert_allclose(pin, ResizeLongestSide(size).apply_coords(pts, (h, w)))
    np.testing.assert_allclose(geo.points_to_original(pin), pts)
    assert np.shares_memory(pin, pts) is False  # inputs are not modified in place

    boxes = np.array([[1.0, 2.0, w - 3.0, h - 4.0], [w / 3, h / 5, w / 2, h / 2]])
    bin_ = geo.boxes_to_input(boxes)
    np.testing.assert_allclose(bin_, ResizeLongestSide(size).apply_boxes(boxes, (h, w)))
    np.testing.assert_allclose(bin_[:, [0, 2]], boxes[:, [0, 2]] * nw / w)
    np.testing.assert_allclose(bin_[:, [1, 3]], boxes[:, [1, 3]] * nh / h)
    np.testing.assert_allclose(geo.boxes_to_original(bin_), boxes)

    t = torch.as_tensor(pts, dtype=torch.float32)
    tin = geo.points_to_input(t)
    assert isinstance(tin, torch.Tensor)
    np.testing.assert_allclose(tin.numpy(), pin, rtol=1e-5)
    torch.testing.assert_close(geo.points_to_original(tin), t, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t.numpy(), pts, rtol=1e-6)  # not modified in place


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("size", [256, 1024])
def test_masks_to_original_puts_a_low_res_mask_where_it_belongs(size):
    h, w = ODD_HW
    geo = Geometry.for_image(h, w, size)
    rect = np.array([100.0, 60.0, 300.0, 180.0])  # x0 y0 x1 y1 in original pixels, exclusive ends
    low = geo.boxes_to_input(rect) * 256 / size  # same rectangle on the 256 x 256 low-res grid
    x0, y0, x1, y1 = np.round(low).astype(int)
    logits = torch.full((1, 1, 256, 256), -10.0)
    logits[..., y0:y1, x0:x1] = 10.0
    up = geo.masks_to_original(logits)
    assert up.shape == (1, 1, h, w)
    got = up[0, 0].numpy() > 0
    # the rectangle lands within one low-res pixel (500 / 256 ~ 2 original pixels) of where it was drawn
    np.testing.assert_allclose(_extent(got), rect, atol=2.5)
    expected = np.zeros((h, w), bool)
    expected[60:180, 100:300] = True
    assert dice(got, expected) > 0.98

    # anything in the padding (below the resized image) is cropped away, not squeezed into the image
    pad = torch.full((1, 1, 256, 256), -10.0)
    pad_row = int(np.ceil(geo.resized_hw[0] * 256 / size)) + 2
    pad[..., pad_row:, :] = 10.0
    assert not (geo.masks_to_original(pad) > 0).any()

    # mask_to_input is the inverse map (original mask -> low-res grid -> original)
    back = geo.masks_to_original(geo.mask_to_input(expected.astype(np.float32), 256)[None, None]) > 0.5
    assert dice(back[0, 0].numpy(), expected) > 0.98
    low_in = geo.mask_to_input(expected.astype(np.float32), 256).numpy() > 0.5
    np.testing.assert_allclose(_extent(low_in), low, atol=1.0)


@pytest.mark.parametrize("hw", [ODD_HW, (40, 30), (749, 709)])
def test_masks_to_original_cpu_resize_is_torch_bilinear(hw):
    """The OpenCV resize the prompt path uses gives ``F.interpolate``'s bilinear values (up and down, B x C planes);
    a tensor that needs its gradient stays on torch's."""
    geo = Geometry.for_image(*hw, 256)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    crop = x[..., : geo.resized_hw[0], : geo.resized_hw[1]]
    want = torch.nn.functional.interpolate(crop, hw, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        got = geo.masks_to_original(x)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
    assert geo.masks_to_original(x[:1, :1].clone().requires_grad_()).grad_fn is not None


def test_mask_box_is_the_extent_of_the_nonzero_pixels():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.random(tuple(rng.integers(1, 40, 2))) < rng.random() * 0.05
        m = m.astype(rng.choice([bool, np.uint8, np.float32]))
        box = mask_box(m)
        if not m.any():
            assert box is None
        else:
            np.testing.assert_array_equal(box, _extent(m))


# ---------------------------------------------------------------------------------------------- embedding cache (real)
@pytest.mark.real
def test_second_prompt_and_same_pixels_do_not_rerun_the_encoder(litemedsam_model, real_case):
    _, image, gt, box = real_case
    model = litemedsam_model
    model.cache.clear()
    predictor = Predictor(model)
    calls = model.encoder_calls
    predictor.set_image(image)
    assert model.encoder_calls == calls + 1

    m1, s1, _ = predictor.predict(box=box, multimask_output=False)
    cy, cx = np.argwhere(gt).mean(axis=0)
    m2, s2, _ = predictor.predict(point_coords=np.array([[cx, cy]]), point_labels=np.array([1]))
    m3, _, _ = predictor.predict(box=box, multimask_output=False)
    assert model.encoder_calls == calls + 1, "a prompt on the same image ran the encoder again"
    np.testing.assert_array_equal(m1, m3)
    assert m1.shape == (1, *gt.shape) and m2.shape == (3, *gt.shape)

    # set_image again with equal pixels (a copy, or the same pixels as another dtype / layout): cache hit
    predictor.set_image(image.copy())
    predictor.set_image(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]))  # RGBA
    predictor.set_image(image.astype(np.uint16) * 257)
    predictor.set_image(image / 255.0)
    assert model.encoder_calls == calls + 1
    np.testing.assert_array_equal(predictor.predict(box=box, multimask_output=False)[0], m1)

    # a different image is a new encoder call, and going back to the first is a hit again
    predictor.set_image(np.ascontiguousarray(image[:, ::-1]))
    assert model.encoder_calls == calls + 2
    predictor.set_image(image)
    assert model.encoder_calls == calls + 2


# ---------------------------------------------------------------------------------------------- real accuracy
@pytest.mark.real
def test_litemedsam_box_prompt_dice_on_20_breast_lesion_images(litemedsam_model, data_root):
    """Ground-truth boxes (mask extent, x1/y1 exclusive) on the first 20 rows of test/breast_lesion.csv."""
    rows = breast_lesion_rows(data_root, 20)
    assert len(rows) == 20
    predictor = Predictor(litemedsam_model)
    scores = []
    for image_path, mask_path in rows:
        image = read_image(image_path)
        gt = read_mask(mask_path) > 0
        predictor.set_image(image)
        masks, iou, logits = predictor.predict(box=mask_box(gt), multimask_output=False)
        assert masks.shape == (1, *gt.shape) and masks.dtype == bool and iou.shape == (1,) and logits.shape == (1, 256, 256)
        scores.append(dice(masks[0], gt))
    mean = float(np.mean(scores))
    assert mean >= 0.88, f"mean Dice {mean:.3f} < 0.88 (per image: {np.round(scores, 3).tolist()})"


@pytest.mark.real
def test_litemedsam_segments_a_synthetic_blob_on_a_non_square_image(litemedsam_model):
    """End-to-end mapping: box in, mask out, both at the right place on a 300 x 500 image."""
    h, w = ODD_HW
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:h, :w]
    blob = ((xx - 360) / 70.0) ** 2 + ((yy - 110) / 45.0) ** 2 <= 1.0
    image = np.clip(rng.normal(40, 8, (h, w)) + 150 * blob, 0, 255).astype(np.uint8)
    predictor = Predictor(litemedsam_model)
    predictor.set_image(image)
    masks, _, _ = predictor.predict(box=mask_box(blob), multimask_output=False)
    assert masks.shape == (1, h, w)
    assert dice(masks[0], blob) > 0.9
    # the same box given as K = 2 boxes, one of them shifted off the blob: the first answer is unchanged
    boxes = np.stack([mask_box(blob), mask_box(blob) - [250, 0, 250, 0]])
    mk, _, _ = predictor.predict(box=boxes, multimask_output=False)
    assert mk.shape == (2, 1, h, w)
    assert dice(mk[0, 0], masks[0]) > 0.999
    assert dice(mk[1, 0], blob) < 0.1


# ---------------------------------------------------------------------------------------------- Predictor API
@pytest.fixture(scope="module")
def tiny_predictor(tiny_vit):
    return Predictor(UsamModel(tiny_vit))


def _odd_image(seed=3):
    h, w = ODD_HW
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w), dtype=np.uint8)
    img[80:200, 150:350] += 150
    return img


def test_predictor_accepts_grey_rgb_rgba_uint8_uint16_float(tiny_predictor):
    g = _odd_image()
    rgb = np.repeat(g[..., None], 3, axis=2)
    rgba = np.dstack([rgb, np.full_like(g, 128)])
    box = np.array([150.0, 80.0, 350.0, 200.0])
    p = tiny_predictor
    calls = p.model.encoder_calls
    ref = None
    for arr in (g, rgb, rgba):
        for conv in (lambda a: a, lambda a: a.astype(np.uint16) * 257, lambda a: a.astype(np.float32) / 255.0):
            p.set_image(conv(arr))
            assert p.original_size == ODD_HW
            masks, scores, logits = p.predict(box=box)
            assert masks.shape == (3, *ODD_HW) and masks.dtype == bool
            if ref is None:
                ref = logits
            np.testing.assert_array_equal(logits, ref)  # identical pixels -> identical embedding and answer
    assert p.model.encoder_calls <= calls + 1
    # a true-colour RGB image is encoded and answered too
    colour = np.dstack([g, 255 - g, g // 2])
    p.set_image(colour)
    masks, _, _ = p.predict(box=box)
    assert masks.shape == (3, *ODD_HW)
    assert not torch.equal(p.get_image_embedding(), p.model.embed(g).embedding)


def test_predictor_multimask_several_boxes_and_logits(tiny_predictor):
    p = tiny_predictor
    p.set_image(_odd_image())
    h, w = ODD_HW
    m3, s3, l3 = p.predict(box=np.array([10.0, 20.0, 200.0, 150.0]), multimask_output=True)
    assert m3.shape == (3, h, w) and s3.shape == (3,) and l3.shape == (3, 256, 256)
    m1, s1, l1 = p.predict(box=np.array([10.0, 20.0, 200.0, 150.0]), multimask_output=False)
    assert m1.shape == (1, h, w) and s1.shape == (1,) and l1.shape == (1, 256, 256)

    boxes = np.array([[10.0, 20.0, 200.0, 150.0], [250.0, 100.0, 490.0, 290.0], [0.0, 0.0, 500.0, 300.0]])
    mk, sk, lk = p.predict(box=boxes, multimask_output=True)
    assert mk.shape == (3, 3, h, w) and sk.shape == (3, 3) and lk.shape == (3, 3, 256, 256)
    mk1, sk1, lk1 = p.predict(box=boxes, multimask_output=False)
    assert mk1.shape == (3, 1, h, w) and sk1.shape == (3, 1)
    # a batch of boxes answers each box as if it were alone
    for i, b in enumerate(boxes):
        _, s, lg = p.predict(box=b, multimask_output=False)
        np.testing.assert_allclose(lk1[i], lg, atol=1e-4)
        np.testing.assert_allclose(sk1[i], s, atol=1e-5)
    # points go with every box of a batch
    pts, labs = np.array([[100.0, 100.0], [400.0, 50.0]]), np.array([1, 0])
    mb, _, _ = p.predict(point_coords=pts, point_labels=labs, box=boxes[:2], multimask_output=False)
    assert mb.shape == (2, 1, h, w)

    # return_logits: floats at the original size, thresholded at 0 they are the boolean masks
    lg, sc, low = p.predict(box=boxes[0], multimask_output=True, return_logits=True)
    assert lg.shape == (3, h, w) and np.issubdtype(lg.dtype, np.floating)
    assert (lg < 0).any() and not set(np.unique(lg)) <= {0.0, 1.0}
    np.testing.assert_array_equal(lg > 0, m3)
    np.testing.assert_array_equal(low, l3)


def test_predictor_mask_input_is_fed_back_to_the_decoder(tiny_predictor):
    p = tiny_predictor
    p.set_image(_odd_image())
    point, label = np.array([[250.0, 140.0]]), np.array([1])
    masks, scores, logits = p.predict(point_coords=point, point_labels=label)
    prev = logits[int(np.argmax(scores))][None]  # (1, 256, 256)
    with capture_prompts(p.model.backbone) as calls:
        m2, s2, l2 = p.predict(point_coords=point, point_labels=label, mask_input=prev, multimask_output=False)
    assert m2.shape == (1, *ODD_HW)
    assert calls[-1]["masks"].shape == (1, 1, 256, 256)
    np.testing.assert_allclose(calls[-1]["masks"][0], prev, rtol=1e-6)
    _, _, l_without = p.predict(point_coords=point, point_labels=label, multimask_output=False)
    assert not np.allclose(l2, l_without), "mask_input did not change the decoder's answer"
    # (K, 1, 256, 256) with K boxes, and (1, 256, 256) broadcast over K boxes
    boxes = np.array([[10.0, 20.0, 200.0, 150.0], [250.0, 100.0, 490.0, 290.0]])
    mk, _, _ = p.predict(box=boxes, mask_input=np.stack([prev, prev]), multimask_output=False)
    mb, _, _ = p.predict(box=boxes, mask_input=prev, multimask_output=False)
    np.testing.assert_array_equal(mk, mb)
    assert mk.shape == (2, 1, *ODD_HW)


def test_predictor_coordinates_reach_the_decoder_in_model_input_pixels(tiny_predictor):
    p = tiny_predictor
    p.set_image(_odd_image())
    geo = p._embedded.geometry
    (h, w), (nh, nw) = geo.original_hw, geo.resized_hw
    pts = np.array([[123.0, 45.0], [480.0, 290.0]])
    box = np.array([[20.0, 30.0, 410.0, 260.0]])
    with capture_prompts(p.model.backbone) as calls:
        p.predict(point_coords=pts, point_labels=np.array([1, 0]), box=box)
    c = calls[-1]
    np.testing.assert_allclose(c["points"][0, :, 0], pts[:, 0] * nw / w, rtol=1e-6)
    np.testing.assert_allclose(c["points"][0, :, 1], pts[:, 1] * nh / h, rtol=1e-6)
    np.testing.assert_array_equal(c["labels"][0], [1, 0])
    np.testing.assert_allclose(c["boxes"][0], box[0] * [nw / w, nh / h, nw / w, nh / h], rtol=1e-6)
