"""Simulated prompts for interactive training and evaluation, as SAM / RITM / SAM-Med2D do.

- the first click goes to the innermost point of the object (largest distance to its border), with
  optional random choice among the most interior pixels;
- each further click goes to the innermost point of the largest error region: positive in a missed
  region (false negative), negative in a spurious one (false positive);
- boxes come from the object's extent (:func:`usam.ops.masks.mask_box`) with random jitter.

All functions work on ``(H, W)`` boolean numpy masks and return ``(x, y)`` pixel coordinates.
"""

from __future__ import annotations

import cv2
import numpy as np


def innermost_point(region: np.ndarray, rng: np.random.Generator | None = None, top_fraction: float = 0.0) -> tuple[float, float] | None:
    """``(x, y)`` of the pixel farthest from the border of ``region`` (``None`` if empty).

    With ``rng`` and ``top_fraction > 0``, a random pixel among those whose distance is at least
    ``(1 - top_fraction)`` of the maximum.
    """
    if not region.any():
        return None
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    peak = dist.max()
    if rng is not None and top_fraction > 0:
        ys, xs = np.nonzero(dist >= peak * (1 - top_fraction))
        i = int(rng.integers(len(xs)))
        return float(xs[i]), float(ys[i])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[tuple[float, float], int] | None:
    """The corrective click for ``pred`` against ``truth``: ``((x, y), label)`` or ``None`` if perfect.

    Picks the larger (by the innermost point's distance to the border) of the false-negative and
    false-positive regions, as the standard NoC protocol does.
    """
    fn = truth & ~pred
    fp = pred & ~truth
    best = None
    for region, label in ((fn, 1), (fp, 0)):
        if not region.any():
            continue
        padded = np.pad(region.astype(np.uint8), 1)
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        d = float(dist.max())
        if best is None or d > best[0]:
            y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
            best = (d, (float(x), float(y)), label)
    if best is None:
        return None
    return best[1], best[2]


def click_window(n: int, window: int | None) -> np.ndarray:
    """Indices of the clicks a corrective prompt of ``n`` clicks shows the decoder: the first and the latest
    ``window - 1`` (all ``n`` when ``window`` is ``None`` or ``n <= window``). A decoder trained on a handful of
    clicks degrades when shown twenty; with the previous mask fed back, the older corrections live on in it."""
    if window is None or n <= window:
        return np.arange(n)
    return np.concatenate([[0], np.arange(n - window + 1, n)])


def merge_region(previous: np.ndarray, new: np.ndarray, click: tuple[float, float]) -> np.ndarray:
    """Where a corrective click's answer replaces the previous mask, FocalClick's *Progressive Merge* (Chen et al.,
    2022): the connected region (8-connected) of the pixels where ``new`` differs from ``previous`` (both ``(H, W)``
    bool) that holds the click ``(x, y)``; everything else keeps the previous mask, so a click changes the mask only
    where it acted and never undoes a correct part elsewhere. Empty when the click's own pixel did not change (the
    click had no effect there). Returns ``(H, W)`` bool."""
    if previous.shape != new.shape:
        raise ValueError(f"previous {previous.shape} and new {new.shape} masks differ in shape")
    h, w = previous.shape
    x = int(np.clip(round(float(click[0])), 0, w - 1))
    y = int(np.clip(round(float(click[1])), 0, h - 1))
    diff = previous != new
    if not diff[y, x]:
        return np.zeros_like(diff)
    _, labels = cv2.connectedComponents(diff.astype(np.uint8), connectivity=8)
    return labels == labels[y, x]


def jitter_box(box: np.ndarray, hw: tuple[int, int], rng: np.random.Generator, amount: float = 0.1) -> np.ndarray:
    """Shift each side of ``box`` by up to ``amount`` of the box size (uniform), clipped to the image."""
    w, h = box[2] - box[0], box[3] - box[1]
    noise = rng.uniform(-amount, amount, 4) * np.array([w, h, w, h])
    out = box + noise
    out[[0, 2]] = np.clip(out[[0, 2]], 0, hw[1])
    out[[1, 3]] = np.clip(out[[1, 3]], 0, hw[0])
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:
        return box.copy()
    return out


def zoom_window(mask: np.ndarray, points: np.ndarray, expand: float,
                min_side: float = 32.0) -> tuple[int, int, int, int] | None:
    """The zoomed view RITM's *Zoom-In* answers a corrective click on (Sofiiuk et al., 2021): the square around the
    current mask ``(H, W)`` bool and the positive clicks ``points`` ``(N, 2)`` (x, y), its side ``expand`` times
    their extent (at least ``min_side`` px), kept inside the image; ``(x0, y0, x1, y1)`` pixel bounds, end-exclusive.

    Side and centre are snapped to a grid of 1/32 of the image's long side, so that the small changes of a mask
    between clicks keep one window (and one cached embedding of it). ``None`` when there is nothing to zoom on
    (an empty mask and no click) or the window would span 90 % of the image's long side (little to gain)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    xs = np.concatenate([xs, np.asarray(points, dtype=np.float64).reshape(-1, 2)[:, 0]])
    ys = np.concatenate([ys, np.asarray(points, dtype=np.float64).reshape(-1, 2)[:, 1]])
    if xs.size == 0:
        return None
    grid = max(4.0, max(h, w) / 32)
    side = max(float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)) * expand
    side = float(np.ceil(max(side, min_side) / grid) * grid)
    cx = float(np.round((xs.min() + xs.max() + 1) / 2 / grid) * grid)
    cy = float(np.round((ys.min() + ys.max() + 1) / 2 / grid) * grid)
    if side >= 0.9 * max(h, w):
        return None
    sw, sh = min(side, w), min(side, h)
    x0 = int(round(np.clip(cx - sw / 2, 0, w - sw)))
    y0 = int(round(np.clip(cy - sh / 2, 0, h - sh)))
    x1, y1 = min(w, x0 + int(round(sw))), min(h, y0 + int(round(sh)))
    return x0, y0, x1, y1
