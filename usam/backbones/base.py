"""The one interface every SAM-family backbone implements.

A backbone owns a frozen image encoder and SAM's prompt encoder + mask decoder:

``image (H, W, 3) uint8 -> preprocess -> (1, 3, S, S) + Geometry -> encode -> (B, 256, 64, 64) embedding``
``embedding + prompts (model-input pixels) -> decode -> low-res logits (B, M, 256, 256), IoU scores (B, M)``
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..geometry import Geometry

#: Side of the low-resolution mask logits every SAM mask decoder returns.
LOW_RES = 256


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Checksum of a state dict's names, shapes and values (for weights that have no file)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class Backbone(nn.Module):
    """Base class: subclasses set the modules and sizes and implement :meth:`preprocess`.

    Attributes:
      name: registry name, e.g. ``"litemedsam"`` or ``"hf:/path/to/medsam"``.
      input_size: ``S``, side of the square model input.
      embedding_shape: ``(C, h, w)`` of one image embedding, e.g. ``(256, 64, 64)``.
      source: where the weights came from (path, package asset, or ``"random init"``).
      checksum: SHA-256 of the weights (file or state dict): adapters record it to refuse a mismatch.
      image_encoder: the frozen encoder; LoRA adapters are injected into it.
    """

    name: str = "backbone"
    input_size: int = 1024
    embedding_shape: tuple[int, int, int] = (256, 64, 64)
    source: str = "random init"
    checksum: str = ""
    image_encoder: nn.Module

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, S, S)`` float model input and its :class:`Geometry`."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> image embedding ``(B, C, h, w)``."""
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 fast path: a channels-last input runs the convolutions on oneDNN's fast bf16 kernels (same values)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.image_encoder(x)

    def decode(
        self,
        embeddings: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        sparse_extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompted masks from image embeddings.

        Args:
          embeddings: ``(B, C, h, w)``, or ``(1, C, h, w)`` shared by all ``P`` prompt sets.
          points: ``coords (P, N, 2)`` in model-input pixels (x, y) and ``labels (P, N)``
            (1 positive, 0 negative, -1 padding).
          boxes: ``(P, 4)`` xyxy in model-input pixels.
          mask_input: ``(P, 1, 256, 256)`` low-res logits from a previous prediction.
          multimask_output: three candidate masks (True) or one (False).
          sparse_extra: ``(P, T, C)`` extra sparse prompt tokens appended after the prompts
            (learned class tokens of automatic segmentation).

        Returns:
          low-res logits ``(P, M, 256, 256)`` and predicted IoU ``(P, M)``, ``M`` = 3 or 1.
        """
        raise NotImplementedError

    def describe(self) -> dict:
        n = sum(p.numel() for p in self.parameters())
        enc = sum(p.numel() for p in self.image_encoder.parameters())
        return {
            "name": self.name,
            "input_size": self.input_size,
            "embedding_shape": list(self.embedding_shape),
            "parameters": n,
            "encoder_parameters": enc,
            "source": self.source,
            "checksum": self.checksum,
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
