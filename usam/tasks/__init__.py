"""Task kinds and task suites.

- :data:`KINDS`: ``name -> kind object`` (:mod:`.segmentation`, :mod:`.classification`, :mod:`.detection`,
  :mod:`.regression`; the interface is :class:`~usam.tasks.kind.TaskKind`): each owns its CSV columns and row
  parsing, head, training target and loss, challenge output entry and metrics.
- :class:`TaskSpec`: one task (id, kind, classes or points, names).
- :func:`load_task_suite`: a suite YAML; :func:`fmc_uia_suite`: the FMC_UIA suite shipped with usam
  (``usam/tasks/fmc_uia.yaml``), the one list of the challenge's tasks and of the data sets behind them (model
  cards read it; :func:`check_against_suite` checks a split against it). The CSV reader and the evaluator take
  each task's kind, classes and names from the CSV they read, and everything kind-specific from :data:`KINDS`.
"""

from __future__ import annotations

from .kind import Target, TaskKind
from .registry import KINDS, kind_of, normalise_kind
from .spec import TaskSpec
from .suite import FMC_UIA_SUITE, check_against_suite, fmc_uia_suite, load_task_suite

__all__ = ["FMC_UIA_SUITE", "KINDS", "Target", "TaskKind", "TaskSpec", "check_against_suite", "fmc_uia_suite",
           "kind_of", "load_task_suite", "normalise_kind"]
