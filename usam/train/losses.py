"""Losses per task kind (shapes in docstrings); each returns a scalar tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss


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


def box_loss(pred: torch.Tensor, target: torch.Tensor, size: float) -> torch.Tensor:
    """L1 + GIoU between ``(B, 4)`` xyxy boxes in pixels (normalised by ``size`` for the L1 term)."""
    l1 = F.l1_loss(pred / size, target / size)
    x0 = torch.minimum(pred[:, 0], pred[:, 2])
    x1 = torch.maximum(pred[:, 0], pred[:, 2])
    y0 = torch.minimum(pred[:, 1], pred[:, 3])
    y1 = torch.maximum(pred[:, 1], pred[:, 3])
    ordered = torch.stack([x0, y0, x1 + 1e-3, y1 + 1e-3], dim=1)
    return l1 + generalized_box_iou_loss(ordered, target, reduction="mean")


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, size: float) -> torch.Tensor:
    """Mean Euclidean distance between ``(B, N, 2)`` points, normalised by ``size``."""
    return ((pred - target) / size).norm(dim=-1).mean()
