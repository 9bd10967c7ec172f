"""The task kinds by name: adding a kind is one module (a :class:`~usam.tasks.kind.TaskKind`) and one line here."""

from __future__ import annotations

from .classification import CLASSIFICATION
from .detection import DETECTION
from .kind import TaskKind
from .regression import REGRESSION
from .segmentation import SEGMENTATION

__all__ = ["KINDS", "kind_of", "normalise_kind"]

#: ``name -> kind object``, in the order usam lists kinds (iterating gives the names).
KINDS: dict[str, TaskKind] = {k.name: k for k in (SEGMENTATION, CLASSIFICATION, DETECTION, REGRESSION)}


def normalise_kind(task_name: str) -> str | None:
    """Map a CSV ``task_name`` (``segmentation``, ``classification``, ``detection``, ``Regression``; any case,
    surrounding spaces ignored) to a kind in :data:`KINDS`, or ``None`` if it is not one of them."""
    if not isinstance(task_name, str):
        return None
    name = task_name.strip().lower()
    return name if name in KINDS else None


def kind_of(task) -> TaskKind:
    """The kind object of a task, a row or a kind name (``task.kind`` or the string itself)."""
    return KINDS[task if isinstance(task, str) else task.kind]
