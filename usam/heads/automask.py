"""Prompt-free multi-class segmentation through SAM's mask decoder.

Each foreground class ``c`` owns ``T`` learned prompt tokens; the decoder answers them like a prompt
and returns one mask per class. The class map takes the highest logit, background where all are < 0.
"""

from __future__ import annotations

import torch
from torch import nn


class AutoMaskHead(nn.Module):
    """Learned per-class prompt tokens ``(K - 1, T, C)`` for a task with ``K`` classes (0 = background)."""

    def __init__(self, num_classes: int, embed_dim: int = 256, tokens_per_class: int = 2):
        super().__init__()
        if num_classes < 2:
            raise ValueError("automatic segmentation needs at least 2 classes (background + 1)")
        self.tokens = nn.Parameter(torch.randn(num_classes - 1, tokens_per_class, embed_dim) * 0.1)

    @property
    def num_foreground(self) -> int:
        return self.tokens.shape[0]

    def forward(self, decoder, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, h, w)`` embeddings -> per-class low-res logits ``(B, K - 1, 256, 256)`` and IoU ``(B, K - 1)``.

        ``decoder`` has ``decode(embeddings, sparse_extra=...)`` (a backbone or a tuned decoder).
        """
        b, k = embeddings.shape[0], self.num_foreground
        emb = embeddings.repeat_interleave(k, dim=0)
        tokens = self.tokens.repeat(b, 1, 1)
        logits, iou = decoder.decode(emb, sparse_extra=tokens, multimask_output=False)
        return logits.view(b, k, *logits.shape[-2:]), iou.view(b, k)


def logits_to_classes(logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``(B, K - 1, H, W)`` per-class logits -> ``(B, H, W)`` class ids: the class of the largest logit where it is
    above ``threshold`` (SAM's ``mask_threshold``, 0.0 by default), else 0."""
    best, idx = logits.max(dim=1)
    return torch.where(best > threshold, idx + 1, torch.zeros_like(idx))
