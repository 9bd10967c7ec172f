"""Task kinds and task suites: what a task is (:class:`TaskSpec`), the four kinds, suite files (``configs/fmc_uia.yaml``)."""

from __future__ import annotations

from .spec import KINDS, TaskSpec, check_against_suite, load_task_suite, normalise_kind

__all__ = ["KINDS", "TaskSpec", "check_against_suite", "load_task_suite", "normalise_kind"]
