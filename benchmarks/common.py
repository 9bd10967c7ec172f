"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (or what :mod:`platform` knows)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def breast_lesion_csv(data: Path) -> Path:
    """``DATA/test/csv_files/breast_lesion.csv``, or exit with a message naming ``--data``."""
    path = Path(data) / "test" / "csv_files" / "breast_lesion.csv"
    if not path.is_file():
        raise SystemExit(f"benchmark data not found: {path} (pass --data FMC_UIA_ROOT with test/csv_files/breast_lesion.csv)")
    return path
