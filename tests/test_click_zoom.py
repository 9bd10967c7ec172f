"""Corrective clicks answered on a zoomed view (``decoder.click_zoom``, RITM's Zoom-In).

The window is checked on constructed masks; the predictor's zoomed answer against the same answer computed by hand
(the window encoded as an image of its own, pasted back) on a real image with the shipped breast adapter; and the
gain on a few real val lesions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from usam.adapters.config import DecoderSettings
from usam.errors import ConfigError
from usam.ops.clicks import innermost_point, next_click, zoom_window

ROOT = Path(__file__).resolve().parents[1]


def _square(hw, x0, y0, side):
    m = np.zeros(hw, bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_zoom_window_holds_the_mask_and_clicks_at_the_asked_scale():
    mask = _square((400, 600), 200, 150, 60)
    x0, y0, x1, y1 = zoom_window(mask, np.array([[300.0, 180.0]]), expand=2.0)
    # holds the mask and the positive click (which widens the extent to 101 px)
    assert x0 <= 200 and x1 >= 260 and y0 <= 150 and y1 >= 210 and x0 <= 300 < x1
    grid = 600 / 32
    assert 2.0 * 101 <= x1 - x0 < 2.0 * 101 + grid + 1 and x1 - x0 == y1 - y0  # square, snapped up to the grid
    assert 0 <= x0 and 0 <= y0 and x1 <= 600 and y1 <= 400


def test_zoom_window_stays_put_for_a_small_change_and_inside_the_image():
    mask = _square((400, 600), 200, 150, 60)
    grown = mask.copy()
    grown[150:152, 200:262] = True  # a corrective click added a sliver
    assert zoom_window(mask, np.zeros((0, 2)), 2.0) == zoom_window(grown, np.zeros((0, 2)), 2.0)
    corner = _square((400, 600), 0, 0, 40)  # the view is shifted into the image, not cut
    x0, y0, x1, y1 = zoom_window(corner, np.zeros((0, 2)), 2.5)
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 >= 100


def test_zoom_window_is_none_with_nothing_to_zoom_on():
    assert zoom_window(np.zeros((100, 100), bool), np.zeros((0, 2)), 2.0) is None
    big = _square((100, 120), 10, 10, 80)
    assert zoom_window(big, np.zeros((0, 2)), 2.0) is None  # the view would span the whole image
    assert zoom_window(np.zeros((100, 100), bool), np.array([[50.0, 50.0]]), 2.0) is not None  # a click alone


def test_click_zoom_setting_is_checked_and_saved():
    assert "click_zoom" not in DecoderSettings.from_adapter({}).to_adapter()
    block = {"click_zoom": {"after": 2, "expand": 2.0}}
    assert DecoderSettings.from_adapter(block).click_zoom == (2, 2.0)
    assert DecoderSettings.from_adapter(block).to_adapter()["click_zoom"] == {"after": 2, "expand": 2.0}
    for bad in (2, {"after": 0, "expand": 2.0}, {"after": 2, "expand": 1.0}, {"after": 2, "expand": float("nan")},
                {"after": 2}, {"after": 2, "expand": 2, "extra": 1}, {"after": True, "expand": 2.0}):
        with pytest.raises(ConfigError, match="click_zoom"):
            DecoderSettings.from_adapter({"click_zoom": bad})


@pytest.fixture(scope="module")
def breast(data_root):
    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image, read_mask

    model = usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32", runtime="torch")
    rows = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"]
    return model, [(read_image(r.image_path), read_mask(r.mask_path) == 1) for r in rows[:6]]


def _three_clicks(predictor, truth):
    """The standard protocol's first three clicks and the low-res logits the third is answered with."""
    pts, labels = [innermost_point(truth)], [1]
    _, scores, low = predictor.predict(point_coords=np.array(pts), point_labels=np.array(labels))
    prev = low[np.argmax(scores)][None]
    for _ in range(2):
        mask, _, low = predictor.predict(point_coords=np.array(pts), point_labels=np.array(labels), mask_input=prev,
                                         multimask_output=False)
        xy, lab = next_click(mask[0], truth)
        pts.append(xy)
        labels.append(lab)
        prev = low
    return np.array(pts), np.array(labels), prev


@pytest.mark.real
def test_zoomed_answer_is_the_windows_own_answer_pasted_into_the_previous_mask(breast):
    from usam.predictor import Predictor

    model, cases = breast
    image, truth = cases[0]
    predictor = Predictor(model)
    embedded = predictor.set_image(image)
    decoder = model.adapter.decoder
    shipped = decoder.click_zoom
    with decoder.using(click_zoom=None):  # the whole image answers
        pts, labels, prev = _three_clicks(predictor, truth)
        plain = predictor.predict(point_coords=pts, point_labels=labels, mask_input=prev, multimask_output=False,
                                  return_logits=True)
        unzoomed_early = predictor.predict(point_coords=pts[:2], point_labels=labels[:2], mask_input=prev,
                                           multimask_output=False, return_logits=True)
    calls = model.encoder_calls
    with decoder.using(click_zoom=(2, 2.0)):
        zoomed = predictor.predict(point_coords=pts, point_labels=labels, mask_input=prev, multimask_output=False,
                                   return_logits=True)
        assert model.encoder_calls == calls + 1  # the view, encoded once ...
        again = predictor.predict(point_coords=pts, point_labels=labels, mask_input=prev, multimask_output=False,
                                  return_logits=True)
        assert model.encoder_calls == calls + 1  # ... and cached
        early = predictor.predict(point_coords=pts[:2], point_labels=labels[:2], mask_input=prev,
                                  multimask_output=False, return_logits=True)
    np.testing.assert_array_equal(zoomed[0], again[0])
    assert decoder.click_zoom == shipped  # restored
    np.testing.assert_array_equal(early[0], unzoomed_early[0])  # two clicks: not zoomed yet

    # by hand: the window around the previous mask and the positive clicks, as an image of its own
    import torch

    geo = embedded.geometry
    previous = geo.masks_to_original(torch.as_tensor(prev)[None])[0, 0].numpy()
    x0, y0, x1, y1 = zoom_window(previous > 0, pts[labels == 1], 2.0)
    view = Predictor(model)
    sub = view.set_image(image[y0:y1, x0:x1]).geometry
    inside = (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
    cut = sub.mask_to_input(torch.as_tensor(previous[y0:y1, x0:x1]), 256)[None].numpy()
    own, score, _ = view.predict(point_coords=pts[inside] - (x0, y0), point_labels=labels[inside], mask_input=cut,
                                 multimask_output=False, return_logits=True)
    np.testing.assert_allclose(zoomed[0][0, y0:y1, x0:x1], own[0], atol=1e-4)
    np.testing.assert_allclose(zoomed[1], score, atol=1e-5)
    outside = np.ones(truth.shape, bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_allclose(zoomed[0][0][outside], previous[outside], atol=1e-4)  # the rest stays
    assert not np.allclose(zoomed[0], plain[0])

    # an embedding given without its image: nothing to cut a view from, answered on the whole image
    predictor.set_embedding(embedded)
    with decoder.using(click_zoom=(2, 2.0)):
        given = predictor.predict(point_coords=pts, point_labels=labels, mask_input=prev, multimask_output=False,
                                  return_logits=True)
    np.testing.assert_allclose(given[0], plain[0], atol=1e-5)


@pytest.mark.real
def test_zoom_lifts_the_click_curve_on_real_lesions(breast):
    """Six val lesions, ten clicks of the standard protocol: the breast adapter's zoom (chosen on all 63 val lesions,
    see its card) raises the mean Dice and never loses more than a point at any click."""
    from usam.challenge.interactive import click_session
    from usam.predictor import Predictor

    model, cases = breast
    predictor = Predictor(model)
    curves, shipped = {}, model.adapter.decoder.click_zoom
    assert shipped is not None
    for zoom in (None, shipped):
        with model.adapter.decoder.using(click_zoom=zoom):
            runs = []
            for image, truth in cases:
                predictor.set_image(image)
                runs.append(click_session(predictor, truth, 10)["dice"])
        curves[zoom] = np.mean(runs, axis=0)
    plain, zoomed, after = curves[None], curves[shipped], shipped[0]
    np.testing.assert_allclose(zoomed[:after], plain[:after])  # the first clicks are not zoomed
    assert zoomed[after:].mean() > plain[after:].mean() + 0.005, (plain.round(3), zoomed.round(3))
    assert (zoomed >= plain - 0.01).all(), (plain.round(3), zoomed.round(3))
