"""Task suites: YAML files listing tasks (:class:`~usam.tasks.spec.TaskSpec`), and the FMC_UIA suite shipped
with usam (``usam/tasks/fmc_uia.yaml``; ``configs/fmc_uia.yaml`` points at it).

A task suite file::

    tasks:                      # official tasks
      - id: breast_lesion
        kind: segmentation      # or the CSV's task_name: segmentation / classification / detection / Regression
        num_classes: 2          # classes incl. background (segmentation), classes, boxes (1), or points
        class_names: [background, breast_lesion]   # optional, len == num_classes
        hflip: true             # optional: may a horizontal flip be used as augmentation (default: not for regression)
        dataset: BUSI           # optional: the public data set the development images come from
    dev_tasks:                  # optional: stand-in tasks of a development data set (official: false)
      - ...
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..errors import ConfigError, DataError
from .registry import KINDS, normalise_kind
from .spec import TaskSpec

__all__ = ["FMC_UIA_SUITE", "check_against_suite", "fmc_uia_suite", "load_task_suite"]

#: The FMC_UIA task suite shipped with usam (package data).
FMC_UIA_SUITE = Path(__file__).with_name("fmc_uia.yaml")

_ALLOWED_KEYS = {"id", "task_id", "kind", "task_name", "num_classes", "class_names", "hflip", "dataset"}
_SECTIONS = {"tasks": True, "dev_tasks": False}


def _task_id(entry, where: str) -> str:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with id, kind and num_classes, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    task_id = entry.get("id", entry.get("task_id"))
    if not isinstance(task_id, str) or not task_id.strip():
        raise ConfigError(f"{where}: missing or empty 'id' (a string such as 'breast_lesion')")
    return task_id.strip()


def _kind(entry: dict, where: str) -> str:
    raw_kind = entry.get("kind", entry.get("task_name"))
    if raw_kind is None:
        raise ConfigError(f"{where}: missing 'kind' (one of {', '.join(KINDS)})")
    kind = normalise_kind(raw_kind)
    if kind is None:
        raise ConfigError(f"{where}: unknown kind {raw_kind!r}: use one of {', '.join(KINDS)}")
    return kind


def _num_classes(entry: dict, kind: str, where: str) -> int:
    if "num_classes" not in entry:
        raise ConfigError(f"{where}: missing 'num_classes'")
    n = entry["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigError(f"{where}: num_classes must be an integer, got {n!r}")
    if n < 1:
        raise ConfigError(f"{where}: num_classes must be at least 1, got {n}")
    if n < KINDS[kind].min_classes:
        raise ConfigError(f"{where}: {KINDS[kind].min_classes_rule}, got {n}")
    return n


def _class_names(entry: dict, n: int, where: str) -> list[str] | None:
    names = entry.get("class_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(s, str) and s for s in names):
        raise ConfigError(f"{where}: class_names must be a list of non-empty strings, got {names!r}")
    if len(names) != n:
        raise ConfigError(f"{where}: class_names has {len(names)} names but num_classes is {n}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: class_names has duplicates: {names}")
    return list(names)


def _parse_task(entry, where: str, official: bool) -> TaskSpec:
    task_id = _task_id(entry, where)
    where = f"{where} ({task_id!r})"
    kind = _kind(entry, where)
    n = _num_classes(entry, kind, where)
    names = _class_names(entry, n, where)
    hflip = entry.get("hflip", KINDS[kind].hflip)
    if not isinstance(hflip, bool):
        raise ConfigError(f"{where}: hflip must be true or false, got {hflip!r}")
    dataset = entry.get("dataset")
    if dataset is not None and (not isinstance(dataset, str) or not dataset):
        raise ConfigError(f"{where}: dataset must be a non-empty string, got {dataset!r}")
    return TaskSpec(task_id, kind, n, names, official, hflip, dataset)


def _read_yaml(p: Path) -> dict:
    import yaml

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
    return doc


def load_task_suite(path: str | os.PathLike, include_dev: bool = True) -> dict[str, TaskSpec]:
    """Read a task-suite YAML (sections ``tasks`` and optional ``dev_tasks``) into ``{task_id: TaskSpec}``.

    Official tasks come first, in file order. ``include_dev=False`` drops the ``dev_tasks`` section.

    Raises:
      ConfigError: missing / unreadable file, bad YAML, unknown section or key, unknown kind, missing or
        invalid num_classes, class_names of the wrong length, duplicate task ids.
    """
    p = Path(path)
    doc = _read_yaml(p)
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


@functools.cache
def fmc_uia_suite() -> dict[str, TaskSpec]:
    """The FMC_UIA suite shipped with usam (:data:`FMC_UIA_SUITE`), official and development tasks."""
    return load_task_suite(FMC_UIA_SUITE)


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
