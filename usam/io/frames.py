"""One entry point for loops: :func:`read_frames` reads a video file, a DICOM file or a folder of frame images.

What a path is decides how it is read:

- a folder: its image files (:data:`~usam.io.images.IMAGE_SUFFIXES`, hidden files skipped) in natural name order
  (``2.png`` before ``10.png``), all one size;
- a DICOM file: by content (``DICM`` at byte 128) or by suffix (``.dcm``, ``.dicom``, ``.dic``), any number of frames;
- a video file: by suffix (:data:`~usam.io.video.VIDEO_SUFFIXES`);
- a still image: by suffix, as a loop of one frame;
- anything else is tried as an image, then as a video (FFmpeg probes the content).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputImageError
from .dicom import (
    check_frame_index,
    is_dicom,
    read_dicom,
    read_dicom_frame,
    read_dicom_spacing,
)
from .images import IMAGE_SUFFIXES
from .images import read_image as read_still_image
from .loop import MAX_LOOP_BYTES, Frames
from .video import VIDEO_SUFFIXES, read_video


def natural_key(name: str) -> list:
    """Sort key that orders the digit runs of a name as numbers: ``frame2.png`` < ``frame10.png``."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (not recursive; hidden files skipped) in natural name order."""
    p = Path(folder)
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda f: natural_key(f.name))


def read_folder(folder: str | os.PathLike) -> Frames:
    """Read a folder of frame images in natural name order.

    Returns:
      :class:`~usam.io.Frames` with ``frames`` ``(N, H, W, 3)`` uint8 RGB; ``spacing_mm`` and ``fps`` ``None``.

    Raises:
      InputImageError: no image files, an unreadable image (named), frames of different sizes, too large a loop.
    """
    p = Path(folder)
    files = frame_files(p)
    if not files:
        raise InputImageError(
            f"frame folder {str(p)!r} holds no image files ({' / '.join(IMAGE_SUFFIXES)}): give a folder of frames, a video or a DICOM"
        )
    frames: list[np.ndarray] = []
    for f in files:
        image = read_still_image(f)
        if frames and image.shape != frames[0].shape:
            raise InputImageError(
                f"frame {str(f)!r} is {image.shape[1]}x{image.shape[0]} but {str(files[0])!r} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}: every frame of a loop must be one size"
            )
        if (len(frames) + 1) * image.nbytes > MAX_LOOP_BYTES:
            raise InputImageError(
                f"frame folder {str(p)!r} holds more than {MAX_LOOP_BYTES / 2**30:.0f} GiB of frames ({len(files)} files): "
                "split or downscale the loop first"
            )
        frames.append(image)
    return Frames(frames=np.stack(frames), spacing_mm=None, fps=None, source=str(p))


def _looks_like_image(p: Path) -> bool:
    """Whether OpenCV recognises the file's signature as an image format (any suffix)."""
    import cv2

    try:
        return bool(cv2.haveImageReader(str(p)))
    except cv2.error:
        return False


def read_frames(path: str | os.PathLike) -> Frames:
    """Read a loop: a video file, a DICOM file (single- or multi-frame) or a folder of frame images (see the
    module docstring for how the kind is chosen). A still image is a loop of one frame.

    Returns:
      :class:`~usam.io.Frames`: ``frames`` ``(N, H, W, 3)`` uint8 RGB in time order, ``spacing_mm`` ``(x, y)`` mm
      from DICOM tags or ``None``, ``fps`` or ``None``, ``source`` the path.

    Raises:
      InputImageError: one line naming the file for anything that cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"loop {str(p)!r} does not exist: give a video file, a DICOM file or a folder of frames")
    if p.is_dir():
        return read_folder(p)
    if is_dicom(p):
        return read_dicom(p)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return read_video(p)
    if suffix in IMAGE_SUFFIXES or (p.stat().st_size > 0 and _looks_like_image(p)):
        return Frames(frames=read_still_image(p)[None], spacing_mm=None, fps=None, source=str(p))
    try:
        return read_video(p)
    except InputImageError as exc:
        raise InputImageError(
            f"{str(p)!r} is not a DICOM, video or image file that can be read ({exc}): give a video, a DICOM or a folder of frames"
        ) from exc


def read_spacing(path: str | os.PathLike) -> tuple[float, float] | None:
    """Pixel spacing ``(x, y)`` in mm recorded in a file's tags (DICOM only; pixel data is not decoded), else ``None``.
    A folder's spacing is that of its first DICOM file, if any; videos and PNG / JPEG / TIFF record none here."""
    p = Path(path)
    if p.is_dir():
        first = next((f for f in sorted(p.iterdir(), key=lambda f: natural_key(f.name)) if f.is_file() and is_dicom(f)), None)
        return read_dicom_spacing(first) if first is not None else None
    if p.is_file() and is_dicom(p):
        return read_dicom_spacing(p)
    if not p.exists():
        raise InputImageError(f"file {str(p)!r} does not exist: check the path")
    return None


def read_image(path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
    """Read an image file (PNG, JPEG, BMP, TIFF... 8 or 16 bit, grey / RGB / RGBA), or one frame of a DICOM
    (by content or ``.dcm`` suffix) or video file, as ``(H, W, 3)`` uint8 RGB. This is ``usam.io.read_image``;
    :func:`usam.io.images.read_image` reads still images only.

    Args:
      frame: 0-based frame index for a multi-frame DICOM or a video (required there: a file of several frames
        without it is an error saying how many it holds); ``None`` or 0 for a still image. See
        :func:`read_frames` for all frames.

    Raises:
      InputImageError: the file is missing, empty, not an image, corrupt, a frame index out of range, or fails
        :func:`~usam.io.images.to_rgb_uint8`.
    """
    p = Path(path)
    if p.is_file() and is_dicom(p):
        return read_dicom_frame(p, frame)
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        loop = read_video(p)
        if frame is None:
            if len(loop) > 1:
                raise InputImageError(
                    f"video file {str(p)!r} holds {len(loop)} frames: pick one with read_image(path, frame=K) "
                    f"(K in 0..{len(loop) - 1}) or read them all with usam.read_frames"
                )
            frame = 0
        return loop.frames[check_frame_index(frame, len(loop), p)]
    image = read_still_image(p)
    if frame is not None:
        check_frame_index(frame, 1, p)
    return image
