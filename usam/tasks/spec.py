"""What one task is: :class:`TaskSpec` (its id, kind, number of classes or points, class names)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec"]


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite (or of an adapter).

    Attributes:
      task_id: the CSV's ``task_id``.
      kind: a name in :data:`usam.tasks.KINDS` (``segmentation``, ``classification``, ``detection``, ``regression``).
      num_classes: segmentation: classes including background; classification: classes;
        detection: boxes per image (1 in FMC_UIA); regression: number of points ``N``.
      class_names: ``num_classes`` names (for regression, the point names in order) or ``None``.
      official: ``True`` for the challenge's own tasks, ``False`` for development stand-ins.
      hflip: whether a random horizontal flip is a label-preserving augmentation for this task
        (``False`` where left/right carries meaning: ordered keypoints, position classes).
      dataset: the public data set the task's development images come from (``BUSI``, ``HC18`` ...), or ``None``.
    """

    task_id: str
    kind: str
    num_classes: int
    class_names: list[str] | None = None
    official: bool = True
    hflip: bool = True
    dataset: str | None = None
