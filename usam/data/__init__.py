"""Data: task suites, the FMC_UIA CSV layout, plain image/mask folders, and augmentation.

- :mod:`usam.tasks` (re-exported): :class:`TaskSpec`, :data:`KINDS`, :func:`load_task_suite`.
- :mod:`.fmc`: :class:`Sample`, :func:`read_task_csv`, :func:`read_split` for ``<split>/csv_files/*.csv``.
- :mod:`.folder`: :func:`read_folder` for ``images/`` + ``masks/`` (+ ``labels.csv``).
- :mod:`.augment`: :class:`Augment`, consistent image / mask / box / points augmentation.
"""

from __future__ import annotations

from .augment import Augment, AugmentParams, apply_augment
from .fmc import Sample, output_mask_relpath, read_split, read_task_csv, unique_image_paths
from .folder import IMAGE_EXTENSIONS, read_folder
from ..tasks import KINDS, TaskSpec, check_against_suite, load_task_suite, normalise_kind

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINDS",
    "Augment",
    "AugmentParams",
    "apply_augment",
    "Sample",
    "TaskSpec",
    "check_against_suite",
    "load_task_suite",
    "normalise_kind",
    "output_mask_relpath",
    "read_folder",
    "read_split",
    "read_task_csv",
    "unique_image_paths",
]
