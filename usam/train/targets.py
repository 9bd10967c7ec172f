"""Training examples: one dataset row turned into model-space targets next to its embedding / image.

Targets live in the decoder's low-res space (``256 x 256`` covering the padded model input):
segmentation class maps ``(256, 256)``, boxes ``(4,)`` and points ``(N, 2)`` in model-input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..backbones import LOW_RES
from ..data.fmc import Sample
from ..geometry import Geometry
from ..io import read_mask


def class_map_to_lowres(mask: np.ndarray, geo: Geometry, size: int = LOW_RES) -> np.ndarray:
    """``(H, W)`` class ids -> ``(size, size)`` uint8 class ids in model space (nearest, zero padding)."""
    rh = round(geo.resized_hw[0] * size / geo.input_size)
    rw = round(geo.resized_hw[1] * size / geo.input_size)
    small = cv2.resize(mask.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), dtype=np.uint8)
    out[:rh, :rw] = small
    return out


@dataclass
class Target:
    """Model-space target of one row. Exactly one of the label fields is set, by ``kind``."""

    kind: str
    class_map: np.ndarray | None = None   # (256, 256) uint8
    label: int | None = None
    box: np.ndarray | None = None         # (4,) model-input pixels
    points: np.ndarray | None = None      # (N, 2) model-input pixels


def make_target(sample: Sample, geo: Geometry, mask=None, box=None, points=None) -> Target:
    """Target for ``sample`` under ``geo``; ``mask`` / ``box`` / ``points`` override the row's (augmented copies)."""
    if sample.kind == "segmentation":
        m = mask if mask is not None else read_mask(sample.mask_path)
        return Target("segmentation", class_map=class_map_to_lowres(m, geo))
    if sample.kind == "classification":
        return Target("classification", label=int(sample.label))
    if sample.kind == "detection":
        b = np.asarray(box if box is not None else sample.box, dtype=np.float64)
        return Target("detection", box=geo.boxes_to_input(b))
    p = np.asarray(points if points is not None else sample.points, dtype=np.float64)
    return Target("regression", points=geo.points_to_input(p))
