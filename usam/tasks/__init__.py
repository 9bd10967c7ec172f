"""Task kinds and task suites.

- :data:`KINDS`: ``name -> kind object`` (:mod:`.segmentation`, :mod:`.classification`, :mod:`.detection`,
  :mod:`.regression`; the interface is :class:`~usam.tasks.kind.TaskKind`): each owns its CSV columns and row
  parsing, head, training target and loss, challenge output entry and metrics.
- :class:`TaskSpec`: one task (id, kind, classes or points, names).
- :func:`load_task_suite`: a suite YAML; :func:`fmc_uia_suite`: the FMC_UIA suite shipped with usam
  (``usam/tasks/fmc_uia.yaml``), the one list of the challenge's tasks (the reader, the evaluator and model
  cards use it).
"""

from __future__ import annotations

from .kind import Target, TaskKind
from .registry import KINDS, kind_of, normalise_kind
from .spec import TaskSpec
from .suite import FMC_UIA_SUITE, check_against_suite, fmc_uia_suite, load_task_suite

__all__ = ["FMC_UIA_SUITE", "KINDS", "Target", "TaskKind", "TaskSpec", "check_against_suite", "fmc_uia_suite",
           "kind_of", "load_task_suite", "normalise_kind"]
