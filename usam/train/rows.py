"""Training rows: train / validation :class:`~usam.data.fmc.Sample` lists per task, and the task specs they imply.

Read from an FMC_UIA root (``train/`` and ``val/``), one split folder, or an ``images/`` + ``masks/`` folder; without a
validation split a fixed 15 % of each task's rows is held out (seeded by ``train.seed``).
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data.fmc import Sample, read_split
from ..data.folder import read_folder
from ..errors import DataError
from ..tasks.spec import TaskSpec
from .config import TrainConfig


def _limit(split: dict[str, list[Sample]], limit: int | None) -> dict[str, list[Sample]]:
    return {t: rows[:limit] if limit else rows for t, rows in split.items()}


def load_data(cfg: TrainConfig) -> tuple[dict[str, list[Sample]], dict[str, list[Sample]]]:
    """Train and validation rows per task from an FMC_UIA root, a split dir or an images/+masks/ folder."""
    train, val = read_rows(cfg.data_root, cfg.tasks, cfg.train_split, cfg.val_split, cfg.train["seed"])
    val_limit = cfg.train.get("val_limit")
    return _limit(train, cfg.limit), _limit(val, val_limit or cfg.limit)


def read_rows(root, tasks: list[str] | None = None, train_split: str = "train", val_split: str = "val",
              seed: int = 0) -> tuple[dict[str, list[Sample]], dict[str, list[Sample]]]:
    """Train and validation rows per task under ``root`` (see :func:`load_data`); without a validation split a fixed
    15 % of each task's rows (seeded) is held out."""
    root = Path(root)
    if (root / train_split / "csv_files").is_dir():
        train = read_split(root / train_split, tasks=tasks)
        val = read_split(root / val_split, tasks=tasks) if (root / val_split / "csv_files").is_dir() else {}
    elif (root / "csv_files").is_dir():
        train, val = read_split(root, tasks=tasks), {}
    elif (root / "images").is_dir():
        train, val = read_folder(root), {}
        if tasks:
            train = {t: r for t, r in train.items() if t in tasks}
    else:
        raise DataError(f"data root {str(root)!r} has neither {train_split}/csv_files, csv_files nor images/")
    if not train:
        raise DataError(f"no training rows found under {str(root)!r} for tasks {tasks or 'all'}")
    if tasks:
        missing = [t for t in tasks if t not in train]
        if missing:
            raise DataError(f"tasks {missing} are not in the training data at {str(root)!r} (found {sorted(train)})")
    if not val:  # hold out a fixed 15 % of the images for validation
        rng = random.Random(seed)
        new_train, val = {}, {}
        for t, rows in train.items():
            idx = list(range(len(rows)))
            rng.shuffle(idx)
            n_val = max(1, round(0.15 * len(rows))) if len(rows) > 3 else 0
            val[t] = [rows[i] for i in sorted(idx[:n_val])]
            new_train[t] = [rows[i] for i in sorted(idx[n_val:])]
        train = new_train
    return train, {t: rows for t, rows in val.items() if t in train and rows}


def task_specs(train: dict[str, list[Sample]]) -> dict[str, TaskSpec]:
    """One :class:`TaskSpec` per task of the training rows (classes: the most any row declares)."""
    specs = {}
    for tid, rows in train.items():
        r = rows[0]
        n = max(max((s.num_classes for s in rows), default=1), r.num_classes)
        specs[tid] = TaskSpec(task_id=tid, kind=r.kind, num_classes=n, class_names=r.class_names)
    return specs


def segmentation_rows(adapter_dir, tasks: dict[str, TaskSpec], data, limit: int | None,
                      use: str) -> tuple[list[str], dict[str, list[Sample]]]:
    """The segmentation task ids of the adapter at ``adapter_dir`` (its ``tasks``) and their ``train`` / ``val`` rows
    under the FMC_UIA root ``data`` (each task's first ``limit``), one list per split; ``use`` says what they are
    for in the error an adapter without a segmentation task gets."""
    seg = [t for t, s in tasks.items() if s.kind == "segmentation"]
    if not seg:
        raise DataError(f"{adapter_dir} has no segmentation task {use}")
    splits = {}
    for name in ("train", "val"):
        rows = read_split(Path(data) / name, tasks=seg)
        splits[name] = [s for t in seg for s in rows.get(t, [])[:limit]]
        if not splits[name]:
            raise DataError(f"no {name} rows of {', '.join(seg)} under {data}")
    return seg, splits

