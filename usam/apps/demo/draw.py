"""What the demo draws and measures: prompts and masks on the image (the one palette, :mod:`usam.ops.overlay`),
measurements of a mask (the one measurement code, :mod:`usam.measure`), and the downloadable mask PNG.

Images are ``(H, W, 3)`` uint8 RGB, masks ``(H, W)`` bool, points ``(x, y)`` in original-image pixels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ...errors import UsamError
from ...io import to_rgb_uint8, write_png
from ...measure import draw_measurements, head_biometry, lesion_axes
from ...ops.overlay import BOX_RGB, overlay_mask
from .session import MEASURE_KINDS, MODES, Session

#: The interactive mask is drawn in the palette's class-2 colour (blue): apart from red negative clicks.
MASK_CLASS = 2
#: An empty mask: :func:`overlay_mask` then draws only the prompts given to it.
NO_MASK = np.zeros((1, 1), dtype=np.uint8)


def radius(shape) -> int:
    """Marker size for an image of ``shape`` (as :func:`overlay_mask` sizes its points)."""
    return max(3, round(max(shape[:2]) / 120))


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the interactive ``(H, W)`` mask blended in and outlined."""
    return overlay_mask(image, np.asarray(mask, dtype=np.uint8) * MASK_CLASS)


def draw_corner(image: np.ndarray, xy) -> None:
    """A cross at a first box corner (in the box colour), in place."""
    r = radius(image.shape)
    cv2.drawMarker(image, (int(round(xy[0])), int(round(xy[1]))), BOX_RGB, cv2.MARKER_CROSS, 4 * r, max(2, r // 2),
                   cv2.LINE_AA)


def draw_prompts(image: np.ndarray, session: Session, mask: np.ndarray | None = None) -> np.ndarray:
    """The overlay: ``mask``, the box, positive points green, negative red, a first box corner as a cross."""
    out = overlay_mask(image, NO_MASK if mask is None else np.asarray(mask, dtype=np.uint8) * MASK_CLASS,
                       points=session.points, labels=session.labels, box=session.box)
    if session.corner is not None:
        draw_corner(out, session.corner)
    return out


def draw_pending(image: np.ndarray, pending: Sequence[tuple]) -> np.ndarray:
    """``image`` with clicks ``[(x, y, mode)]`` recorded but not yet segmented: points as dots, box corners as
    crosses."""
    if not pending:
        return image
    clicks = [(x, y, m) for x, y, m in pending if m != MODES[2]]
    out = overlay_mask(image, NO_MASK, points=[(x, y) for x, y, _ in clicks],
                       labels=[0 if m == MODES[1] else 1 for _, _, m in clicks])
    for x, y, mode in pending:
        if mode == MODES[2]:
            draw_corner(out, (x, y))
    return out


def thumbnail(image: np.ndarray, side: int = 256) -> np.ndarray:
    """``image`` shrunk to at most ``side`` pixels a side (never enlarged)."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def mask_png(mask: np.ndarray, directory: Path, stem: str) -> str:
    """Write ``mask`` as a 0 / 255 PNG named by its content (once); returns the path."""
    digest = hashlib.sha1(np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (stem or "image"))[:60]
    path = directory / f"{safe}_mask_{digest}.png"
    if not path.exists():
        write_png(path, mask.astype(np.uint8) * 255)
    return str(path)


# ---------------------------------------------------------------------------------------------- measurements
def format_measurement(result: dict) -> str:
    """``HC **96.8 mm** · BPD **...**``: every length in mm of a :mod:`usam.measure` result."""
    parts = []
    for key, value in result.items():
        if key.endswith("_mm") and key != "pixel_size_mm" and isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value):
            parts.append(f"{key[:-3].upper()} **{float(value):.1f} mm**")
    return " · ".join(parts) or "no measurement"


def measure_mask(mask: np.ndarray, pixel_size: float, kind: str) -> tuple[dict | None, str]:
    """Measure an ``(H, W)`` mask as a head (``MEASURE_KINDS[0]`` or a kind naming a head) or a lesion;
    returns ``(result or None, Markdown line)``."""
    if not mask.any():
        return None, "the mask is empty"
    measure = head_biometry if kind == MEASURE_KINDS[0] or "head" in kind.lower() else lesion_axes
    try:
        result = measure(mask.astype(np.uint8), pixel_size)
    except UsamError as exc:
        return None, f"could not measure: {exc}"
    except Exception as exc:  # a measurement bug must not take the demo down
        return None, f"measurements unavailable ({type(exc).__name__}: {exc})"
    return result, format_measurement(result)


def draw_measurement(image: np.ndarray, result: dict | None) -> np.ndarray:
    """``image`` with a measurement drawn (unchanged for ``None`` or when drawing fails)."""
    if result is None:
        return image
    try:
        drawn = to_rgb_uint8(np.asarray(draw_measurements(image, result)))
        return drawn if drawn.shape == image.shape else image
    except Exception:  # a drawing bug must not take the demo down
        return image
