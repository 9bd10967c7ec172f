"""Score predictions written in the FMC_UIA output formats against a split's ground truth.

Prediction folder layout (the challenge's)::

    pred_dir/
      Segmentation/...png                 at output_mask_relpath(mask_path), values = class ids
      classification_predictions.json     [{"image_path", "task_id", "predicted_class", "predicted_probs"}]
      detection_predictions.json          [{"image_path", "task_id", "bbox_pixels" (or "bbox_normalized")}]
      regression_predictions.json         [{"image_path", "task_id", "predicted_points_pixels" (or ..._normalized)}]

JSON entries are matched to CSV rows by ``(image_path as written in the CSV, task_id)``; leading ``./`` /
``../`` and backslashes are ignored when matching.

A missing prediction is never skipped: it is scored as the worst case and counted in the task's
``missing``:

- segmentation: no PNG -> every class scores Dice 0 and HD = the image diagonal (even where the truth is
  empty); for head circumference the predicted HC is 0 (abs error = the true HC);
- classification: no entry -> predicted class -1 (always wrong) and uniform probabilities; an entry without
  ``predicted_probs`` gets uniform probabilities (counted in ``missing_probs``); one without
  ``predicted_class`` uses the argmax of its probabilities;
- detection: no box -> IoU 0;
- regression: no points -> every point's error is the image diagonal (MRE = diagonal).

Malformed predictions raise :class:`~usam.errors.DataError` naming the file and the JSON entry (index) or the
CSV row: they are bugs in the predictor, not missing answers, and scoring them would give a silently wrong
number. Refused:

- JSON: not a list of objects, an entry without ``image_path`` / ``task_id``, duplicate entries, an entry of a
  scored task with a key its kind does not have (e.g. ``probs`` for ``predicted_probs``) or with no answer at
  all (none of its kind's answer keys);
- classification: ``predicted_probs`` of the wrong length, not numbers, NaN / inf, negative, or not summing
  to 1 within 1e-3 (probabilities, e.g. a softmax, not scores or logits); ``predicted_class`` not an integer
  or outside ``0 .. num_classes - 1``;
- detection / regression: coordinates of the wrong length, not numbers, NaN / inf;
- segmentation: an empty or undecodable PNG, a colour PNG whose channels differ (one whose channels are
  equal is read as grey), a mask of another size than the truth, values outside ``0 .. num_classes - 1``
  (e.g. a 0/255 binary image for a 2-class task).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..data.fmc import Sample, output_mask_relpath, read_split
from ..errors import DataError
from ..tasks import KINDS
from .checks import csv_rows, read_label_png

#: Prediction file names of the challenge, per kind (segmentation writes one PNG per row instead).
PRED_FILES = {name: k.pred_file for name, k in KINDS.items() if k.pred_file}

#: The keys that carry a prediction, per kind (an entry needs at least one; nothing else but image_path, task_id).
ANSWER_KEYS = {name: k.answer_keys for name, k in KINDS.items() if k.pred_file}

__all__ = ["ANSWER_KEYS", "PRED_FILES", "evaluate", "write_ground_truth_as_predictions"]


# --------------------------------------------------------------------------------------------- helpers
def _norm_path(p: str) -> str:
    p = str(p).replace("\\", "/").strip()
    while p.startswith("../") or p.startswith("./"):
        p = p[3:] if p.startswith("../") else p[2:]
    return p


def _key(image_path: str, task_id: str) -> tuple[str, str]:
    return _norm_path(image_path), str(task_id).strip()


def _image_size(path: Path, cache: dict) -> tuple[int, int]:
    """``(W, H)`` of an image from its header."""
    if path not in cache:
        from PIL import Image

        try:
            with Image.open(path) as im:
                cache[path] = tuple(int(v) for v in im.size)
        except Exception as exc:
            raise DataError(f"ground-truth image {str(path)!r} cannot be opened ({type(exc).__name__}: {exc})") from exc
    return cache[path]


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"prediction file {str(path)!r} is not valid JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("predictions"), list):
        data = data["predictions"]
    if not isinstance(data, list):
        raise DataError(f"prediction file {str(path)!r} must hold a JSON list of objects, got {type(data).__name__}")
    return data


def _load_pred_json(pred_dir: Path, kind: str, task_ids: set | None = None) -> dict:
    """``{(image_path, task_id): (entry index, entry)}`` from one prediction file (``{}`` when the file is
    absent). Entries of ``task_ids`` (``None``: all) must have only their kind's keys and at least one answer."""
    path = pred_dir / PRED_FILES[kind]
    if not path.exists():
        return {}
    out: dict = {}
    dupes: list[str] = []
    for i, e in enumerate(_read_json_list(path)):
        if not isinstance(e, dict) or "image_path" not in e or "task_id" not in e:
            raise DataError(f"prediction file {str(path)!r} entry {i} must be an object with image_path and task_id, got {str(e)[:120]}")
        k = _key(e["image_path"], e["task_id"])
        if k in out:
            dupes.append(f"{e['task_id']}: {e['image_path']}")
        if task_ids is None or k[1] in task_ids:
            _check_keys(e, kind, f"prediction file {str(path)!r} entry {i} ({e['task_id']}, {e['image_path']!r})")
        out[k] = (i, e)
    if dupes:
        shown = "; ".join(dupes[:5]) + (f"; ... and {len(dupes) - 5} more" if len(dupes) > 5 else "")
        raise DataError(f"prediction file {str(path)!r} has {len(dupes)} duplicate (image_path, task_id) entries: {shown}")
    return out


def _check_keys(e: dict, kind: str, where: str) -> None:
    answers = ANSWER_KEYS[kind]
    expected = ", ".join(("image_path", "task_id", *answers))
    unknown = [k for k in e if k not in ("image_path", "task_id", *answers)]
    absent = [k for k in answers if e.get(k) is None]
    if unknown:
        guess = f" (is {unknown[0]!r} meant to be {absent[0]!r}?)" if absent else ""
        raise DataError(f"{where} has unknown key(s) {unknown}{guess}: a {kind} entry has the keys {expected}")
    if len(absent) == len(answers):
        need = (" and/or " if KINDS[kind].answers_combine else " or ").join(answers)
        raise DataError(f"{where} holds no prediction: give {need} (keys: {expected})")


def _check_labels(pred: np.ndarray, num_classes: int, task_id: str, what: str) -> None:
    """Refuse label values outside ``0 .. num_classes - 1``."""
    if pred.size == 0 or (int(pred.min()) >= 0 and int(pred.max()) < num_classes):
        return
    vals = [int(v) for v in np.unique(pred)]
    shown = ", ".join(str(v) for v in vals[:10]) + (f", ... ({len(vals)} values)" if len(vals) > 10 else "")
    if set(vals) <= {0, 255}:
        hint = "it looks like a 0/255 binary image: write class ids (0 = background, 1 = the class), not 0/255"
    else:
        hint = "write class ids, one per pixel"
    raise DataError(
        f"{what} holds the values {{{shown}}} but task {task_id} has {num_classes} classes (ids 0..{num_classes - 1}): {hint}"
    )


class _Predictions:
    """The predictions of one kind in a prediction folder, handed to the kind's
    :meth:`~usam.tasks.kind.TaskKind.evaluate` (a :class:`~usam.tasks.kind.PredictionSource`)."""

    def __init__(self, kind: str, pred_dir: Path, entries: dict, rows: dict, sizes: dict):
        self.kind, self.pred_dir, self.entries, self.rows, self.sizes = kind, pred_dir, entries, rows, sizes
        self.used: set = set()

    def entry(self, s: Sample) -> tuple[int | None, dict | None]:
        k = _key(s.rel_image_path, s.task_id)
        index, e = self.entries.get(k, (None, None))
        if e is not None:
            self.used.add(k)
        return index, e

    def where(self, s: Sample, index: int | None) -> str:
        row_name = self.rows.get((s.task_id, s.rel_image_path))
        return (f"prediction file {str(self.pred_dir / PRED_FILES[self.kind])!r} entry {index} ({s.task_id}"
                + (f", {row_name}" if row_name else "") + f", image {s.rel_image_path!r})")

    def image_size(self, s: Sample) -> tuple[int, int]:
        return _image_size(s.image_path, self.sizes)

    def mask(self, s: Sample, truth: np.ndarray) -> tuple[np.ndarray | None, str, str]:
        out_rel = output_mask_relpath(s.rel_mask_path)
        pred_file = self.pred_dir / out_rel
        if not pred_file.is_file():
            return None, out_rel, str(pred_file)
        row_name = self.rows.get((s.task_id, s.rel_image_path))
        what = f"prediction mask {str(pred_file)!r} ({s.task_id}" + (f", {row_name})" if row_name else ")")
        pred = read_label_png(pred_file, what)
        if pred.shape != truth.shape:
            raise DataError(
                f"{what} is {pred.shape[1]}x{pred.shape[0]} but the truth "
                f"{s.rel_mask_path!r} is {truth.shape[1]}x{truth.shape[0]}: predict at the image's size"
            )
        _check_labels(pred, s.num_classes, s.task_id, what)
        return pred, out_rel, str(pred_file)


def _sources(split: dict, pred_dir: Path, rows: dict) -> dict[str, _Predictions]:
    """One :class:`_Predictions` per kind of the split; the prediction files are read (and checked) first, so a
    malformed one fails before any mask is scored."""
    sizes: dict = {}
    out = {}
    for kind in dict.fromkeys(samples[0].kind for samples in split.values()):
        entries = _load_pred_json(pred_dir, kind, set(split)) if kind in PRED_FILES else {}
        out[kind] = _Predictions(kind, pred_dir, entries, rows, sizes)
    return out


# ------------------------------------------------------------------------------------------------ public
def evaluate(
    data_root: str | os.PathLike,
    pred_dir: str | os.PathLike,
    tasks: list[str] | None = None,
) -> dict:
    """Score a prediction folder against a split's ground truth.

    Args:
      data_root: the split folder holding ``csv_files/`` (e.g. ``fmc_uia_dev/test``).
      pred_dir: the predictor's output folder (layout in the module docstring).
      tasks: task ids to score; ``None`` = every task of the split.

    Returns:
      A JSON-able dict::

        {"data_root": str, "pred_dir": str,
         "tasks": {task_id: {"kind", "num_classes", "class_names", "n", "missing",
                             "metrics": {...}, "cases": [{...}, ...]}},
         "unmatched_predictions": {file name: number of JSON entries matching no CSV row of the scored tasks},
         "missing_total": int}

      ``metrics`` per kind (each kind's :meth:`~usam.tasks.kind.TaskKind.evaluate`): segmentation ``dice``,
      ``hd`` (pixels; macro mean over non-background classes of the per-class means over images),
      ``dice_per_class``, ``hd_per_class``, and when every row has a pixel size ``hd_mm``; with
      ``head_circumference_mm`` also ``hc_abs_err_mm`` (ellipse fit of the predicted mask). Classification
      ``auc``, ``accuracy``, ``macro_f1``, ``mcc``, ``auc_skipped_classes`` (see
      :func:`usam.ops.metrics.classification_metrics`). Detection ``iou`` (mean). Regression ``mre_px``,
      ``mre_mm`` (with pixel sizes), ``hc_abs_err_mm`` (4-point biometry tasks with ``head_circumference_mm``:
      HC of the ellipse with axes p1-p2 and p3-p4).

    Raises:
      DataError: bad data root or CSVs, no prediction folder, unreadable / malformed predictions.
    """
    data_root = Path(data_root)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {str(pred_dir)!r} does not exist or is not a folder")
    split = read_split(data_root, tasks=tasks, check_files=True)
    sources = _sources(split, pred_dir, csv_rows(data_root, split))
    out_tasks: dict[str, dict] = {}
    for task_id, samples in split.items():
        s0 = samples[0]
        res = KINDS[s0.kind].evaluate(samples, sources[s0.kind])
        out_tasks[task_id] = {"kind": s0.kind, "num_classes": s0.num_classes, "class_names": s0.class_names,
                              "n": len(samples), **res}
    scored = set(split)
    unmatched = {
        PRED_FILES[kind]: sum(1 for k in src.entries if k not in src.used and (tasks is None or k[1] in scored))
        for kind, src in sources.items() if kind in PRED_FILES
    }
    return {
        "data_root": str(data_root.resolve()),
        "pred_dir": str(pred_dir.resolve()),
        "tasks": out_tasks,
        "unmatched_predictions": unmatched,
        "missing_total": int(sum(t["missing"] for t in out_tasks.values())),
    }


def write_ground_truth_as_predictions(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    tasks: list[str] | None = None,
) -> dict[str, int]:
    """Write a split's ground truth in the challenge's prediction formats (a perfect predictor's output).

    Masks are copied to ``out_dir/output_mask_relpath(mask_path)``; classification gets one-hot
    probabilities; boxes and points are written in pixels and normalised by the image size
    (:meth:`~usam.tasks.kind.TaskKind.truth_entry`).

    Returns:
      ``{task_id: rows written}``.

    Raises:
      DataError: bad data root or CSVs.
    """
    split = read_split(Path(data_root), tasks=tasks, check_files=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list] = {k: [] for k in PRED_FILES}
    sizes: dict = {}
    for task_id, samples in split.items():
        for s in samples:
            kind = KINDS[s.kind]
            if kind.pred_file is None:
                dst = out / output_mask_relpath(s.rel_mask_path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s.mask_path, dst)
                continue
            answer = kind.truth_entry(s, lambda s=s: _image_size(s.image_path, sizes))
            entries[s.kind].append({"image_path": s.rel_image_path, "task_id": task_id, **answer})
    for kind, rows in entries.items():
        if rows:
            (out / PRED_FILES[kind]).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return {task_id: len(samples) for task_id, samples in split.items()}
