"""Ultrasound-appropriate augmentation, applied consistently to an image and its labels.

One random draw (:class:`AugmentParams`) is applied to

- ``image``: ``(H, W, 3)`` uint8 (``(H, W)`` also accepted), bilinear, black outside the field of view;
- ``mask``: ``(H, W)`` integer class ids, nearest neighbour, background (0) outside;
- ``box``: ``(4,)`` ``(x_min, y_min, x_max, y_max)`` pixels: the box around the 4 transformed corners, clipped
  to the image (it may become empty, ``x_max == x_min``, if the object leaves the image);
- ``points``: ``(N, 2)`` ``(x, y)`` pixels, transformed exactly and not clipped (they may leave the image).

Coordinates follow OpenCV: pixel centres at integer positions, so a horizontal flip maps ``x -> W - 1 - x``.

Transforms (each drawn with probability ``p``):

1. horizontal flip (only with ``flip=True``). A flip mirrors x only: the **order of points is unchanged**, so
   after a flip "point 1 = left end" no longer holds. Keep ``flip=False`` for tasks where left/right carries
   meaning (ordered keypoints, fetal position classes, cardiac chambers); see ``TaskSpec.hflip``;
2. small affine: rotation about the image centre, isotropic scale, translation (``cv2.warpAffine``);
3. brightness / contrast / gamma (gain and TGC changes between scanners);
4. speckle-like multiplicative noise ``I * (1 + n)``, ``n`` a slightly smoothed Gaussian field;
5. Gaussian blur (probe / resolution differences).

Intensity transforms touch the image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import DataError, InputImageError


#: default ``(min, max)`` zoom of :class:`Augment` (the training config's ``train.augment_scale`` default too)
DEFAULT_SCALE: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters; :meth:`identity` changes nothing.

    Attributes:
      flip: mirror horizontally (before the affine).
      angle: rotation in degrees, counter-clockwise on screen (``cv2.getRotationMatrix2D``).
      scale: isotropic zoom about the image centre.
      shift: ``(dx, dy)`` translation in pixels.
      brightness: additive offset as a fraction of 255.
      contrast: gain about the image mean.
      gamma: ``out = 255 * (in / 255) ** gamma``.
      speckle: standard deviation of the multiplicative noise (0 = none).
      blur_sigma: Gaussian blur sigma in pixels (0 = none).
      noise_seed: seed of the speckle field, so that applying the same params twice gives the same output.
    """

    flip: bool = False
    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    speckle: float = 0.0
    blur_sigma: float = 0.0
    noise_seed: int = 0

    @classmethod
    def identity(cls) -> "AugmentParams":
        return cls()

    @property
    def is_geometric_identity(self) -> bool:
        return not self.flip and self.angle == 0.0 and self.scale == 1.0 and tuple(self.shift) == (0.0, 0.0)

    def matrix(self, h: int, w: int) -> np.ndarray:
        """``(2, 3)`` float64 affine map from input to output pixel coordinates for an ``H x W`` image."""
        flip = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if self.flip else np.eye(3)
        rot = np.eye(3)
        rot[:2] = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(self.angle), float(self.scale))
        rot[0, 2] += self.shift[0]
        rot[1, 2] += self.shift[1]
        return (rot @ flip)[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(..., 2)`` ``(x, y)`` points; returns float64 of the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def transform_box(box, matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(4,)`` box -> box around its 4 transformed corners, clipped to ``[0, W-1] x [0, H-1]``; float64."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    corners = transform_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]), matrix)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    out = np.array([lo[0], lo[1], hi[0], hi[1]])
    out[[0, 2]] = np.clip(out[[0, 2]], 0.0, w - 1.0)
    out[[1, 3]] = np.clip(out[[1, 3]], 0.0, h - 1.0)
    return out


def _warp_mask(mask: np.ndarray, matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour warp that keeps class ids exact (OpenCV cannot warp int64 directly)."""
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    work = np.uint8 if lo >= 0 and hi < 256 else np.uint16 if lo >= 0 and hi < 65536 else np.float64
    out = cv2.warpAffine(
        mask.astype(work), matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return out.astype(mask.dtype)


def apply_augment(image: np.ndarray, mask=None, box=None, points=None, params: AugmentParams = AugmentParams()):
    """Apply ``params`` to an image and its labels.

    Args:
      image: ``(H, W, 3)`` or ``(H, W)`` uint8.
      mask: ``(H, W)`` integer class ids, or ``None``.
      box: ``(4,)`` xyxy pixels, or ``None``.
      points: ``(N, 2)`` xy pixels, or ``None``.

    Returns:
      ``(image, mask, box, points)``: same shapes and dtypes as given (``box`` and ``points`` as float64
      arrays), ``None`` where ``None`` was given. New arrays; the inputs are not modified.

    Raises:
      InputImageError: image not uint8 ``(H, W[, C])``.
      DataError: mask / box / points of the wrong shape.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputImageError(f"augmentation needs a (H, W, 3) uint8 image, got {desc}")
    h, w = image.shape[:2]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise DataError(f"mask shape {mask.shape} does not match the image's (H, W) = {(h, w)}")
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (4,):
            raise DataError(f"box must have shape (4,) (x_min, y_min, x_max, y_max), got {box.shape}")
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise DataError(f"points must have shape (N, 2) (x, y), got {points.shape}")

    image = image.copy()
    mask = None if mask is None else mask.copy()
    box = None if box is None else box.copy()
    points = None if points is None else points.copy()

    if not params.is_geometric_identity:
        m = params.matrix(h, w)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if mask is not None:
            mask = _warp_mask(mask, m, h, w)
        if box is not None:
            box = transform_box(box, m, h, w)
        if points is not None:
            points = transform_points(points, m)

    intensity = (params.brightness, params.contrast, params.gamma) != (0.0, 1.0, 1.0)
    if intensity or params.speckle > 0 or params.blur_sigma > 0:
        img = image.astype(np.float32)
        if intensity:
            mean = float(img.mean())
            img = (img - mean) * params.contrast + mean + params.brightness * 255.0
            img = 255.0 * (np.clip(img, 0.0, 255.0) / 255.0) ** params.gamma
        if params.speckle > 0:
            noise = np.random.default_rng(params.noise_seed).normal(0.0, params.speckle, (h, w)).astype(np.float32)
            noise = cv2.GaussianBlur(noise, (0, 0), 0.7)  # grains a little larger than one pixel
            noise *= params.speckle / max(float(noise.std()), 1e-6)  # restore the requested strength
            img = img * (1.0 + (noise[..., None] if img.ndim == 3 else noise))
        if params.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), params.blur_sigma)
        image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, mask, box, points


class Augment:
    """Random augmentation: draws :class:`AugmentParams` and applies them with :func:`apply_augment`.

    Example::

        aug = Augment(p=0.5, flip=spec.hflip, seed=0)
        image, mask, box, points = aug(image, mask=mask)     # labels not given come back as None

    Args:
      p: probability of each transform group (flip, affine, intensity, speckle, blur); 0 = identity.
      flip: allow horizontal flips (see the module docstring: point order is not changed by a flip).
      rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
      scale: ``(min, max)`` zoom.
      translate: maximum shift as a fraction of the width / height.
      brightness: maximum additive offset as a fraction of 255.
      contrast: ``(min, max)`` gain.
      gamma: ``(min, max)`` gamma, drawn log-uniformly.
      speckle: ``(min, max)`` std of the multiplicative noise.
      blur: ``(min, max)`` Gaussian sigma in pixels.
      seed: seed for a new ``numpy`` generator; ignored when ``rng`` is given.
      rng: a ``numpy.random.Generator`` to draw from.
    """

    def __init__(
        self,
        p: float = 0.5,
        flip: bool = True,
        rotate: float = 10.0,
        scale: tuple[float, float] = DEFAULT_SCALE,
        translate: float = 0.05,
        brightness: float = 0.1,
        contrast: tuple[float, float] = (0.8, 1.2),
        gamma: tuple[float, float] = (0.8, 1.25),
        speckle: tuple[float, float] = (0.03, 0.15),
        blur: tuple[float, float] = (0.3, 1.2),
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if min(scale) <= 0 or min(gamma) <= 0 or min(contrast) < 0:
            raise ValueError("scale and gamma must be positive, contrast non-negative")
        self.p, self.flip = float(p), bool(flip)
        self.rotate, self.scale, self.translate = float(rotate), tuple(scale), float(translate)
        self.brightness, self.contrast, self.gamma = float(brightness), tuple(contrast), tuple(gamma)
        self.speckle, self.blur = tuple(speckle), tuple(blur)
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    @classmethod
    def for_task(cls, spec, **kwargs) -> "Augment":
        """An :class:`Augment` with ``flip`` set from a :class:`~usam.tasks.spec.TaskSpec`'s ``hflip``."""
        kwargs.setdefault("flip", spec.hflip)
        return cls(**kwargs)

    def _hit(self) -> bool:
        return self.p > 0 and self.rng.random() < self.p

    def sample(self, h: int, w: int) -> AugmentParams:
        """Draw parameters for an ``H x W`` image."""
        r = self.rng
        kw: dict = {}
        if self.flip and self._hit():
            kw["flip"] = True
        if self._hit():
            kw["angle"] = float(r.uniform(-self.rotate, self.rotate))
            kw["scale"] = float(r.uniform(*self.scale))
            kw["shift"] = (float(r.uniform(-1, 1) * self.translate * w), float(r.uniform(-1, 1) * self.translate * h))
        if self._hit():
            kw["brightness"] = float(r.uniform(-self.brightness, self.brightness))
            kw["contrast"] = float(r.uniform(*self.contrast))
            kw["gamma"] = float(np.exp(r.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        if self._hit():
            kw["speckle"] = float(r.uniform(*self.speckle))
            kw["noise_seed"] = int(r.integers(2**31))
        if self._hit():
            kw["blur_sigma"] = float(r.uniform(*self.blur))
        return AugmentParams(**kw)

    def __call__(self, image: np.ndarray, mask=None, box=None, points=None):
        """Augment ``image`` and its labels with one random draw; returns ``(image, mask, box, points)``."""
        h, w = np.asarray(image).shape[:2]
        return apply_augment(image, mask, box, points, self.sample(h, w))


__all__ = ["DEFAULT_SCALE", "Augment", "AugmentParams", "apply_augment", "transform_box", "transform_points"]
