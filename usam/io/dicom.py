"""Reading DICOM files (pydicom): frames as ``(H, W, 3)`` uint8 RGB, pixel spacing in mm and frame rate from tags.

- Single- and multi-frame; ``MONOCHROME2`` as is, ``MONOCHROME1`` inverted; ``RGB`` as is; ``YBR_FULL`` /
  ``YBR_FULL_422`` / ``YBR_ICT`` / ``YBR_RCT`` converted to RGB; ``PALETTE COLOR`` through its colour LUT.
- Greyscale stored in more than 8 bits (or signed, or float): modality LUT (rescale), then the VOI LUT or the
  first window (centre / width) when the file has one, else a min-max over all frames (one scale for the whole
  loop, so frames do not flicker). 8-bit unsigned data is taken as it is.
- Compressed transfer syntaxes: whatever pydicom's decoders can handle here (RLE and Deflate natively; JPEG,
  JPEG-LS and JPEG 2000 with ``pylibjpeg`` + ``pylibjpeg-libjpeg`` / ``pylibjpeg-openjpeg``, installed with usam).
- Pixel spacing ``(x, y)`` in mm from the ultrasound region of ``SequenceOfUltrasoundRegions`` (physical units cm,
  code 3), else ``PixelSpacing`` (also in an enhanced file's shared functional groups), else
  ``ImagerPixelSpacing``; ``None`` when the file has none.

Every failure raises :class:`~usam.errors.InputImageError` with one line naming the file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputImageError
from .images import MAX_PIXELS, to_rgb_uint8
from .loop import MAX_LOOP_BYTES, Frames

#: Suffixes taken as DICOM even without the ``DICM`` preamble.
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

#: ``PhysicalUnitsXDirection`` / ``PhysicalUnitsYDirection`` code for centimetres.
_UNITS_CM = 3

#: Packages that decode each family of compressed transfer syntaxes (pydicom names its own plugins too).
_DECODER_PACKAGES = {
    "JPEG 2000": "pylibjpeg pylibjpeg-openjpeg",
    "JPEG-LS": "pylibjpeg pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pylibjpeg pylibjpeg-rle",
    "HTJ2K": "pylibjpeg pylibjpeg-openjpeg",
}


#: Transfer syntaxes that hold a video stream (MPEG-2, H.264, HEVC) rather than images.
_VIDEO_SYNTAXES = ("MPEG", "HEVC", "H.265")


def _name(path: str | os.PathLike) -> str:
    return f"DICOM file {str(path)!r}"


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """``True`` when the file carries the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: str | os.PathLike) -> bool:
    """``True`` for a file with the ``DICM`` preamble or a DICOM suffix (``.dcm``, ``.dicom``, ``.dic``)."""
    p = Path(path)
    return p.suffix.lower() in DICOM_SUFFIXES or (p.is_file() and has_dicom_preamble(p))


def _read_dataset(path: Path, stop_before_pixels: bool = False):
    """Parse the file's tags; pixel data stays encoded."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.exists():
        raise InputImageError(f"{_name(path)} does not exist: check the path")
    if path.is_dir():
        raise InputImageError(f"DICOM path {str(path)!r} is a directory, not a file")
    if path.stat().st_size == 0:
        raise InputImageError(f"{_name(path)} is empty (0 bytes)")
    try:
        # force=True reads files written without the 128-byte preamble; a non-DICOM file fails below.
        ds = pydicom.dcmread(str(path), force=not has_dicom_preamble(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise InputImageError(f"{str(path)!r} is not a DICOM file ({exc}): give a DICOM, video or image file") from exc
    except Exception as exc:  # truncated / malformed element structure
        raise InputImageError(f"{_name(path)} is corrupt or truncated and cannot be parsed ({type(exc).__name__}: {exc})") from exc
    if "SOPClassUID" not in ds and "PixelData" not in ds and "Rows" not in ds and not has_dicom_preamble(path):
        raise InputImageError(f"{str(path)!r} is not a DICOM file (no DICOM header found): give a DICOM, video or image file")
    return ds


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def _check_pixels_present(ds, path: Path) -> None:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = getattr(ds, "SOPClassUID", None)
        what = f" (SOP class {kind.name})" if kind is not None and hasattr(kind, "name") else ""
        raise InputImageError(f"{_name(path)} has no pixel data{what}: it holds no image to read")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise InputImageError(f"{_name(path)} has pixel data but no valid Rows / Columns ({rows} x {cols})")
    if rows * cols > MAX_PIXELS:
        raise InputImageError(
            f"{_name(path)} is {cols}x{rows} pixels ({rows * cols / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it first"
        )


def number_of_frames(ds) -> int:
    """The number of frames a dataset holds (``NumberOfFrames``, 1 when absent)."""
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _decode(ds, path: Path, index: int | None) -> np.ndarray:
    """Decoded pixels: ``(rows, cols[, samples])`` for one frame, ``(frames, rows, cols[, samples])`` for all
    frames of a multi-frame file (one frame too when it holds one). YBR is converted to RGB."""
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(ds, index=index)
    except Exception as exc:
        ts = _transfer_syntax(ds)
        ts_name = getattr(ts, "name", str(ts)) if ts is not None else "unknown"
        text = " ".join(str(exc).split())
        short = re.search(r"less than expected \((\d+) vs (\d+) bytes\)", text)
        if short:
            raise InputImageError(
                f"{_name(path)} is truncated or corrupt: its pixel data holds {short[1]} of the {short[2]} bytes "
                "its tags (rows, columns, frames, bits) announce"
            ) from exc
        if ts is not None and any(k in ts_name for k in _VIDEO_SYNTAXES):
            raise InputImageError(
                f"{_name(path)} holds its frames as {ts_name!r} video, which usam does not decode inside DICOM: export the "
                "loop as MP4 (usam reads video files) or convert the DICOM to an uncompressed / JPEG transfer syntax"
            ) from exc
        missing = ("plugin" in text.lower() or "missing" in text.lower() or "not supported" in text.lower()
                   or "no pixel data decoders" in text.lower() or isinstance(exc, NotImplementedError))
        if missing and ts is not None and getattr(ts, "is_compressed", False):
            pkgs = next((v for k, v in _DECODER_PACKAGES.items() if k in ts_name), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
            raise InputImageError(
                f"{_name(path)} is compressed as {ts_name!r}, which no installed decoder handles: "
                f"pip install {pkgs} (or python-gdcm) and try again"
            ) from exc
        raise InputImageError(
            f"{_name(path)} pixel data could not be decoded ({ts_name}; {type(exc).__name__}: {text[:300]}): the file may be corrupt or truncated"
        ) from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    single = index is not None or number_of_frames(ds) == 1
    want = (2 if samples == 1 else 3) + (0 if single else 1)
    if arr.ndim != want:
        raise InputImageError(
            f"{_name(path)} decoded to an array of shape {arr.shape}, not the {want}-D frames its tags describe: the file may be corrupt"
        )
    return arr


def _window(arr: np.ndarray, ds, path: Path) -> np.ndarray | None:
    """``arr`` (after the modality LUT) through the file's VOI LUT or first window, as floats in [0, 1];
    ``None`` when the file has neither."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        item = ds.VOILUTSequence[0]
        try:
            out = apply_voi_lut(arr, ds, index=0, prefer_lut=True).astype(np.float64)
            top = float(np.max(np.asarray(item.LUTData, dtype=np.float64)))
        except Exception as exc:
            raise InputImageError(f"{_name(path)} has a VOI LUT that cannot be applied ({type(exc).__name__}: {exc})") from exc
        return np.clip(out / max(top, 1.0), 0.0, 1.0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = ds.WindowCenter, ds.WindowWidth
        centre = float(centre[0] if hasattr(centre, "__len__") and not isinstance(centre, str) else centre)
        width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        x = arr.astype(np.float64)
        if function == "SIGMOID" and width > 0:
            return 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
        if function == "LINEAR_EXACT" and width > 0:
            return np.clip((x - (centre - width / 2.0)) / width, 0.0, 1.0)
        if width >= 1.0:  # LINEAR (DICOM PS3.3 C.11.2.1.2.1)
            return np.clip((x - (centre - 0.5)) / max(width - 1.0, 1e-12) + 0.5, 0.0, 1.0)
    return None


def _grey_to_uint8(arr: np.ndarray, ds, path: Path, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Greyscale stored values -> uint8 display values (see the module docstring); ``MONOCHROME1`` inverted.

    Args:
      arr: ``(..., H, W)`` stored values.
      value_range: ``(lo, hi)`` for the min-max fallback (the whole loop's range); ``arr``'s own when ``None``.
    """
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", 8) or 8)
    if arr.dtype == np.uint8 or (np.issubdtype(arr.dtype, np.unsignedinteger) and bits <= 8):
        out = arr.astype(np.uint8)
    else:
        try:
            values = apply_modality_lut(arr, ds)
        except Exception:  # a broken rescale / LUT: use the stored values
            values = arr
        unit = _window(values, ds, path)
        if unit is None:
            values = values.astype(np.float64)
            if not np.isfinite(values).all():
                raise InputImageError(f"{_name(path)} pixel data contains NaN or infinite values")
            lo, hi = value_range if value_range is not None else (float(values.min()), float(values.max()))
            unit = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        out = np.round(unit * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        out = 255 - out
    return out


def _needs_range(ds) -> bool:
    """Whether greyscale conversion falls back to a min-max over the data (no window, more than 8 bits)."""
    bits = int(ds.get("BitsStored", 8) or 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    has_window = ("VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0) or ("WindowCenter" in ds and "WindowWidth" in ds)
    return (bits > 8 or signed or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds) and not has_window


def _to_display(arr: np.ndarray, ds, path: Path, value_range=None) -> np.ndarray:
    """Decoded frame(s) ``(..., H, W[, 3])`` -> uint8 ``(..., H, W)`` grey or ``(..., H, W, 3)`` RGB."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as exc:
            raise InputImageError(f"{_name(path)} has a palette colour LUT that cannot be applied ({type(exc).__name__}: {exc})") from exc
        top = 255.0 if rgb.dtype == np.uint8 else float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
        return np.round(rgb.astype(np.float64) / top * 255.0).clip(0, 255).astype(np.uint8)
    if samples == 1:
        return _grey_to_uint8(arr, ds, path, value_range)
    if samples != 3:
        raise InputImageError(f"{_name(path)} has {samples} samples per pixel: only 1 (grey) or 3 (colour) are supported")
    if arr.dtype == np.uint8:
        return arr
    bits = int(ds.get("BitsStored", 8) or 8)  # colour stored in > 8 bits: scale by the stored range
    return np.round(arr.astype(np.float64) / float(2**bits - 1) * 255.0).clip(0, 255).astype(np.uint8)


def _frame_name(path: Path, i: int, n: int) -> str:
    return f"{path} frame {i}" if n > 1 else str(path)


def _check_loop_size(ds, path: Path, n: int) -> None:
    rows, cols = int(ds.Rows), int(ds.Columns)
    if n * rows * cols * 3 > MAX_LOOP_BYTES:
        raise InputImageError(
            f"{_name(path)} holds {n} frames of {cols}x{rows}, {n * rows * cols * 3 / 2**30:.1f} GiB as RGB, over the "
            f"{MAX_LOOP_BYTES / 2**30:.0f} GiB limit: read single frames with read_image(path, frame=K) or trim the loop"
        )


def read_dicom(path: str | os.PathLike) -> Frames:
    """Read every frame of a DICOM file.

    Returns:
      :class:`~usam.io.Frames` with ``frames`` ``(N, H, W, 3)`` uint8 RGB (N = 1 for a single-frame file),
      ``spacing_mm`` ``(x, y)`` or ``None``, ``fps`` or ``None``, ``source`` the path.

    Raises:
      InputImageError: not DICOM, corrupt / truncated, no pixel data, no decoder for its compression, too large.
    """
    p = Path(path)
    ds = _read_dataset(p)
    _check_pixels_present(ds, p)
    n = number_of_frames(ds)
    _check_loop_size(ds, p, n)
    arr = _decode(ds, p, None)
    if n == 1:
        arr = arr[None]
    shown = _to_display(arr, ds, p)
    frames = np.stack([to_rgb_uint8(f, name=_frame_name(p, i, n)) for i, f in enumerate(shown)])
    return Frames(frames=frames, spacing_mm=spacing_from_dataset(ds), fps=fps_from_dataset(ds), source=str(p))


def read_dicom_frame(path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
    """One frame of a DICOM file as ``(H, W, 3)`` uint8 RGB; only that frame is decoded where the data allows.

    Args:
      frame: 0-based frame index; may be omitted for a single-frame file. A multi-frame file without ``frame``
        is an error that says how many frames it holds.
    """
    p = Path(path)
    ds = _read_dataset(p)
    _check_pixels_present(ds, p)
    n = number_of_frames(ds)
    if frame is None:
        if n > 1:
            raise InputImageError(
                f"{_name(p)} holds {n} frames: pick one with read_image(path, frame=K) (K in 0..{n - 1}) "
                "or read them all with usam.read_frames"
            )
        frame = 0
    check_frame_index(frame, n, p)
    if n > 1 and int(ds.get("SamplesPerPixel", 1) or 1) == 1 and _needs_range(ds):
        _check_loop_size(ds, p, n)  # one min-max over the loop, as read_dicom does
        return read_dicom(p).frames[frame]
    arr = _decode(ds, p, frame if n > 1 else None)
    return to_rgb_uint8(_to_display(arr, ds, p), name=_frame_name(p, frame, n))


def check_frame_index(frame, n: int, path: str | os.PathLike) -> int:
    """``frame`` as an int in ``0..n-1``; :class:`InputImageError` naming the file and ``n`` otherwise
    (negative indices are refused: frame numbers in usam are 0-based and absolute)."""
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise InputImageError(f"frame index {frame!r} for {str(path)!r} must be an integer (0-based)")
    if not 0 <= int(frame) < n:
        raise InputImageError(
            f"frame {int(frame)} is out of range for {str(path)!r}, which holds {n} frame{'s' if n != 1 else ''} (0..{n - 1})"
        )
    return int(frame)


def _positive(value) -> float | None:
    try:
        v = abs(float(value))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _region_spacing(ds) -> tuple[float, float] | None:
    """``(x, y)`` mm of the ultrasound region in cm holding the image centre (the largest such), else the largest."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    cx, cy = cols / 2.0, rows / 2.0
    found = []
    for r in regions:
        if int(r.get("PhysicalUnitsXDirection", 0) or 0) != _UNITS_CM or int(r.get("PhysicalUnitsYDirection", 0) or 0) != _UNITS_CM:
            continue
        dx, dy = _positive(r.get("PhysicalDeltaX")), _positive(r.get("PhysicalDeltaY"))
        if dx is None or dy is None:
            continue
        x0, y0 = float(r.get("RegionLocationMinX0", 0) or 0), float(r.get("RegionLocationMinY0", 0) or 0)
        x1, y1 = float(r.get("RegionLocationMaxX1", cols) or cols), float(r.get("RegionLocationMaxY1", rows) or rows)
        area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
        centre = x0 <= cx <= x1 and y0 <= cy <= y1
        found.append((centre, area, (dx * 10.0, dy * 10.0)))
    if not found:
        return None
    return max(found, key=lambda f: (f[0], f[1]))[2]


def _pair_spacing(value) -> tuple[float, float] | None:
    """A DICOM ``(row, column)`` spacing pair -> ``(x, y)`` mm."""
    try:
        row, col = _positive(value[0]), _positive(value[1])
    except (TypeError, IndexError, KeyError):
        return None
    return (col, row) if row is not None and col is not None else None


def spacing_from_dataset(ds) -> tuple[float, float] | None:
    """Pixel spacing ``(x, y)`` in mm from a dataset's tags (see the module docstring), or ``None``."""
    spacing = _region_spacing(ds)
    if spacing is None and "PixelSpacing" in ds:
        spacing = _pair_spacing(ds.PixelSpacing)
    if spacing is None:
        try:
            spacing = _pair_spacing(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
        except (AttributeError, IndexError, KeyError, TypeError):
            spacing = None
    if spacing is None and "ImagerPixelSpacing" in ds:
        spacing = _pair_spacing(ds.ImagerPixelSpacing)
    return None if spacing is None else (float(spacing[0]), float(spacing[1]))


def fps_from_dataset(ds) -> float | None:
    """Frames per second from ``FrameTime`` (ms), else ``CineRate``, else ``RecommendedDisplayFrameRate``."""
    frame_time = _positive(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time
    for tag in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds.get(tag))
        if rate is not None:
            return rate
    return None


def read_dicom_spacing(path: str | os.PathLike) -> tuple[float, float] | None:
    """Pixel spacing ``(x, y)`` in mm from a DICOM file's tags (pixel data is not read), or ``None``."""
    p = Path(path)
    return spacing_from_dataset(_read_dataset(p, stop_before_pixels=True))
