"""Task specifications: what each task predicts and how many classes / points it has.

A task suite is a YAML file (see ``configs/fmc_uia.yaml``)::

    tasks:                      # official tasks
      - id: breast_lesion
        kind: segmentation      # or the CSV's task_name: segmentation / classification / detection / Regression
        num_classes: 2          # classes incl. background (segmentation), classes, boxes (1), or points
        class_names: [background, breast_lesion]   # optional, len == num_classes
        hflip: true             # optional: may a horizontal flip be used as augmentation (default: not for regression)
    dev_tasks:                  # optional: stand-in tasks of a development data set (official: false)
      - ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError

#: The four kinds of task, as used throughout usam.
KINDS = ("segmentation", "classification", "detection", "regression")

#: The CSV's ``task_name`` values (the challenge writes ``Regression`` with a capital R) -> kind.
_TASK_NAME_TO_KIND = {k: k for k in KINDS}


def normalise_kind(task_name: str) -> str | None:
    """Map a CSV ``task_name`` (``segmentation``, ``classification``, ``detection``, ``Regression``; any case,
    surrounding spaces ignored) to a kind in :data:`KINDS`, or ``None`` if it is not one of them."""
    if not isinstance(task_name, str):
        return None
    return _TASK_NAME_TO_KIND.get(task_name.strip().lower())


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite.

    Attributes:
      task_id: the CSV's ``task_id``.
      kind: one of :data:`KINDS`.
      num_classes: segmentation: classes including background; classification: classes;
        detection: boxes per image (1 in FMC_UIA); regression: number of points ``N``.
      class_names: ``num_classes`` names (for regression, the point names in order) or ``None``.
      official: ``True`` for the challenge's own tasks, ``False`` for development stand-ins.
      hflip: whether a random horizontal flip is a label-preserving augmentation for this task
        (``False`` where left/right carries meaning: ordered keypoints, position classes).
    """

    task_id: str
    kind: str
    num_classes: int
    class_names: list[str] | None = None
    official: bool = True
    hflip: bool = True


_ALLOWED_KEYS = {"id", "task_id", "kind", "task_name", "num_classes", "class_names", "hflip"}
_SECTIONS = {"tasks": True, "dev_tasks": False}


def _parse_task(entry, where: str, official: bool) -> TaskSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with id, kind and num_classes, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    task_id = entry.get("id", entry.get("task_id"))
    if not isinstance(task_id, str) or not task_id.strip():
        raise ConfigError(f"{where}: missing or empty 'id' (a string such as 'breast_lesion')")
    task_id = task_id.strip()
    where = f"{where} ({task_id!r})"
    raw_kind = entry.get("kind", entry.get("task_name"))
    if raw_kind is None:
        raise ConfigError(f"{where}: missing 'kind' (one of {', '.join(KINDS)})")
    kind = normalise_kind(raw_kind)
    if kind is None:
        raise ConfigError(f"{where}: unknown kind {raw_kind!r}: use one of {', '.join(KINDS)}")
    if "num_classes" not in entry:
        raise ConfigError(f"{where}: missing 'num_classes'")
    n = entry["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigError(f"{where}: num_classes must be an integer, got {n!r}")
    if n < 1:
        raise ConfigError(f"{where}: num_classes must be at least 1, got {n}")
    if kind == "segmentation" and n < 2:
        raise ConfigError(f"{where}: a segmentation task needs num_classes >= 2 (background + at least one class), got {n}")
    if kind == "classification" and n < 2:
        raise ConfigError(f"{where}: a classification task needs num_classes >= 2, got {n}")
    names = entry.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(s, str) and s for s in names):
            raise ConfigError(f"{where}: class_names must be a list of non-empty strings, got {names!r}")
        if len(names) != n:
            raise ConfigError(f"{where}: class_names has {len(names)} names but num_classes is {n}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: class_names has duplicates: {names}")
        names = list(names)
    hflip = entry.get("hflip", kind != "regression")
    if not isinstance(hflip, bool):
        raise ConfigError(f"{where}: hflip must be true or false, got {hflip!r}")
    return TaskSpec(task_id, kind, n, names, official, hflip)


def load_task_suite(path: str | os.PathLike, include_dev: bool = True) -> dict[str, TaskSpec]:
    """Read a task-suite YAML (sections ``tasks`` and optional ``dev_tasks``) into ``{task_id: TaskSpec}``.

    Official tasks come first, in file order. ``include_dev=False`` drops the ``dev_tasks`` section.

    Raises:
      ConfigError: missing / unreadable file, bad YAML, unknown section or key, unknown kind, missing or
        invalid num_classes, class_names of the wrong length, duplicate task ids.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"task suite {str(p)!r} does not exist: pass a YAML file such as configs/fmc_uia.yaml")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"task suite {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or "tasks" not in doc:
        raise ConfigError(f"task suite {str(p)!r}: expected a mapping with a 'tasks' list (and optionally 'dev_tasks')")
    unknown = sorted(set(map(str, doc)) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"task suite {str(p)!r}: unknown section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    suite: dict[str, TaskSpec] = {}
    for section, official in _SECTIONS.items():
        entries = doc.get(section)
        if entries is None:
            if section == "tasks":
                raise ConfigError(f"task suite {str(p)!r}: 'tasks' is empty")
            continue
        if not isinstance(entries, list):
            raise ConfigError(f"task suite {str(p)!r}: '{section}' must be a list of tasks, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            spec = _parse_task(entry, f"task suite {p.name}, {section}[{i}]", official)
            if spec.task_id in suite:
                raise ConfigError(f"task suite {p.name}: duplicate task id {spec.task_id!r} in {section}[{i}]")
            if official or include_dev:
                suite[spec.task_id] = spec
    return suite


def check_against_suite(split: dict, suite: dict[str, TaskSpec]) -> None:
    """Check that the tasks of a split (``{task_id: [Sample, ...]}``) agree with a suite on kind and num_classes.

    Tasks absent from the suite are reported too, since a trainer would not know how to build their head.

    Raises:
      DataError: listing every task that disagrees.
    """
    problems = []
    for task_id, samples in split.items():
        if not samples:
            continue
        s = samples[0]
        spec = suite.get(task_id)
        if spec is None:
            problems.append(f"task {task_id!r} is not in the task suite (known: {', '.join(sorted(suite))})")
        elif (s.kind, s.num_classes) != (spec.kind, spec.num_classes):
            problems.append(
                f"task {task_id!r} is {s.kind} with num_classes={s.num_classes} in the data "
                f"but {spec.kind} with num_classes={spec.num_classes} in the task suite"
            )
    if problems:
        raise DataError("data and task suite disagree:\n  " + "\n  ".join(problems))
