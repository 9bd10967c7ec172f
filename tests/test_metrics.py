"""Official FMC_UIA metrics on hand-made cases with known values."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from usam.ops import masks as MK
from usam.ops import metrics as M


def _square(shape, x0, y0, size):
    m = np.zeros(shape, dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def _hd_reference(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0)) -> float:
    """Independent HD: 4-connected edges (mask XOR erosion), exact EDT from the other mask's edges."""
    ea = a ^ ndimage.binary_erosion(a)
    eb = b ^ ndimage.binary_erosion(b)
    da = ndimage.distance_transform_edt(~eb, sampling=spacing)[ea]
    db = ndimage.distance_transform_edt(~ea, sampling=spacing)[eb]
    return float(max(da.max(), db.max()))


# ------------------------------------------------------------------------------------------ segmentation
def test_dice_two_squares_known_overlap():
    a = _square((40, 40), 10, 10, 10)
    b = _square((40, 40), 15, 10, 10)  # overlap 5 x 10 = 50 of 100 + 100
    assert M.dice_score(a, b) == pytest.approx(0.5)
    assert M.dice_score(a, a) == 1.0
    assert M.dice_score(a, _square((40, 40), 25, 25, 5)) == 0.0


def test_hd_single_pixel_offset_is_one():
    a = _square((40, 40), 10, 10, 10)
    b = _square((40, 40), 11, 10, 10)
    assert M.hausdorff_distance(a, b) == pytest.approx(1.0)
    assert M.hausdorff_distance(a, a) == 0.0


def test_hd_two_points_3_4_5_and_spacing():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5, 5] = True
    b[9, 8] = True  # dx 3, dy 4
    assert M.hausdorff_distance(a, b) == pytest.approx(5.0)
    assert M.hausdorff_distance(a, b, spacing=0.5) == pytest.approx(2.5)
    # anisotropic (row, col) spacing: dy 4 * 2, dx 3 * 1
    assert M.hausdorff_distance(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(8, 3))


def test_hd_matches_independent_edt_on_random_shapes():
    rng = np.random.default_rng(0)
    for _ in range(6):
        a = np.zeros((64, 80), np.uint8)
        b = np.zeros((64, 80), np.uint8)
        for m in (a, b):
            for _ in range(rng.integers(1, 3)):
                c = (int(rng.integers(5, 75)), int(rng.integers(5, 59)))
                ax = (int(rng.integers(3, 20)), int(rng.integers(3, 20)))
                cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        a, b = a > 0, b > 0
        assert M.hausdorff_distance(a, b) == pytest.approx(_hd_reference(a, b), abs=1e-4)
        assert M.hausdorff_distance(a, b, spacing=0.3) == pytest.approx(_hd_reference(a, b, (0.3, 0.3)), abs=1e-4)


def test_hd_mask_touching_border_matches_reference():
    a = _square((30, 30), 0, 0, 12)  # touches the top-left border
    b = _square((30, 30), 2, 3, 15)
    assert M.hausdorff_distance(a, b) == pytest.approx(_hd_reference(a, b), abs=1e-4)


def test_empty_mask_edge_rules():
    empty = np.zeros((30, 40), bool)
    full = _square((30, 40), 5, 5, 10)
    assert M.dice_score(empty, empty) == 1.0
    assert M.hausdorff_distance(empty, empty) == 0.0
    assert M.dice_score(empty, full) == 0.0
    assert M.dice_score(full, empty) == 0.0
    assert M.hausdorff_distance(empty, full) == pytest.approx(50.0)  # diagonal of 30 x 40
    assert M.hausdorff_distance(full, empty) == pytest.approx(50.0)
    assert M.hausdorff_distance(full, empty, spacing=0.1) == pytest.approx(5.0)
    assert M.image_diagonal((30, 40, 3)) == pytest.approx(50.0)


def test_segmentation_case_metrics_multiclass_and_mm():
    truth = np.zeros((30, 40), np.int64)
    pred = np.zeros((30, 40), np.int64)
    truth[5:15, 5:15] = 1
    pred[5:15, 6:16] = 1  # class 1 shifted by one pixel
    pred[20:25, 20:25] = 2  # class 2 predicted, absent from truth
    # class 3 absent from both
    r = M.segmentation_case_metrics(pred, truth, num_classes=4, pixel_size_mm=0.5)
    assert r["dice"] == pytest.approx([0.9, 0.0, 1.0])
    assert r["hd"] == pytest.approx([1.0, 50.0, 0.0])
    assert r["hd_mm"] == pytest.approx([0.5, 25.0, 0.0])
    assert M.segmentation_case_metrics(pred, truth, num_classes=4)["hd_mm"] is None
    with pytest.raises(ValueError):
        M.segmentation_case_metrics(pred[:, :30], truth, num_classes=4)


# ---------------------------------------------------------------------------------------- classification
def test_binary_auc_known_value():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])  # 3 of 4 positive/negative pairs ranked right
    probs = np.stack([1 - p1, p1], axis=1)
    r = M.classification_metrics(y, probs)
    assert r["auc"] == pytest.approx(0.75)
    assert r["accuracy"] == pytest.approx(0.75)  # argmax [0, 0, 0, 1] vs truth [0, 0, 1, 1]
    assert r["n"] == 4


def test_multiclass_auc_matches_sklearn_ovr_and_skips_absent_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])
    probs = rng.dirichlet([1, 1, 1], size=len(y))
    auc, skipped = M.multiclass_auc(y, probs)
    assert skipped == []
    assert auc == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    # class 2 never in the truth: its one-vs-rest AUC is undefined and left out of the mean
    y2 = np.array([0, 1, 0, 1, 0, 1])
    p2 = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
    auc2, skipped2 = M.multiclass_auc(y2, p2)
    assert skipped2 == [2]
    expected = np.mean([roc_auc_score(y2 == 0, p2[:, 0]), roc_auc_score(y2 == 1, p2[:, 1])])
    assert auc2 == pytest.approx(expected)
    # one class only: AUC undefined
    assert M.classification_metrics(np.zeros(3, int), np.full((3, 2), 0.5))["auc"] is None


def test_accuracy_f1_mcc_known_and_missing_counts_wrong():
    from sklearn.metrics import f1_score, matthews_corrcoef

    y = np.array([0, 0, 1, 1, 2, 2])
    yp = np.array([0, 1, 1, 1, 2, 0])
    probs = np.eye(3)[yp]
    r = M.classification_metrics(y, probs, yp)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_f1"] == pytest.approx(f1_score(y, yp, average="macro"))
    assert r["mcc"] == pytest.approx(matthews_corrcoef(y, yp))
    perfect = M.classification_metrics(y, np.eye(3)[y])
    assert perfect == {**perfect, "auc": 1.0, "accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0}
    # a missing prediction (-1) is wrong, and -1 is not a class of the F1 average
    yp_missing = y.copy()
    yp_missing[0] = -1
    r = M.classification_metrics(y, np.eye(3)[y], yp_missing)
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["macro_f1"] == pytest.approx(f1_score(y, yp_missing, labels=[0, 1, 2], average="macro"))
    assert r["macro_f1"] < 1.0 and r["mcc"] < 1.0


# --------------------------------------------------------------------------------- detection, regression
def test_box_iou_known_boxes():
    assert M.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert M.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert M.box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert M.box_iou([0, 0, 4, 4], [2, 2, 6, 6]) == pytest.approx(4 / 28)
    assert M.box_iou([10, 10, 0, 0], [0, 0, 10, 10]) == 0.0  # inverted box has no area
    assert M.mean_box_iou([[0, 0, 10, 10], [0, 0, 10, 10]], [[5, 0, 15, 10], [0, 0, 10, 10]]) == pytest.approx((1 / 3 + 1) / 2)
    assert M.mean_box_iou(np.zeros((0, 4)), np.zeros((0, 4))) is None


def test_mean_radial_error_known_points():
    truth = np.array([[0.0, 0.0], [10.0, 10.0]])
    pred = np.array([[3.0, 4.0], [10.0, 10.0]])
    assert M.mean_radial_error(pred, truth) == pytest.approx(2.5)
    assert M.mean_radial_error(pred, truth, pixel_size_mm=0.2) == pytest.approx(0.5)
    assert M.radial_errors(pred, truth) == pytest.approx([5.0, 0.0])
    with pytest.raises(ValueError):
        M.mean_radial_error(pred[:1], truth)


# ------------------------------------------------------------------------------------ head circumference
def test_ellipse_perimeter_known():
    assert MK.ellipse_perimeter(20, 20) == pytest.approx(math.pi * 20)
    assert MK.ellipse_perimeter(20, 10) == pytest.approx(48.44224, rel=1e-5)  # semi-axes 10, 5
    assert MK.ellipse_perimeter(0, 0) == 0.0


def test_head_circumference_synthetic_ellipse():
    m = np.zeros((400, 500), np.uint8)
    cv2.ellipse(m, (250, 200), (150, 90), 30, 0, 360, 1, -1)  # semi-axes 150, 90
    cx, cy, major, minor, angle = MK.fit_ellipse(m)
    assert (cx, cy) == pytest.approx((250, 200), abs=0.5)
    assert major == pytest.approx(300, rel=0.01) and minor == pytest.approx(180, rel=0.01)
    assert angle == pytest.approx(30, abs=1)
    assert MK.head_circumference(m, 0.1) == pytest.approx(MK.ellipse_perimeter(300, 180) * 0.1, rel=0.01)
    assert MK.head_circumference(np.zeros((20, 20))) is None
