"""Spatial heads on the embedding grid: keypoints (heatmap + soft-argmax) and one box per image.

Coordinates are normalised to the *resized* image inside the model input, ``[0, 1]`` along x and y;
:class:`~usam.geometry.Geometry` maps them to original pixels.
"""

from __future__ import annotations

import torch
from torch import nn


def _trunk(in_channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.GELU(),
        nn.Conv2d(hidden, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.GELU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(hidden, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.GELU(),
    )


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(B, N, H, W)`` logits -> ``(B, N, 2)`` expected (x, y) in grid pixels (pixel centres at i + 0.5)."""
    b, n, h, w = heatmaps.shape
    prob = heatmaps.flatten(2).softmax(-1).view(b, n, h, w)
    xs = torch.arange(w, device=heatmaps.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(h, device=heatmaps.device, dtype=prob.dtype) + 0.5
    x = (prob.sum(2) * xs).sum(-1)
    y = (prob.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


class KeypointHead(nn.Module):
    """``(B, C, h, w)`` embedding -> ``(B, N, 2h, 2w)`` heatmap logits and ``(B, N, 2)`` coords in model-input pixels."""

    def __init__(self, num_points: int, in_channels: int = 256, hidden: int = 128, input_size: int = 256):
        super().__init__()
        self.trunk = _trunk(in_channels, hidden)
        self.out = nn.Conv2d(hidden, num_points, 1)
        self.input_size = input_size

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = self.out(self.trunk(embedding))
        coords = soft_argmax(heat) * (self.input_size / heat.shape[-1])
        return heat, coords


class DetectHead(nn.Module):
    """One box per image: ``(B, C, h, w)`` -> ``(B, 4)`` xyxy in model-input pixels.

    Two soft-argmax corner maps (top-left, bottom-right) plus a centre map give a box that stays
    inside the image by construction.
    """

    def __init__(self, in_channels: int = 256, hidden: int = 128, input_size: int = 256):
        super().__init__()
        self.trunk = _trunk(in_channels, hidden)
        self.out = nn.Conv2d(hidden, 2, 1)
        self.input_size = input_size

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        heat = self.out(self.trunk(embedding))
        corners = soft_argmax(heat) * (self.input_size / heat.shape[-1])  # (B, 2, 2)
        return corners.reshape(-1, 4)
