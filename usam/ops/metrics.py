"""The FMC_UIA challenge's official per-task metrics, as pure functions on numpy arrays.

Segmentation
  :func:`dice_score` and :func:`hausdorff_distance` per non-background class
  (:func:`segmentation_case_metrics`). Hausdorff distance is the symmetric 100th-percentile (maximum)
  surface distance between the masks' edges, in pixels, computed with :mod:`monai.metrics`.
  Edge rules (the challenge's): truth and prediction both empty -> Dice 1, HD 0; exactly one empty ->
  Dice 0, HD = the image diagonal. With a pixel size (isotropic, mm / pixel) HD is also given in mm.
Classification
  :func:`classification_metrics`: AUC, accuracy, macro-F1, MCC (scikit-learn).
Detection
  :func:`box_iou` per image; the task score is the mean (:func:`mean_box_iou`).
Regression
  :func:`mean_radial_error`: mean over points of the Euclidean distance, pixels (and mm).
Head circumference
  :func:`usam.ops.masks.head_circumference` (ellipse fit, Ramanujan perimeter) and
  :func:`usam.ops.masks.points_biometry` (from the 4 OFD / BPD landmarks).

Coordinates are ``(x, y)`` in pixels, ``x`` along the width; masks are ``(H, W)`` arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .masks import dice

__all__ = [
    "box_iou",
    "classification_metrics",
    "dice_score",
    "hausdorff_distance",
    "image_diagonal",
    "mean_box_iou",
    "mean_radial_error",
    "multiclass_auc",
    "radial_errors",
    "segmentation_case_metrics",
]


# --------------------------------------------------------------------------------------------- helpers
def image_diagonal(shape: Sequence[int]) -> float:
    """Length in pixels of the diagonal of an image of shape ``(H, W, ...)``: ``sqrt(H**2 + W**2)``."""
    h, w = int(shape[0]), int(shape[1])
    return float(math.hypot(h, w))


def _binary(mask: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {m.shape}")
    return m.astype(bool, copy=False)


def _same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")


# ------------------------------------------------------------------------------------------ segmentation
def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` of two binary ``(H, W)`` masks.

    Both empty -> 1.0; exactly one empty -> 0.0.
    """
    p, t = _binary(pred, "pred"), _binary(truth, "truth")
    _same_shape(p, t)
    return dice(p, t)


def hausdorff_distance(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    percentile: float | None = None,
) -> float:
    """Symmetric Hausdorff distance between the edges of two binary ``(H, W)`` masks.

    Computed with ``monai.metrics.compute_hausdorff_distance`` (edges = mask XOR its 4-connected
    erosion, Euclidean distance between edge-pixel centres, maximum over both directions).

    Args:
      pred, truth: ``(H, W)`` binary masks of the same shape.
      spacing: pixel size (one number, isotropic, or ``(row, col)``); ``None`` = pixels.
      percentile: ``None`` or 100 for the official maximum; e.g. 95 for HD95.

    Returns:
      The distance in units of ``spacing`` (pixels by default). Edge rules: both empty -> 0.0; exactly
      one empty -> the image diagonal (scaled by ``spacing``).
    """
    p, t = _binary(pred, "pred"), _binary(truth, "truth")
    _same_shape(p, t)
    ep, et = bool(p.any()), bool(t.any())
    if not ep and not et:
        return 0.0
    if spacing is None:
        sy = sx = 1.0
    elif np.ndim(spacing) == 0:
        sy = sx = float(spacing)  # type: ignore[arg-type]
    else:
        sy, sx = (float(v) for v in spacing)  # type: ignore[union-attr]
    if ep != et:
        return float(math.hypot(p.shape[0] * sy, p.shape[1] * sx))
    if np.array_equal(p, t):
        return 0.0
    import torch  # lazy, with monai: the base layer stays numpy-only until a Hausdorff distance is asked for
    from monai.metrics import compute_hausdorff_distance

    # HD is translation invariant: crop to the union's bounding box plus a 1-pixel margin (as monai does
    # itself, but before converting to tensors, which is the slow part on large images).
    rows = np.flatnonzero((p | t).any(axis=1))
    cols = np.flatnonzero((p | t).any(axis=0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, p.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, p.shape[1])
    p, t = p[r0:r1, c0:c1], t[r0:r1, c0:c1]
    yp = torch.from_numpy(np.ascontiguousarray(p))[None, None]
    yt = torch.from_numpy(np.ascontiguousarray(t))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(
            yp,
            yt,
            include_background=True,
            distance_metric="euclidean",
            percentile=None if percentile in (None, 100) else float(percentile),
            directed=False,
            spacing=None if spacing is None else [sy, sx],
        )
    return float(hd.reshape(-1)[0])


def segmentation_case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    pixel_size_mm: float | None = None,
) -> dict:
    """Per-class Dice and Hausdorff distance of one image.

    Args:
      pred, truth: ``(H, W)`` integer label maps (0 = background, ``1..num_classes-1`` = classes; other
        values belong to no class).
      num_classes: number of classes including background (>= 2).
      pixel_size_mm: isotropic pixel size; when given, ``hd_mm`` is filled.

    Returns:
      ``{"dice": [num_classes-1 floats], "hd": [...], "hd_mm": [...] or None}``, index ``i`` = class ``i+1``.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"label maps must be (H, W), got {pred.shape} and {truth.shape}")
    _same_shape(pred, truth)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
    dice, hd = [], []
    for c in range(1, num_classes):
        p, t = pred == c, truth == c
        dice.append(dice_score(p, t))
        hd.append(hausdorff_distance(p, t))
    hd_mm = [h * float(pixel_size_mm) for h in hd] if pixel_size_mm else None
    return {"dice": dice, "hd": hd, "hd_mm": hd_mm}


# ---------------------------------------------------------------------------------------- classification
def multiclass_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float | None, list[int]]:
    """AUC of class scores.

    Binary (``probs`` has 2 columns): ROC AUC of the positive-class probability ``probs[:, 1]``.
    Multi-class: macro average of one-vs-rest ROC AUCs, over the classes for which the truth has both
    positives and negatives. A class absent from the truth has no defined one-vs-rest AUC: it is left out
    of the average (and returned in the second element) rather than counted as 0 or 1. When every class is
    present this equals ``sklearn.metrics.roc_auc_score(..., multi_class="ovr", average="macro")``.

    Args:
      y_true: ``(N,)`` integer labels in ``[0, C)``.
      probs: ``(N, C)`` scores (probabilities; they need not sum to 1).

    Returns:
      ``(auc or None, skipped_classes)``; ``None`` when no class has both positives and negatives
      (e.g. every truth label is the same).
    """
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn is heavy, only classification scores need it

    y = np.asarray(y_true).astype(int).reshape(-1)
    s = np.asarray(probs, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = {y.shape[0]}, got {s.shape}")
    n_cls = s.shape[1]
    if n_cls == 2:
        if len(np.unique(y)) < 2:
            return None, [c for c in range(2) if c not in set(y.tolist())]
        return float(roc_auc_score(y == 1, s[:, 1])), []
    aucs, skipped = [], []
    for c in range(n_cls):
        pos = y == c
        if pos.all() or not pos.any():
            skipped.append(c)
            continue
        aucs.append(float(roc_auc_score(pos, s[:, c])))
    return (float(np.mean(aucs)) if aucs else None), skipped


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    y_pred: np.ndarray | None = None,
) -> dict:
    """Official classification scores.

    Args:
      y_true: ``(N,)`` integer labels in ``[0, C)``.
      probs: ``(N, C)`` class probabilities.
      y_pred: ``(N,)`` predicted labels; default ``argmax(probs)``. A value outside ``[0, C)`` (e.g. -1
        for a missing prediction) never equals the truth: it counts as wrong in accuracy, as a false
        negative of the true class in F1, and as its own column of the confusion matrix in MCC.

    Returns:
      ``{"auc", "accuracy", "macro_f1", "mcc", "n", "auc_skipped_classes"}``. ``macro_f1`` averages F1
      over the classes in ``[0, C)`` that occur in the truth or the predictions (a class in neither has no
      defined F1). ``auc`` is from :func:`multiclass_auc` (``None`` if undefined).
    """
    from sklearn.metrics import f1_score, matthews_corrcoef  # lazy: as in multiclass_auc

    y = np.asarray(y_true).astype(int).reshape(-1)
    s = np.asarray(probs, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = {y.shape[0]}, got {s.shape}")
    n_cls = s.shape[1]
    yp = np.argmax(s, axis=1) if y_pred is None else np.asarray(y_pred).astype(int).reshape(-1)
    if yp.shape != y.shape:
        raise ValueError(f"y_pred must have shape {y.shape}, got {yp.shape}")
    if y.size == 0:
        return {"auc": None, "accuracy": None, "macro_f1": None, "mcc": None, "n": 0, "auc_skipped_classes": []}
    auc, skipped = multiclass_auc(y, s)
    labels = sorted({int(v) for v in np.concatenate([y, yp]) if 0 <= v < n_cls})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = float(f1_score(y, yp, labels=labels, average="macro", zero_division=0))
        mcc = float(matthews_corrcoef(y, yp))
    return {
        "auc": auc,
        "accuracy": float(np.mean(y == yp)),
        "macro_f1": f1,
        "mcc": mcc,
        "n": int(y.size),
        "auc_skipped_classes": skipped,
    }


# --------------------------------------------------------------------------------------------- detection
def box_iou(pred: Sequence[float], truth: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes in continuous pixel coordinates
    (area = ``(x1 - x0) * (y1 - y0)``). A box with ``x1 < x0`` or ``y1 < y0`` has zero area; if the union
    is empty the IoU is 1.0 for identical boxes and 0.0 otherwise."""
    a = np.asarray(pred, dtype=np.float64).reshape(-1)
    b = np.asarray(truth, dtype=np.float64).reshape(-1)
    if a.size != 4 or b.size != 4:
        raise ValueError(f"boxes must have 4 numbers (x0, y0, x1, y1), got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    if union <= 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(inter / union)


def mean_box_iou(preds: np.ndarray, truths: np.ndarray) -> float | None:
    """Mean of :func:`box_iou` over ``(N, 4)`` predicted and true boxes; ``None`` when ``N == 0``."""
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    if p.shape != t.shape:
        raise ValueError(f"box arrays differ in shape: {p.shape} vs {t.shape}")
    if len(p) == 0:
        return None
    return float(np.mean([box_iou(a, b) for a, b in zip(p, t)]))


# -------------------------------------------------------------------------------------------- regression
def radial_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Euclidean distance of each predicted point to its true point: ``(N, 2)``, ``(N, 2)`` -> ``(N,)``."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    if p.shape != t.shape:
        raise ValueError(f"point arrays differ in shape: {p.shape} vs {t.shape}")
    return np.hypot(p[:, 0] - t[:, 0], p[:, 1] - t[:, 1])


def mean_radial_error(pred: np.ndarray, truth: np.ndarray, pixel_size_mm: float | None = None) -> float:
    """Mean radial error (MRE) of one image's points: mean over the ``N`` points of the Euclidean
    distance, ``(N, 2)`` and ``(N, 2)`` ``(x, y)`` pixels. In pixels, or in mm when ``pixel_size_mm`` is given."""
    e = radial_errors(pred, truth)
    if e.size == 0:
        raise ValueError("no points to compare")
    mre = float(e.mean())
    return mre * float(pixel_size_mm) if pixel_size_mm else mre
