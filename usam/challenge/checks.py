"""Checks shared by ``usam predict`` / ``usam evaluate`` that run before any expensive work.

- :func:`check_output_dir`: an output folder can be created (or is a folder) and written, without creating it;
- :func:`csv_rows`: how to name a CSV row in a message (``breast_lesion.csv row 3``);
- :func:`read_label_png`: a label PNG as ``(H, W)`` class ids, refusing colour images whose channels differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.fmc import first_task_id
from ..errors import DataError
from ..io.files import write_problem

__all__ = ["check_output_dir", "csv_names", "csv_rows", "read_label_png"]


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse an output folder that is a file, cannot be created or cannot be written. Creates nothing.

    The folder (or, when it does not exist yet, its nearest existing parent) must be a folder in which a
    file can be created: a probe file is created there and removed at once.

    Raises:
      DataError: one line naming the path and what is wrong.
    """
    p = Path(path)
    shown = str(p)
    if p.is_symlink() and not p.exists():
        raise DataError(f"{what} {shown!r} is a broken symbolic link: remove it or give another folder")
    if p.exists() and not p.is_dir():
        raise DataError(f"{what} {shown!r} exists and is not a folder: give a folder path (or remove the file)")
    problem = write_problem(p)
    if problem:
        raise DataError(f"{what} {shown!r} cannot be created or written: {problem}; give a writable folder")
    return p


def _csv_name(csv_dir: Path, task_id: str) -> str:
    if (csv_dir / f"{task_id}.csv").is_file():
        return f"{task_id}.csv"
    for p in sorted(csv_dir.glob("*.csv")):
        if first_task_id(p) == task_id:
            return p.name
    return f"the {task_id} CSV"


def csv_names(data_root: str | os.PathLike, split: dict) -> dict[str, str]:
    """``{task_id: file name of its CSV}`` (``"<task_id>.csv"`` as a rule)."""
    root = Path(data_root)
    csv_dir = root / "csv_files" if (root / "csv_files").is_dir() else root
    return {tid: _csv_name(csv_dir, tid) for tid in split}


def csv_rows(data_root: str | os.PathLike, split: dict) -> dict[tuple[str, str], str]:
    """``{(task_id, image_path as in the CSV): "<csv file> row <n>"}`` (``n`` counts data rows from 1, as the
    CSV reader's messages do). A path on several rows of one task is named by its first row."""
    names = csv_names(data_root, split)
    out: dict[tuple[str, str], str] = {}
    for tid, samples in split.items():
        for i, s in enumerate(samples, 1):
            out.setdefault((tid, s.rel_image_path), f"{names[tid]} row {i}")
    return out


def read_label_png(path: str | os.PathLike, what: str) -> np.ndarray:
    """A label image as an ``(H, W)`` int64 array of class ids.

    A colour (RGB / RGBA) image is accepted only when its colour channels are equal everywhere (a grey image
    saved as RGB); alpha is ignored. ``what`` names the file in messages.

    Raises:
      DataError: the file is empty, cannot be decoded ("... is unreadable ..."), or is a colour image whose
        channels differ.
    """
    import cv2

    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{what} is unreadable ({exc.strerror or exc})") from None
    if data.size == 0:
        raise DataError(f"{what} is unreadable: the file is empty (0 bytes)")
    try:
        mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        mask = None
    if mask is None:
        raise DataError(f"{what} is unreadable: not an image or corrupt (write a PNG of class ids)")
    if mask.ndim == 3:
        colour = mask[..., :3] if mask.shape[2] >= 3 else mask[..., :1]
        differ = (colour != colour[..., :1]).any(axis=2)
        if differ.any():
            y, x = (int(v) for v in np.argwhere(differ)[0])
            bgr = colour[y, x]
            rgb = tuple(int(v) for v in bgr[::-1])
            raise DataError(
                f"{what} is a colour image whose channels differ (pixel x={x}, y={y} is RGB {rgb}): write a "
                f"single-channel PNG whose values are class ids"
            )
        mask = colour[..., 0]
    return mask.astype(np.int64)
