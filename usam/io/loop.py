"""A loop of frames read from a video, a DICOM or a folder of images (:class:`Frames`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest loop accepted, in bytes of decoded ``(N, H, W, 3)`` uint8 RGB (4 GiB: ~1,000 frames of 1080p).
MAX_LOOP_BYTES = 4 * 2**30


@dataclass(frozen=True, eq=False)
class Frames:
    """Frames of one loop, in time order.

    Attributes:
      frames: ``(N, H, W, 3)`` uint8 RGB, N >= 1; every frame has the same size.
      spacing_mm: pixel spacing ``(x, y)`` in mm from the file's tags, ``None`` when it records none.
      fps: frames per second, ``None`` when unknown (a folder of images, a DICOM without timing tags).
      source: the path read.
    """

    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    fps: float | None
    source: str

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, index) -> np.ndarray:
        return self.frames[index]

    def __iter__(self):
        return iter(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of every frame in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    @property
    def pixel_size_mm(self) -> float | None:
        """The isotropic pixel size in mm (the mean of x and y spacing; see :func:`isotropic_pixel_size`)."""
        return isotropic_pixel_size(self.spacing_mm)


#: Largest relative difference between x and y spacing still treated as square pixels.
ISOTROPY_TOLERANCE = 0.02


def isotropic_pixel_size(spacing_mm: tuple[float, float] | None) -> float | None:
    """One pixel size in mm for measurements that assume square pixels: the mean of ``(x, y)`` spacing when they
    agree within :data:`ISOTROPY_TOLERANCE`, ``None`` when ``spacing_mm`` is ``None``.

    Raises:
      ValueError: x and y spacing differ by more than the tolerance (a length in mm would depend on direction).
    """
    if spacing_mm is None:
        return None
    x, y = float(spacing_mm[0]), float(spacing_mm[1])
    if abs(x - y) > ISOTROPY_TOLERANCE * max(x, y):
        raise ValueError(
            f"pixel spacing is not square (x {x:g} mm, y {y:g} mm): lengths in mm would depend on direction; "
            "resample the image to square pixels or give one pixel size explicitly"
        )
    return (x + y) / 2.0
