"""Images into the demo: the bundled examples (credited, with their pixel size) and checked uploads."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import UsamError
from ...io import read_image

#: The demo refuses images above this many pixels (decoding and redrawing them at every click would crawl).
DEMO_MAX_PIXELS = 40_000_000
#: ... and files above this many bytes (also the server's upload limit).
DEMO_MAX_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Bundled examples: file name -> (pixel size in mm or None, source). See demo/examples/CREDITS.md.
EXAMPLE_INFO = {
    "hc18_130_HC.png": (0.114776629, "HC18 test image 130_HC (fetal head)"),
    "hc18_626_HC.png": (0.163426995, "HC18 test image 626_HC (fetal head)"),
    "psfhs_03781.png": (None, "PSFHS test image 03781 (pubic symphysis and fetal head)"),
}
EXAMPLES_CREDIT = (
    "Examples: **HC18** — van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. *Automated measurement of "
    "fetal head circumference using 2D ultrasound images.* PLoS ONE 13(8):e0200412 (2018), CC BY 4.0; "
    "**PSFHS** — Chen G. et al. *PSFHS: Intrapartum ultrasound image dataset for AI-based segmentation of pubic "
    "symphysis and fetal head.* Scientific Data 11:436 (2024), CC BY 4.0. Unmodified test-split images "
    "(see `demo/examples/CREDITS.md`)."
)


def default_examples_dir() -> Path | None:
    """``demo/examples`` of a source checkout, or ``None`` when it is not there (installed wheel)."""
    d = Path(__file__).resolve().parents[3] / "demo" / "examples"  # usam/apps/demo/upload.py -> repository root
    return d if d.is_dir() else None


def example_list(examples) -> list[Path]:
    """Example image paths from paths, a folder, ``[]`` (none) or ``None`` (the bundled ones)."""
    if examples is None:
        examples = default_examples_dir()
    if not examples:
        return []
    if isinstance(examples, (str, os.PathLike)):
        d = Path(examples)
        if d.is_dir():
            return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return [d]
    return [Path(p) for p in examples]


def example_pixel_size(examples: list[Path], path: Path, name: str) -> float | None:
    """The pixel size (mm) of a bundled example (same name and bytes as ``path``), else ``None``."""
    for ex in examples:
        if ex.name == name and name in EXAMPLE_INFO:
            try:
                if ex.stat().st_size == path.stat().st_size and ex.read_bytes() == path.read_bytes():
                    return EXAMPLE_INFO[name][0]
            except OSError:
                return None
    return None


def upload_path(file) -> tuple[Path, str]:
    """``(path on the server, name the user gave)`` of a Gradio upload, a path, or a file-like object."""
    path = Path(file if isinstance(file, (str, os.PathLike)) else getattr(file, "path", None) or getattr(file, "name", file))
    return path, Path(getattr(file, "orig_name", None) or path.name).name


@contextmanager
def named_for_user(path: Path, name: str):
    """Re-raise a :class:`~usam.errors.UsamError` raised inside with ``name`` (what the user uploaded) in place of
    ``path`` (the server's temporary copy)."""
    try:
        yield
    except UsamError as exc:
        raise type(exc)(str(exc).replace(repr(str(path)), f"'{name}'").replace(str(path), name)) from exc


def _header_notes(path: Path) -> list[str]:
    """Refuse a huge image from its header, before decoding it; notes on its bit depth / alpha channel."""
    notes: list[str] = []
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                mode = im.mode
                transparent = "transparency" in im.info
    except Exception as exc:
        if type(exc).__name__ == "DecompressionBombError":
            raise UsamError("the image is too large to decode safely: downscale it first") from exc
        return notes  # PIL does not know it: let read_image decide (TIFF variants, ...)
    if w * h > DEMO_MAX_PIXELS:
        raise UsamError(f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the demo's "
                        f"{DEMO_MAX_PIXELS / 1e6:.0f} MP limit: downscale it first")
    if mode.startswith("I;16") or mode in ("I", "F"):
        notes.append(f"a {'16-bit' if mode.startswith('I;16') or mode == 'I' else 'floating-point'} image: scaled to 8 bits for display and segmentation.")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and transparent):
        notes.append("the image has an alpha channel (transparency): it was dropped.")
    return notes


def read_upload(path: Path, name: str) -> tuple[np.ndarray, list[str]]:
    """Read an uploaded image as ``(H, W, 3)`` uint8 RGB with notes for the user; errors name ``name``, not the
    server's temporary copy. Raises :class:`~usam.errors.UsamError`."""
    if not path.is_file():
        raise UsamError(f"`{name}` is not a file")
    size = path.stat().st_size
    if size > DEMO_MAX_BYTES:
        raise UsamError(f"the file is {size / 2**20:.0f} MB, over the demo's {DEMO_MAX_BYTES / 2**20:.0f} MB limit: downscale or crop it first")
    notes = _header_notes(path)
    with named_for_user(path, name):
        image = read_image(path)
    if image.shape[0] * image.shape[1] > DEMO_MAX_PIXELS:
        raise UsamError(f"the image is {image.shape[1]}x{image.shape[0]} pixels, over the demo's {DEMO_MAX_PIXELS / 1e6:.0f} MP limit")
    return image, notes
