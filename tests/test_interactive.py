"""The interactive benchmark: click simulation, Dice-vs-clicks curve, NoC and IoU calibration.

Checked on constructed cases whose answers are known, and on the shipped breast adapter on real images.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from usam.challenge.interactive import click_session, evaluate_clicks, noc, spearman
from usam.ops import clicks as sim


def test_noc_counts_clicks_to_the_threshold_and_caps_unreached():
    assert noc([0.5, 0.86, 0.95], 0.85) == 2
    assert noc([0.5, 0.86, 0.95], 0.90) == 3
    assert noc([0.91], 0.90) == 1
    assert noc([0.1, 0.2, 0.3], 0.85, cap=20) == 20
    assert noc([0.1] * 25 + [0.99], 0.85, cap=20) == 20  # beyond the budget does not count


def test_spearman_is_rank_correlation():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("seed", range(20))
def test_simulated_clicks_land_inside_the_image_on_a_wrong_pixel(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 80, 2)
    truth = np.zeros((h, w), bool)
    pred = np.zeros((h, w), bool)
    for m in (truth, pred):
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, h - 5), rng.integers(0, w - 5)
            m[y0:y0 + rng.integers(3, h // 2 + 4), x0:x0 + rng.integers(3, w // 2 + 4)] = True
    nxt = sim.next_click(pred, truth)
    if (pred == truth).all():
        assert nxt is None
        return
    (x, y), label = nxt
    assert 0 <= x < w and 0 <= y < h
    xi, yi = int(x), int(y)
    assert pred[yi, xi] != truth[yi, xi], "clicked on a pixel that is already right"
    assert label == int(truth[yi, xi]), "positive clicks go to misses, negative ones to false positives"
    first = sim.innermost_point(truth)
    assert truth[int(first[1]), int(first[0])]
    assert sim.next_click(truth.copy(), truth) is None


class DiskPredictor:
    """A stand-in predictor with a known answer: the mask is the union of disks of radius ``r`` around positive
    clicks, minus disks around negative clicks; its score is a fixed ``predicted`` IoU."""

    def __init__(self, hw, r, predicted=0.5):
        self.hw, self.r, self.predicted = hw, r, predicted

    def predict(self, point_coords, point_labels, mask_input=None, multimask_output=True):
        yy, xx = np.mgrid[: self.hw[0], : self.hw[1]]
        m = np.zeros(self.hw, bool)
        for (x, y), lab in zip(point_coords, point_labels):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= self.r ** 2
            m = (m | disk) if lab == 1 else (m & ~disk)
        n = 3 if multimask_output else 1
        return np.stack([m] * n), np.full(n, self.predicted), np.zeros((n, 256, 256), np.float32)

    def quality(self, scores, low_res):
        return np.clip(scores, 0, 1) / 2  # a known estimate, other than the score


def test_click_session_on_a_constructed_case():
    # truth: a 12 x 40 bar; each positive click paints a disk of radius 5 inside it, so the bar fills click by click
    truth = np.zeros((30, 60), bool)
    truth[10:22, 10:50] = True
    run = click_session(DiskPredictor(truth.shape, 5, predicted=0.3), truth, n_clicks=8)
    assert len(run["dice"]) == len(run["iou"]) == len(run["predicted_iou"]) == 8
    assert run["predicted_iou"] == [0.3] * 8 and run["quality"] == [0.15] * 8  # each from its own source
    assert all(b > a for a, b in zip(run["dice"][:4], run["dice"][1:4])), run["dice"]
    assert run["dice"][-1] > 0.8 > run["dice"][0]
    # the first click is the innermost point: a disk fully inside the bar, so IoU = disk area / bar area
    disk = DiskPredictor(truth.shape, 5).predict(np.array([sim.innermost_point(truth)]), np.array([1]))[0][0]
    assert run["iou"][0] == pytest.approx((disk & truth).sum() / (disk | truth).sum())


def test_a_perfect_mask_stops_the_clicks_and_repeats_the_last_figures():
    truth = np.zeros((30, 30), bool)
    yy, xx = np.mgrid[:30, :30]
    truth[(xx - 15) ** 2 + (yy - 15) ** 2 <= 36] = True
    run = click_session(DiskPredictor(truth.shape, 6), truth, n_clicks=5)
    assert run["dice"] == [1.0] * 5 and run["iou"] == [1.0] * 5


@pytest.mark.real
def test_shipped_breast_adapter_first_click_is_good_and_corrections_keep_it_on_real_images(data_root):
    """On the first 6 test images (5 clicks), the encoder-LoRA breast adapter with the first-click setting chosen on
    val (``direct``): the first click is already good (Dice 0.916 in fp32), every correction raises the mean
    (0.916, 0.940, 0.940, 0.945, 0.948), and the quality shown with the first-click mask is close to the measured
    IoU (error 0.088). Re-answering the first click from its box (``box_refine``) is good too: 0.929 on these 6
    since the box decoder answers the boxes (0.899 with the backbone's decoder); on all 63 val lesions the two are
    level (1 click 0.8849 vs 0.8859, mean over 20 clicks 0.9407 vs 0.9405), and ``direct`` was kept."""
    from pathlib import Path

    import usam
    from usam.data.fmc import read_split

    root = Path(__file__).resolve().parents[1]
    model = usam.load(adapters=[str(root / "adapters" / "breast")], precision="fp32", runtime="torch")
    assert model.adapter.decoder.first_click == "direct"
    rows = read_split(data_root / "test", tasks=["breast_lesion"])["breast_lesion"][:6]
    res = evaluate_clicks(model, "breast", rows, n_clicks=5, progress=False)
    curve = res["dice_curve"]
    assert res["n_objects"] == 6 and len(curve) == 5
    assert curve[0] > 0.9, curve
    assert all(b >= a for a, b in pairwise(curve)), curve
    assert res["iou_error"] < 0.15, res["iou_error"]
    assert 1 <= res["noc85"] <= 3
    model.adapter.decoder.first_click = "box_refine"
    refined = evaluate_clicks(model, "breast", rows, n_clicks=1, progress=False)["dice_curve"]
    assert refined[0] > 0.9 and abs(refined[0] - curve[0]) < 0.05, (refined, curve)


@pytest.fixture(scope="module")
def val_curve(data_root):
    """Mean Dice after 1..5 clicks of the shipped breast adapter on its whole validation split (63 objects, the split
    its click decoder was chosen on; original resolution, standard protocol, fp32), computed here (~2.5 min)."""
    from pathlib import Path

    import usam
    from usam.data.fmc import read_split

    root = Path(__file__).resolve().parents[1]
    model = usam.load(adapters=[str(root / "adapters" / "breast")], precision="fp32", runtime="torch")
    rows = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"]
    return evaluate_clicks(model, "breast", rows, n_clicks=5, progress=False)["dice_curve"]


@pytest.mark.real
def test_shipped_breast_adapter_no_correction_ends_below_the_first_click_on_val(val_curve):
    """Regression guard on real validation images: the second click raises mean Dice and no later click (to 5)
    brings it back to the one-click level."""
    assert len(val_curve) == 5
    assert val_curve[1] > val_curve[0] + 0.02, val_curve
    assert min(val_curve[1:]) > val_curve[0], val_curve


@pytest.mark.real
def test_shipped_breast_adapter_curve_never_falls_over_five_clicks_on_val(val_curve):
    """The click decoder's curve rises with every click (second round: 0.815, 0.876, 0.890, 0.895, 0.901). On the
    first 8 images alone, which this test used before, stage 5's decoder fell after the second click (0.840, 0.881,
    0.875, 0.869, 0.867), the first round's rose (0.846, 0.881, 0.884, 0.897, 0.906) and the second round's falls
    at the fifth (0.833, 0.862, 0.866, 0.867, 0.858): 8 objects are too few to judge a decoder by."""
    assert all(b >= a for a, b in pairwise(val_curve)), val_curve


def test_click_window_keeps_the_first_click_and_the_latest():
    assert sim.click_window(5, None).tolist() == [0, 1, 2, 3, 4]
    assert sim.click_window(4, 4).tolist() == [0, 1, 2, 3]
    assert sim.click_window(9, 4).tolist() == [0, 6, 7, 8]
    assert sim.click_window(3, 2).tolist() == [0, 2]


def test_click_window_setting_is_checked_and_saved():
    from usam.adapters.config import DecoderSettings
    from usam.errors import ConfigError

    assert "click_window" not in DecoderSettings.from_adapter({}).to_adapter()
    assert DecoderSettings.from_adapter({"click_window": 6}).to_adapter()["click_window"] == 6
    for bad in (1, 0, 2.5, "6", True):
        with pytest.raises(ConfigError, match="click_window"):
            DecoderSettings.from_adapter({"click_window": bad})


@pytest.mark.real
def test_predictor_shows_a_corrective_prompt_through_the_adapters_click_window(data_root):
    """With ``click_window`` 3 and a previous mask fed back, 5 clicks answer exactly as clicks 1, 4 and 5 do;
    without a previous mask (nothing carries the older clicks) every click is used."""
    from pathlib import Path

    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image, read_mask
    from usam.predictor import Predictor

    root = Path(__file__).resolve().parents[1]
    model = usam.load(adapters=[str(root / "adapters" / "breast")], precision="fp32", runtime="torch")
    row = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][0]
    truth = read_mask(row.mask_path) == 1
    predictor = Predictor(model)
    predictor.set_image(read_image(row.image_path))
    pts, labels = [sim.innermost_point(truth)], [1]
    _, scores, low = predictor.predict(point_coords=np.array(pts), point_labels=np.array(labels))
    prev, mask = low[np.argmax(scores)][None], None
    for _ in range(4):  # four corrective clicks of the standard protocol
        mask, _, low = predictor.predict(point_coords=np.array(pts), point_labels=np.array(labels), mask_input=prev,
                                         multimask_output=False)
        xy, lab = sim.next_click(mask[0], truth)
        pts.append(xy)
        labels.append(lab)
    decoder = model.adapter.decoder
    kept = [0, 3, 4]

    def answer(window, idx=slice(None), fed_back=True):
        with decoder.using(click_window=window):
            return predictor.predict(point_coords=np.array(pts)[idx], point_labels=np.array(labels)[idx],
                                     mask_input=prev if fed_back else None, multimask_output=False, return_logits=True)

    saved = decoder.click_window
    everything, windowed, got = answer(None), answer(None, kept), answer(3)
    fresh_all, fresh = answer(None, fed_back=False), answer(3, fed_back=False)
    assert decoder.click_window == saved  # each setting is restored
    assert not np.allclose(everything[2], windowed[2])  # the window changes what the decoder sees ...
    np.testing.assert_array_equal(got[2], windowed[2])  # ... and is exactly the first + latest clicks
    np.testing.assert_array_equal(fresh[2], fresh_all[2])  # no mask fed back: all clicks
