"""Coordinate maps between original-image pixels and a backbone's square model input.

SAM-family encoders take a square ``S x S`` input: the image is resized so its longest side is ``S``
(keeping the aspect ratio) and zero-padded at the bottom / right. :class:`Geometry` records that map
and moves points, boxes and masks both ways. Conventions follow ``segment_anything``:
coordinates are ``(x, y)`` in pixels, scaled by ``new / old`` along each axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputImageError


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` after resizing so the longest side is ``long_side`` (segment-anything's rounding)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


@dataclass(frozen=True)
class Geometry:
    """How one image maps onto the model input.

    Attributes:
      original_hw: ``(H, W)`` of the image the user gave.
      resized_hw: ``(h, w)`` of the image inside the model input, before padding.
      input_size: ``S``, side of the square model input.
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int

    @classmethod
    def for_image(cls, h: int, w: int, input_size: int) -> "Geometry":
        resized = preprocess_shape(h, w, input_size)
        if min(resized) < 1:
            raise InputImageError(
                f"image is {w}x{h} pixels: too elongated for the {input_size} px model input (its short side would "
                f"shrink to {min(resized)} px): crop it into tiles first"
            )
        return cls((int(h), int(w)), resized, int(input_size))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """``(sx, sy)``: input pixels per original pixel along x and y."""
        return self.resized_hw[1] / self.original_hw[1], self.resized_hw[0] / self.original_hw[0]

    def points_to_input(self, points: np.ndarray | torch.Tensor):
        """``(..., 2)`` original (x, y) -> model-input (x, y)."""
        sx, sy = self.scale_xy
        if isinstance(points, torch.Tensor):
            out = points.clone().float()
        else:
            out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] * sx
        out[..., 1] = out[..., 1] * sy
        return out

    def points_to_original(self, points: np.ndarray | torch.Tensor):
        """``(..., 2)`` model-input (x, y) -> original (x, y)."""
        sx, sy = self.scale_xy
        out = points.clone().float() if isinstance(points, torch.Tensor) else np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] / sx
        out[..., 1] = out[..., 1] / sy
        return out

    def boxes_to_input(self, boxes):
        """``(..., 4)`` original xyxy -> model-input xyxy."""
        shape = boxes.shape
        return self.points_to_input(boxes.reshape(*shape[:-1], 2, 2)).reshape(shape)

    def boxes_to_original(self, boxes):
        """``(..., 4)`` model-input xyxy -> original xyxy."""
        shape = boxes.shape
        return self.points_to_original(boxes.reshape(*shape[:-1], 2, 2)).reshape(shape)

    def masks_to_original(self, masks: torch.Tensor) -> torch.Tensor:
        """Model-space masks / logits ``(B, C, h, w)`` (any square size, e.g. the 256x256 low-res output)
        -> ``(B, C, H, W)`` at the original resolution: upsample to ``S``, drop padding, resize."""
        s = self.input_size
        x = masks
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        x = x[..., : self.resized_hw[0], : self.resized_hw[1]]
        if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and x.numel():
            return _resize_bilinear_cpu(x, self.original_hw)
        return F.interpolate(x, self.original_hw, mode="bilinear", align_corners=False)

    def mask_to_input(self, mask: torch.Tensor | np.ndarray, size: int | None = None) -> torch.Tensor:
        """Original ``(..., H, W)`` mask -> model-space ``(..., size, size)`` (padding zero), float.

        Used to feed a previous mask back as ``mask_input`` (size 256) and to build training targets.
        """
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float()
        lead = t.shape[:-2]
        t = t.reshape(-1, 1, *t.shape[-2:])
        size = size or self.input_size
        rh = round(self.resized_hw[0] * size / self.input_size)
        rw = round(self.resized_hw[1] * size / self.input_size)
        t = F.interpolate(t, (rh, rw), mode="bilinear", align_corners=False)
        t = F.pad(t, (0, size - rw, 0, size - rh))
        return t.reshape(*lead, size, size)


def _resize_bilinear_cpu(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, hw, mode="bilinear", align_corners=False)`` of a CPU float32 ``(..., h, w)`` tensor by
    OpenCV, plane by plane (same sampling, float rounding apart; 2-4x faster: the prompt path pays it every click)."""
    planes = x.reshape(-1, *x.shape[-2:]).numpy()
    out = np.empty((planes.shape[0], *hw), np.float32)
    for src, dst in zip(planes, out):
        cv2.resize(src, (hw[1], hw[0]), dst=dst, interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(out).reshape(*x.shape[:-2], *hw)
