"""Writing files safely: strict JSON, output-path checks, atomic (all-or-nothing) writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OutputError


def json_safe(obj):
    """``obj`` made valid for strict JSON: NaN / inf -> ``None`` (JSON ``null``), numpy scalars and arrays -> Python
    numbers and lists, tuples / sets -> lists, paths -> strings, dict keys -> strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def dumps_json(obj, **kwargs) -> str:
    """``json.dumps`` that always writes valid JSON: NaN / inf become ``null`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def existing_folder(path: str | os.PathLike) -> Path:
    """The folder ``path`` would be created in: its nearest existing ancestor (``path`` itself when it exists)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    return folder


def write_problem(folder: str | os.PathLike) -> str | None:
    """Why no file can be created in ``folder`` or, where it does not exist yet, in its nearest existing parent
    (``None`` when one can): that must be a folder, and a probe file is created there and removed at once. Unlike
    ``os.access`` this sees read-only mounts, ``/proc`` and the like, also as root."""
    folder = existing_folder(folder)
    if not folder.is_dir():
        return f"{str(folder)!r} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".usam_write_test_", dir=folder)
    except OSError as exc:
        return f"folder {str(folder)!r} is not writable ({exc.strerror or type(exc).__name__})"
    os.close(fd)
    os.unlink(probe)
    return None


def check_output_path(path: str | os.PathLike, what: str = "output", suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a directory, a suffix in ``suffixes``
    (when given), and its folder exists as a writable folder or can be created. Raises :class:`OutputError`."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{what} {str(p)!r} is a directory: give a file path")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f"{what} {str(p)!r} must end in {' / '.join(suffixes)} (got {p.suffix or 'no suffix'!r})")
    if p.exists() and not p.is_file():
        raise OutputError(f"{what} {str(p)!r} exists and is not a regular file")
    problem = write_problem(p.parent)
    if problem:
        raise OutputError(f"{what} {str(p)!r} cannot be written: {problem}")
    return p


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (temp file, fsync, rename): readers never see a partial file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def write_files_atomic(items: list[tuple[str | os.PathLike, bytes]]) -> list[Path]:
    """Write several files all or nothing: every one to a temp file first, then each renamed into place.
    On a failure the temp files and the files this call created are removed (a file that existed before and
    was already replaced stays replaced) and :class:`OutputError` is raised naming the file."""
    staged: list[tuple[Path, Path, bool]] = []
    placed: list[Path] = []
    p = None
    try:
        for path, data in items:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp")
            staged.append((tmp, p, p.exists()))
            tmp.write_bytes(data)
        for tmp, p, existed in staged:
            os.replace(tmp, p)
            if not existed:
                placed.append(p)
    except OSError as exc:
        for q in placed:
            q.unlink(missing_ok=True)
        raise OutputError(f"could not write {str(p)!r}: {exc.strerror or exc}") from exc
    finally:
        for tmp, _, _ in staged:
            if tmp.is_file():
                tmp.unlink()
    return [p for _, p, _ in staged]
