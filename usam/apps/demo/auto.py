"""The organ adapter's automatic outputs on the image: one overlay (class masks in the palette's colours, boxes,
numbered keypoints), class probabilities, a Markdown summary and measurement lines.

Reads a :class:`~usam.heads.Prediction` (``masks`` ``{task: (H, W) class ids}``, ``boxes`` ``{task: (4,)}``,
``keypoints`` ``{task: (K, 2)}``, ``probabilities`` ``{task: (C,)}``, ``class_names``) and the adapter's ``tasks``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from ...ops.overlay import KEYPOINT_RGB, overlay_mask
from .draw import NO_MASK, draw_measurement, measure_mask, radius
from .session import MEASURE_KINDS


class AutoView(NamedTuple):
    overlay: np.ndarray | None  # (H, W, 3) uint8
    probabilities: dict | None  # {class name: probability} of the first classification task
    summary: str  # Markdown
    measurements: list[str]  # Markdown lines, one per measured class


def class_name(task_id: str, names: Sequence[str], k: int, num_classes: int | None = None) -> str:
    """Name of class ``k`` of segmentation task ``task_id``: its class name, else (a binary task without
    class names, e.g. ``fetal_head``) the task id itself, else ``class k``."""
    if k < len(names) and names[k]:
        return str(names[k])
    if not names and k == 1 and num_classes in (None, 2):
        return str(task_id)
    return f"class {k}"


def _class_names(pred, task_id: str) -> list:
    return (getattr(pred, "class_names", None) or {}).get(task_id) or []


def _draw_class_maps(out, pred, tasks: dict, pixel_size: float | None, lines: list, mlines: list):
    """Each segmentation task's class map on ``out``, measured per class when ``pixel_size`` is given."""
    for tid, cmap in (getattr(pred, "masks", None) or {}).items():
        cmap = np.asarray(cmap)
        out = overlay_mask(out, cmap)
        present = []
        for k in [int(v) for v in np.unique(cmap) if v > 0]:
            cname = class_name(tid, _class_names(pred, tid), k, getattr(tasks.get(tid), "num_classes", None))
            present.append(f"{cname} ({int((cmap == k).sum())} px)")
            if pixel_size:
                kind = MEASURE_KINDS[0] if "head" in cname.lower() else MEASURE_KINDS[1]
                result, text = measure_mask(cmap == k, pixel_size, kind)
                mlines.append(f"- `{tid}` {cname}: {text}")
                out = draw_measurement(out, result)
        lines.append(f"- `{tid}` segmentation: {', '.join(present) or 'nothing found'}")
    return out


def _draw_boxes(out, pred, lines: list):
    for tid, box in (getattr(pred, "boxes", None) or {}).items():
        b = np.asarray(box, dtype=float).reshape(-1)[:4]
        out = overlay_mask(out, NO_MASK, box=b)
        lines.append(f"- `{tid}` box: [{', '.join(f'{v:.0f}' for v in b)}]")
    return out


def _draw_keypoints(out, pred, lines: list):
    r = radius(out.shape)
    for tid, kps in (getattr(pred, "keypoints", None) or {}).items():
        kps = np.asarray(kps, dtype=float).reshape(-1, 2)
        out = overlay_mask(out, NO_MASK, keypoints=kps)
        for i, (x, y) in enumerate(kps):
            cv2.putText(out, str(i + 1), (int(x) + r + 2, int(y) - r), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, r / 8),
                        KEYPOINT_RGB, max(1, r // 4), cv2.LINE_AA)
        lines.append(f"- `{tid}` keypoints: " + ", ".join(f"{i + 1}: ({x:.0f}, {y:.0f})" for i, (x, y) in enumerate(kps)))
    return out


def _probabilities(pred, tasks: dict, lines: list) -> dict | None:
    """``{class: probability}`` of the first classification task; one summary line per task."""
    probs = None
    for tid, p in (getattr(pred, "probabilities", None) or {}).items():
        p = np.asarray(p, dtype=float).reshape(-1)
        names = _class_names(pred, tid) or [f"class {k}" for k in range(len(p))]
        kind = getattr(tasks.get(tid), "kind", None)
        if kind not in (None, "classification") and tid in (getattr(pred, "masks", None) or {}):
            continue
        d = {str(names[k]) if k < len(names) else f"class {k}": float(p[k]) for k in range(len(p))}
        if probs is None:
            probs = d
        top = max(d, key=d.get) if d else "?"
        lines.append(f"- `{tid}` class: **{top}** ({d.get(top, 0):.2f})")
    return probs


def auto_view(image: np.ndarray, name: str, pred, tasks: dict, pixel_size: float | None) -> AutoView:
    """Adapter ``name``'s prediction ``pred`` on ``image`` (``tasks``: its ``{task_id: TaskSpec}``)."""
    lines, mlines = [f"**Adapter `{name}`**"], []
    out = _draw_class_maps(image.copy(), pred, tasks, pixel_size, lines, mlines)
    out = _draw_boxes(out, pred, lines)
    out = _draw_keypoints(out, pred, lines)
    probs = _probabilities(pred, tasks, lines)
    if len(lines) == 1:
        lines.append("- no automatic outputs")
    return AutoView(out, probs, "\n".join(lines), mlines)
