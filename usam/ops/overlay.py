"""Overlays for people: masks, prompts, boxes and keypoints drawn on the image (RGB uint8)."""

from __future__ import annotations

import cv2
import numpy as np

#: Colours per class id (RGB); class 0 is background and never drawn.
PALETTE = np.array(
    [(0, 0, 0), (255, 64, 64), (64, 160, 255), (255, 200, 0), (160, 80, 255), (0, 220, 140), (255, 120, 200)],
    dtype=np.uint8,
)
#: Colours (RGB) of what is drawn over the masks: positive / negative clicks, boxes (and long axes), keypoints
#: (and short axes); measurement ellipses are drawn in the positive colour, their end points in the negative one.
POSITIVE_RGB = (0, 200, 0)
NEGATIVE_RGB = (220, 0, 0)
BOX_RGB = (255, 220, 0)
KEYPOINT_RGB = (0, 255, 255)


def overlay_mask(image, mask, points=None, labels=None, box=None, alpha: float = 0.45, keypoints=None) -> np.ndarray:
    """Blend a binary or class-id ``(H, W)`` mask onto ``(H, W, 3)`` uint8 RGB and draw prompts.

    Positive points are green, negative red, the box yellow, keypoints cyan; contours outline each class.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    m = np.asarray(mask).astype(np.int64)
    for cls in np.unique(m):
        if cls == 0:
            continue
        sel = m == cls
        color = PALETTE[1 + (int(cls) - 1) % (len(PALETTE) - 1)]
        out[sel] = (out[sel] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(sel.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, round(max(out.shape[:2]) / 400)))
    r = max(3, round(max(out.shape[:2]) / 120))
    for (x, y), lab in zip(points or [], labels or []):
        cv2.circle(out, (int(round(x)), int(round(y))), r, POSITIVE_RGB if lab == 1 else NEGATIVE_RGB, -1)
        cv2.circle(out, (int(round(x)), int(round(y))), r, (255, 255, 255), 1)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_RGB, max(1, r // 2))
    for x, y in (keypoints if keypoints is not None else []):
        cv2.drawMarker(out, (int(round(x)), int(round(y))), KEYPOINT_RGB, cv2.MARKER_CROSS, 3 * r, max(1, r // 2))
    return out
