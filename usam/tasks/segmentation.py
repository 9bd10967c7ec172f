"""Segmentation: a PNG of class ids per image (0 = background), scored by Dice and Hausdorff distance.

CSV: ``mask_path`` (PNG of class ids). Head: :class:`~usam.heads.automask.AutoMaskHead` (prompt-free masks
through the prompt decoder). Target: the class map in the decoder's low-res space. Loss: BCE + soft Dice per
class (:func:`mask_loss`). Output: a PNG per row at ``output_mask_relpath(mask_path)``. Metrics: per-class
Dice and HD (and HD in mm, head-circumference error from an ellipse fit where the CSV gives them).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..backbones import LOW_RES
from ..errors import InputImageError, UsamError
from ..geometry import Geometry
from ..heads.automask import AutoMaskHead
from ..io import read_mask
from ..ops import metrics as M
from ..ops.masks import head_circumference
from .cells import finite
from .kind import PredictionSource, RowCheck, Target, TaskKind

__all__ = ["SEGMENTATION", "Segmentation", "class_map_to_lowres", "head_class", "iou_of", "mask_loss",
           "prompted_mask_loss"]


# ------------------------------------------------------------------------------------------------ targets
def class_map_to_lowres(mask: np.ndarray, geo: Geometry, size: int = LOW_RES) -> np.ndarray:
    """``(H, W)`` class ids -> ``(size, size)`` uint8 class ids in model space (nearest, zero padding)."""
    rh = round(geo.resized_hw[0] * size / geo.input_size)
    rw = round(geo.resized_hw[1] * size / geo.input_size)
    small = cv2.resize(mask.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), dtype=np.uint8)
    out[:rh, :rw] = small
    return out


def head_class(spec) -> int | None:
    """Class id of the fetal head in a segmentation task (``spec``: a TaskSpec or a row): the class whose name
    contains ``head``; in a binary task, class 1. ``None``: every foreground class."""
    for i, name in enumerate(spec.class_names or []):
        if i > 0 and "head" in str(name).lower():
            return i
    return 1 if spec.num_classes == 2 else None


# ------------------------------------------------------------------------------------------------- losses
def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice between ``(B, M, H, W)`` logits and ``(B, M, H, W)`` {0, 1} targets, per mask ``(B, M)``."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-2, -1))
    p = logits.sigmoid()
    inter = (p * target).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return bce + dice


def iou_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard IoU ``(B, M)`` of thresholded logits against targets (no gradient)."""
    with torch.no_grad():
        pred = logits > 0
        t = target > 0.5
        inter = (pred & t).sum(dim=(-2, -1)).float()
        union = (pred | t).sum(dim=(-2, -1)).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def prompted_mask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's loss for ``M`` candidate masks ``(B, M, H, W)`` of one ``(B, 1, H, W)`` target:
    the best candidate's mask loss plus MSE of the IoU prediction of every candidate."""
    t = target.expand_as(logits)
    per = mask_loss(logits, t)
    best = per.min(dim=1).values
    iou_loss = F.mse_loss(iou_pred.float(), iou_of(logits, t))
    return best.mean() + iou_loss


# ------------------------------------------------------------------------------------------------- kind
class Segmentation(TaskKind):
    name = "segmentation"
    min_classes = 2
    min_classes_rule = "a segmentation task needs num_classes >= 2 (background + at least one class)"
    columns = ("mask_path",)
    answer_keys = ("mask_path",)
    main_metrics = ("dice", "hd", "hd_mm", "hc_abs_err_mm")
    prediction_field = "masks"
    pipeline_tag = "image-segmentation"

    def parse_row(self, sample, row: dict, check: RowCheck) -> None:
        rel_mask = row["mask_path"]
        if not rel_mask:
            check.problem("mask_path is empty")
            return
        sample.rel_mask_path = rel_mask
        sample.mask_path = check.resolve(rel_mask)
        if check.check_files and not sample.mask_path.is_file():
            check.problem(f"mask file {rel_mask!r} not found (looked for {str(sample.mask_path)!r})")
        elif check.check_geometry and sample.mask_path.is_file():
            _check_mask(sample, check)

    def build_head(self, spec, input_size: int, embed_dim: int = 256):
        return AutoMaskHead(spec.num_classes, embed_dim)

    def target(self, sample, geo, mask=None, box=None, points=None) -> Target:
        m = mask if mask is not None else read_mask(sample.mask_path)
        return Target(self.name, class_map=class_map_to_lowres(m, geo))

    def loss(self, head, emb, targets: list[Target], size: float, decoder=None):
        """Loss of the automatic (prompt-free) masks: :func:`mask_loss` per foreground class, mean."""
        maps = np.stack([t.class_map for t in targets])  # (B, 256, 256)
        k = head.num_foreground
        onehot = torch.tensor(np.stack([maps == c for c in range(1, k + 1)], axis=1), dtype=torch.float32,
                              device=emb.device)
        logits, _ = head(decoder, emb)
        return mask_loss(logits, onehot).mean()

    def output_entry(self, sample, pred, hw, out_rel=None) -> dict:
        return {"mask_path": out_rel}

    def output_mask(self, sample, pred, hw) -> np.ndarray:
        mask = np.asarray(pred.masks[sample.task_id])
        if mask.shape != hw:  # pragma: no cover - heads return original-size masks
            raise UsamError(f"adapter {pred.adapter!r} returned a {mask.shape} mask for a {hw} image")
        return mask.astype(np.uint8)

    def evaluate(self, samples: list, source: PredictionSource) -> dict:
        n_fg = samples[0].num_classes - 1
        cases = [_case(s, source) for s in samples]
        return {"metrics": _summary(cases, _names(samples[0]), n_fg), "cases": cases,
                "missing": sum(c["missing"] for c in cases)}


def _check_mask(sample, check: RowCheck) -> None:
    """Mask values must be class ids ``< num_classes`` and its size must match the image's."""
    try:
        mask = read_mask(sample.mask_path)
    except InputImageError as exc:
        check.problem(str(exc))
        return
    size = check.size
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        check.problem(f"mask {sample.rel_mask_path!r} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}")
    top = int(mask.max()) if mask.size else 0
    if top >= sample.num_classes or (mask.size and int(mask.min()) < 0):
        check.problem(f"mask {sample.rel_mask_path!r} has value {top} but num_classes is {sample.num_classes} "
                      f"(values must be 0..{sample.num_classes - 1})")


def _names(sample) -> list[str]:
    """Class names of a task (index 0 = background); unnamed: a binary task's one class is named after the task."""
    if sample.class_names:
        return sample.class_names
    n_fg = sample.num_classes - 1
    return ["background", sample.task_id] if n_fg == 1 else [f"class_{c}" for c in range(n_fg + 1)]


def _case(s, source: PredictionSource) -> dict:
    """One row scored: per-class Dice / HD (worst case when the prediction is missing), HC error when known."""
    n_fg = s.num_classes - 1
    truth = read_mask(s.mask_path)
    pred, out_rel, pred_file = source.mask(s, truth)
    if pred is None:
        diag = M.image_diagonal(truth.shape)
        m = {"dice": [0.0] * n_fg, "hd": [diag] * n_fg}
        m["hd_mm"] = [diag * s.pixel_size_mm] * n_fg if s.pixel_size_mm else None
    else:
        m = M.segmentation_case_metrics(pred, truth, s.num_classes, s.pixel_size_mm)
    row = {
        "image_path": s.rel_image_path,
        "mask_path": s.rel_mask_path,
        "pred_mask_path": out_rel,
        "image_file": str(s.image_path),
        "mask_file": str(s.mask_path),
        "pred_file": pred_file,
        "missing": pred is None,
        "dice": float(np.mean(m["dice"])),
        "hd": float(np.mean(m["hd"])),
        "dice_per_class": [float(v) for v in m["dice"]],
        "hd_per_class": [float(v) for v in m["hd"]],
        "hd_mm": float(np.mean(m["hd_mm"])) if m["hd_mm"] else None,
        "hd_mm_per_class": [float(v) for v in m["hd_mm"]] if m["hd_mm"] else None,
    }
    hc_true = finite(s.extra.get("head_circumference_mm"))
    if hc_true is not None and s.pixel_size_mm:
        hc_pred = 0.0 if pred is None else mask_hc_mm(s, pred)
        row.update(hc_true_mm=hc_true, hc_pred_mm=float(hc_pred), hc_abs_err_mm=abs(float(hc_pred) - hc_true))
    return row


def mask_hc_mm(s, classes: np.ndarray) -> float:
    """Head circumference (mm) of an ``(H, W)`` class-id map of row ``s`` (which has a pixel size): the ellipse of
    its head class (:func:`head_class`; every foreground class where none is named), 0.0 for an empty one."""
    cls = head_class(s)
    head = classes == cls if cls is not None else classes > 0
    return float(head_circumference(head, s.pixel_size_mm) or 0.0)


def _summary(cases: list[dict], names: list[str], n_fg: int) -> dict:
    """Task metrics: macro means over classes of the per-class means over images."""
    dice_pc = [float(np.mean([c["dice_per_class"][k] for c in cases])) for k in range(n_fg)]
    hd_pc = [float(np.mean([c["hd_per_class"][k] for c in cases])) for k in range(n_fg)]
    metrics = {
        "dice": float(np.mean(dice_pc)),
        "hd": float(np.mean(hd_pc)),
        "dice_per_class": {str(names[k + 1]): dice_pc[k] for k in range(n_fg)},
        "hd_per_class": {str(names[k + 1]): hd_pc[k] for k in range(n_fg)},
    }
    if all(c["hd_mm_per_class"] for c in cases):
        hdmm_pc = [float(np.mean([c["hd_mm_per_class"][k] for c in cases])) for k in range(n_fg)]
        metrics["hd_mm"] = float(np.mean(hdmm_pc))
        metrics["hd_mm_per_class"] = {str(names[k + 1]): hdmm_pc[k] for k in range(n_fg)}
    hc = [c["hc_abs_err_mm"] for c in cases if "hc_abs_err_mm" in c]
    if hc:
        metrics["hc_abs_err_mm"] = float(np.mean(hc))
        metrics["hc_n"] = len(hc)
    return metrics


SEGMENTATION = Segmentation()
