"""Classification head: image embedding -> class logits."""

from __future__ import annotations

import torch
from torch import nn


class ClassifyHead(nn.Module):
    """``(B, C, h, w)`` embedding -> ``(B, K)`` logits.

    A 1x1 conv reduces channels, then average- and max-pooled features go through a small MLP.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.GroupNorm(8, hidden), nn.GELU(),
                                    nn.Conv2d(hidden, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.GELU())
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = self.reduce(embedding)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.mlp(pooled)
