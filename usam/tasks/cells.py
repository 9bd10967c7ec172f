"""Parsers of single values as task files write them: CSV cells and prediction-file numbers.

Each returns ``None`` for a value it cannot read (the caller names the file and row); :func:`numbers`
raises :class:`~usam.errors.DataError` itself, since its message depends only on what it is given.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import DataError

__all__ = ["finite", "mean", "numbers", "parse_float", "parse_int", "parse_point"]


def parse_int(text: str) -> int | None:
    """An integer, also written as ``2.0`` (as pandas writes integer columns with gaps); else ``None``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


def parse_float(text: str) -> float | None:
    """A finite float, else ``None``."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def parse_point(text: str) -> tuple[float, float] | None:
    """JSON ``[x, y]`` with two finite numbers, else ``None``."""
    try:
        v = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v)
    ):
        return None
    return float(v[0]), float(v[1])


def numbers(value, n: int, what: str, where: str) -> np.ndarray:
    """``value`` as ``(n,)`` finite float64.

    Raises:
      DataError: ``where: what ...`` when it is not ``n`` finite numbers.
    """
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {what} {str(value)[:80]} is not a list of numbers") from exc
    if arr.size != n:
        raise DataError(f"{where}: {what} has {arr.size} numbers, expected {n}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {what} contains NaN or infinite values")
    return arr


def finite(v) -> float | None:
    """``v`` as a finite float (``None`` for ``None``, NaN and infinities)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def mean(values) -> float | None:
    """Mean of the values that are not ``None`` (``None`` when there are none)."""
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
