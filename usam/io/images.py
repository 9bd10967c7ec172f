"""Reading and validating images.

Everything downstream works on one canonical form: a ``(H, W, 3)`` ``uint8`` RGB array.
:func:`read_image` reads a file; :func:`to_rgb_uint8` converts any array a user may hand in
(grey / RGB / RGBA, uint8 / uint16 / float) and rejects what cannot be an image.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputImageError, OutputError
from ..errors import short_repr as _short
from .files import write_files_atomic

#: Smallest side accepted: below this a SAM encoder sees nothing but padding.
MIN_SIDE = 8
#: Largest number of pixels accepted (about 16k x 16k): above this decoding alone needs gigabytes.
MAX_PIXELS = 256_000_000
#: Largest aspect ratio (long side / short side) accepted: the image is resized so its long side fits the
#: model input (256 px for LiteMedSAM), so at 32:1 its short side is already down to 8 px there.
MAX_ASPECT_RATIO = 32
#: Suffixes :func:`write_image` encodes (by suffix); masks are written only as PNG (lossless).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

cv2.setNumThreads(1)


def _describe(name: str | os.PathLike | None) -> str:
    return f"image {str(name)!r}" if name is not None else "image"


def to_rgb_uint8(image: np.ndarray, name: str | os.PathLike | None = None) -> np.ndarray:
    """Convert an image array to ``(H, W, 3)`` uint8 RGB.

    Args:
      image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array of uint8, uint16,
        another integer type, bool or float. Integer images are scaled by their type's range
        (uint16 by 65535 unless the values all fit 8 bits); float images in [0, 1] are scaled by 255,
        other float images are min-max scaled. RGBA drops alpha.
      name: shown in error messages.

    Raises:
      InputImageError: not an array, wrong number of dimensions or channels, too small, too large,
        empty, or containing NaN / inf.
    """
    what = _describe(name)
    if isinstance(image, (str, bytes, os.PathLike)):
        raise InputImageError(
            f"{what} is a path ({_short(image)}), not an array: pass a numpy array, or read the file with usam.io.read_image"
        )
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise InputImageError(f"{what} is not an array ({type(image).__name__}): pass a numpy array or a file path") from exc
    if image.dtype == object:
        raise InputImageError(f"{what} has unsupported dtype object: use uint8, uint16 or float")
    if image.size == 0:
        raise InputImageError(f"{what} is empty: it has shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputImageError(
            f"{what} has shape {image.shape}: expected (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputImageError(f"{what} is {w}x{h} pixels: both sides must be at least {MIN_SIDE} pixels")
    if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise InputImageError(
            f"{what} is {w}x{h} pixels, an aspect ratio of {max(h, w) / min(h, w):.0f}:1; at most {MAX_ASPECT_RATIO}:1 "
            "is accepted (its short side would shrink to a few pixels in the model input): crop it into tiles first"
        )
    if h * w > MAX_PIXELS:
        raise InputImageError(
            f"{what} is {w}x{h} pixels ({h * w / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it first"
        )
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint8:
        pass
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputImageError(f"{what} contains NaN or infinite values: clean or mask them before segmenting")
        lo, hi = float(image.min()), float(image.max())
        if lo >= 0.0 and hi <= 1.0:
            image = np.round(image * 255.0)
        elif lo >= 0.0 and hi <= 255.0 and hi > 1.0:
            image = np.round(image)
        else:
            image = (image - lo) / max(hi - lo, 1e-12) * 255.0
        image = image.astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 255:
            image = image.astype(np.uint8)
        elif lo >= 0 and image.dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64) and hi <= 65535:
            image = (image.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
        else:
            image = ((image.astype(np.float64) - lo) / max(hi - lo, 1) * 255.0).round().astype(np.uint8)
    else:
        raise InputImageError(f"{what} has unsupported dtype {image.dtype}: use uint8, uint16 or float")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def _check_header_size(p: Path) -> None:
    """Refuse files whose header announces more pixels than we accept, before decoding them."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise InputImageError(f"image file {str(p)!r} is too large to decode safely ({exc}): downscale it first") from exc
    except Exception:  # not something PIL knows: let OpenCV decide below
        return
    if w * h > MAX_PIXELS:
        raise InputImageError(
            f"image file {str(p)!r} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it first"
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, BMP, TIFF... 8 or 16 bit, grey / RGB / RGBA) as ``(H, W, 3)`` uint8 RGB.

    Raises:
      InputImageError: the file is missing, empty, not an image, corrupt, or fails :func:`to_rgb_uint8`.
    """
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"image file {str(p)!r} does not exist: check the path")
    if p.is_dir():
        raise InputImageError(f"image path {str(p)!r} is a directory, not an image file")
    size = p.stat().st_size
    if size == 0:
        raise InputImageError(f"image file {str(p)!r} is empty (0 bytes)")
    _check_header_size(p)
    data = np.fromfile(str(p), dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputImageError(f"image file {str(p)!r} could not be decoded ({exc.msg.strip() if hasattr(exc, 'msg') else exc}): it may be too large or corrupt") from exc
    if image is None:
        raise InputImageError(
            f"image file {str(p)!r} is not a readable image or is corrupt: use PNG, JPEG, BMP or TIFF"
        )
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(image, name=p)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as an ``(H, W)`` integer array of class ids (first channel if it has colour)."""
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"mask file {str(p)!r} does not exist")
    data = np.fromfile(str(p), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise InputImageError(f"mask file {str(p)!r} is not a readable image or is corrupt")
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask.astype(np.int64)


def encode_image(path: str | os.PathLike, image: np.ndarray, suffix: str) -> bytes:
    """The bytes of ``image`` (``(H, W)`` or ``(H, W, 3)`` RGB uint8) encoded as ``suffix`` (".png", ".jpg", ...)."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(suffix, arr)
    if not ok:  # pragma: no cover
        raise OutputError(f"could not encode {str(path)!r} as {suffix}")
    return buf.tobytes()


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an ``(H, W)`` or ``(H, W, 3)`` RGB uint8 array as PNG atomically (temp file + rename): nothing
    half-written is left. The bytes are PNG whatever the name says; see :func:`write_image` to encode by suffix."""
    p = Path(path)
    return write_files_atomic([(p, encode_image(p, image, ".png"))])[0]


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an ``(H, W)`` or ``(H, W, 3)`` RGB uint8 image atomically, encoded as its suffix says
    (one of :data:`IMAGE_SUFFIXES`; JPEG is lossy, so never use it for masks)."""
    p = Path(path)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"image file {str(p)!r} must end in {' / '.join(IMAGE_SUFFIXES)}")
    return write_files_atomic([(p, encode_image(p, image, p.suffix.lower()))])[0]
