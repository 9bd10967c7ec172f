"""Detection: one box per image, scored by IoU.

CSV: ``x_min, y_min, x_max, y_max`` (pixels, inclusive pixel extent). Head: :class:`~usam.heads.spatial.DetectHead`.
Target: the box in model-input pixels. Loss: L1 + GIoU (:func:`box_loss`). Output:
``detection_predictions.json`` entries ``{"bbox_normalized", "bbox_pixels"}`` (``[x0, y0, x1, y1]``;
normalised = pixels / (W, H, W, H)).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from ..heads.spatial import DetectHead
from ..ops import metrics as M
from .cells import mean, numbers, parse_float
from .kind import PredictionSource, RowCheck, Target, TaskKind

__all__ = ["DETECTION", "Detection", "box_loss"]

_BOX = ("x_min", "y_min", "x_max", "y_max")


def box_loss(pred: torch.Tensor, target: torch.Tensor, size: float) -> torch.Tensor:
    """L1 + GIoU between ``(B, 4)`` xyxy boxes in pixels (normalised by ``size`` for the L1 term)."""
    l1 = F.l1_loss(pred / size, target / size)
    x0 = torch.minimum(pred[:, 0], pred[:, 2])
    x1 = torch.maximum(pred[:, 0], pred[:, 2])
    y0 = torch.minimum(pred[:, 1], pred[:, 3])
    y1 = torch.maximum(pred[:, 1], pred[:, 3])
    ordered = torch.stack([x0, y0, x1 + 1e-3, y1 + 1e-3], dim=1)
    return l1 + generalized_box_iou_loss(ordered, target, reduction="mean")


class Detection(TaskKind):
    name = "detection"
    columns = _BOX
    pred_file = "detection_predictions.json"
    answer_keys = ("bbox_pixels", "bbox_normalized")
    main_metrics = ("iou",)
    prediction_field = "boxes"
    pipeline_tag = "object-detection"

    def parse_row(self, sample, row: dict, check: RowCheck) -> None:
        vals = [parse_float(row[c]) for c in _BOX]
        if any(v is None for v in vals):
            cells = {c: row[c] for c in _BOX}
            check.problem(f"box {cells} has a missing or non-numeric coordinate")
        elif vals[2] < vals[0] or vals[3] < vals[1]:
            check.problem(f"box {vals} is inverted: need x_min <= x_max and y_min <= y_max")
        else:
            sample.box = tuple(vals)
            if check.size is not None:
                w, h = check.size
                x0, y0, x1, y1 = vals
                if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                    check.problem(f"box {vals} lies outside the {w}x{h} image")

    def describe_outputs(self, num_classes: int) -> str:
        return "one box (x0, y0, x1, y1)"

    def build_head(self, spec, input_size: int, embed_dim: int = 256):
        return DetectHead(embed_dim, input_size=input_size)

    def target(self, sample, geo, mask=None, box=None, points=None) -> Target:
        b = np.asarray(box if box is not None else sample.box, dtype=np.float64)
        return Target(self.name, box=geo.boxes_to_input(b))

    def loss(self, head, emb, targets: list[Target], size: float, decoder=None):
        target = torch.tensor(np.stack([t.box for t in targets]), dtype=torch.float32, device=emb.device)
        return box_loss(head(emb), target, size)

    def output_entry(self, sample, pred, hw, out_rel=None) -> dict:
        h, w = hw
        b = np.asarray(pred.boxes[sample.task_id], dtype=np.float64).reshape(4)
        x0, x1 = sorted((float(np.clip(b[0], 0, w)), float(np.clip(b[2], 0, w))))
        y0, y1 = sorted((float(np.clip(b[1], 0, h)), float(np.clip(b[3], 0, h))))
        return {"bbox_normalized": [x0 / w, y0 / h, x1 / w, y1 / h], "bbox_pixels": [x0, y0, x1, y1]}

    def truth_entry(self, sample, image_size) -> dict:
        w, h = image_size()
        box = [float(v) for v in sample.box]
        return {"bbox_normalized": [box[0] / w, box[1] / h, box[2] / w, box[3] / h], "bbox_pixels": box}

    def evaluate(self, samples: list, source: PredictionSource) -> dict:
        cases = []
        for s in samples:
            index, e = source.entry(s)
            box = _answer(e, s, source, source.where(s, index))
            cases.append({
                "image_path": s.rel_image_path,
                "image_file": str(s.image_path),
                "box_true": [float(v) for v in s.box],
                "box_pred": None if box is None else [float(v) for v in box],
                "iou": float(M.box_iou(box, s.box) if box is not None else 0.0),
                "missing": box is None,
            })
        return {"metrics": {"iou": mean(c["iou"] for c in cases)}, "cases": cases,
                "missing": sum(c["missing"] for c in cases)}


def _answer(e: dict | None, s, source: PredictionSource, where: str) -> np.ndarray | None:
    """The predicted box in pixels (``bbox_pixels``, else ``bbox_normalized`` times the image size), or ``None``."""
    if e is None:
        return None
    if e.get("bbox_pixels") is not None:
        return numbers(e["bbox_pixels"], 4, "bbox_pixels", where)
    if e.get("bbox_normalized") is not None:
        w, h = source.image_size(s)
        return numbers(e["bbox_normalized"], 4, "bbox_normalized", where) * np.array([w, h, w, h])
    return None


DETECTION = Detection()
