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
import math
import os
import shutil
from pathlib import Path

import numpy as np

from ..data.fmc import Sample, output_mask_relpath, read_split
from ..errors import DataError
from ..io import read_mask
from ..ops import metrics as M
from ..ops.masks import head_circumference, points_biometry
from .checks import csv_rows, read_label_png

#: Prediction file names of the challenge, per kind.
PRED_FILES = {
    "classification": "classification_predictions.json",
    "detection": "detection_predictions.json",
    "regression": "regression_predictions.json",
}

#: The keys that carry a prediction, per kind (an entry needs at least one; nothing else but image_path, task_id).
ANSWER_KEYS = {
    "classification": ("predicted_class", "predicted_probs"),
    "detection": ("bbox_pixels", "bbox_normalized"),
    "regression": ("predicted_points_pixels", "predicted_points_normalized"),
}
#: Largest accepted ``|sum(predicted_probs) - 1|``.
PROBS_SUM_TOL = 1e-3

__all__ = ["ANSWER_KEYS", "PRED_FILES", "PROBS_SUM_TOL", "evaluate", "write_ground_truth_as_predictions"]


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


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _load_pred_json(pred_dir: Path, kind: str, task_ids: set | None = None) -> dict:
    """``{(image_path, task_id): (entry index, entry)}`` from one prediction file (``{}`` when the file is
    absent). Entries of ``task_ids`` (``None``: all) must have only their kind's keys and at least one answer."""
    path = pred_dir / PRED_FILES[kind]
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"prediction file {str(path)!r} is not valid JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("predictions"), list):
        data = data["predictions"]
    if not isinstance(data, list):
        raise DataError(f"prediction file {str(path)!r} must hold a JSON list of objects, got {type(data).__name__}")
    out: dict = {}
    dupes: list[str] = []
    for i, e in enumerate(data):
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
        need = " and/or ".join(answers) if kind == "classification" else " or ".join(answers)
        raise DataError(f"{where} holds no prediction: give {need} (keys: {expected})")


def _numbers(value, n: int, what: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {what} {str(value)[:80]} is not a list of numbers") from exc
    if arr.size != n:
        raise DataError(f"{where}: {what} has {arr.size} numbers, expected {n}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {what} contains NaN or infinite values")
    return arr


def _head_class(sample: Sample) -> int | None:
    """Class id of the head in a segmentation task (``None`` = all foreground)."""
    if sample.num_classes == 2:
        return 1
    for i, name in enumerate(sample.class_names or []):
        if i > 0 and "head" in str(name).lower():
            return i
    return None


# --------------------------------------------------------------------------------------------- per kind
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


def _eval_segmentation(samples: list[Sample], pred_dir: Path, rows: dict | None = None) -> dict:
    n_fg = samples[0].num_classes - 1
    names = samples[0].class_names
    if not names:  # unnamed: a binary task's one class is named after the task
        names = ["background", samples[0].task_id] if n_fg == 1 else [f"class_{c}" for c in range(n_fg + 1)]
    cases, missing = [], 0
    for s in samples:
        truth = read_mask(s.mask_path)
        out_rel = output_mask_relpath(s.rel_mask_path)
        pred_file = pred_dir / out_rel
        diag = M.image_diagonal(truth.shape)
        is_missing = not pred_file.is_file()
        if is_missing:
            missing += 1
            m = {"dice": [0.0] * n_fg, "hd": [diag] * n_fg}
            m["hd_mm"] = [diag * s.pixel_size_mm] * n_fg if s.pixel_size_mm else None
            pred = None
        else:
            row_name = (rows or {}).get((s.task_id, s.rel_image_path))
            what = f"prediction mask {str(pred_file)!r} ({s.task_id}" + (f", {row_name})" if row_name else ")")
            pred = read_label_png(pred_file, what)
            if pred.shape != truth.shape:
                raise DataError(
                    f"{what} is {pred.shape[1]}x{pred.shape[0]} but the truth "
                    f"{s.rel_mask_path!r} is {truth.shape[1]}x{truth.shape[0]}: predict at the image's size"
                )
            _check_labels(pred, s.num_classes, s.task_id, what)
            m = M.segmentation_case_metrics(pred, truth, s.num_classes, s.pixel_size_mm)
        row = {
            "image_path": s.rel_image_path,
            "mask_path": s.rel_mask_path,
            "pred_mask_path": out_rel,
            "image_file": str(s.image_path),
            "mask_file": str(s.mask_path),
            "pred_file": str(pred_file),
            "missing": is_missing,
            "dice": float(np.mean(m["dice"])),
            "hd": float(np.mean(m["hd"])),
            "dice_per_class": [float(v) for v in m["dice"]],
            "hd_per_class": [float(v) for v in m["hd"]],
            "hd_mm": float(np.mean(m["hd_mm"])) if m["hd_mm"] else None,
            "hd_mm_per_class": [float(v) for v in m["hd_mm"]] if m["hd_mm"] else None,
        }
        hc_true = _finite(s.extra.get("head_circumference_mm"))
        if hc_true is not None and s.pixel_size_mm:
            hc_cls = _head_class(s)
            hc_pred = 0.0
            if pred is not None:
                head = pred == hc_cls if hc_cls is not None else pred > 0
                hc_pred = head_circumference(head, s.pixel_size_mm) or 0.0
            row.update(hc_true_mm=hc_true, hc_pred_mm=float(hc_pred), hc_abs_err_mm=abs(float(hc_pred) - hc_true))
        cases.append(row)

    dice_pc = [float(np.mean([c["dice_per_class"][k] for c in cases])) for k in range(n_fg)]
    hd_pc = [float(np.mean([c["hd_per_class"][k] for c in cases])) for k in range(n_fg)]
    metrics = {
        "dice": float(np.mean(dice_pc)),
        "hd": float(np.mean(hd_pc)),
        "dice_per_class": {str(names[k + 1]): dice_pc[k] for k in range(n_fg)},
        "hd_per_class": {str(names[k + 1]): hd_pc[k] for k in range(n_fg)},
    }
    if all(c["hd_mm_per_class"] for c in cases):
        hdmm_pc = [float(np.mean([c["hd_mm_per_class"][k] for c in cases])) for k in range(n_fg)]
        metrics["hd_mm"] = float(np.mean(hdmm_pc))
        metrics["hd_mm_per_class"] = {str(names[k + 1]): hdmm_pc[k] for k in range(n_fg)}
    hc = [c["hc_abs_err_mm"] for c in cases if "hc_abs_err_mm" in c]
    if hc:
        metrics["hc_abs_err_mm"] = float(np.mean(hc))
        metrics["hc_n"] = len(hc)
    return {"metrics": metrics, "cases": cases, "missing": missing}


def _where(kind: str, pred_dir: Path, index: int | None, s: Sample, rows: dict | None) -> str:
    row_name = (rows or {}).get((s.task_id, s.rel_image_path))
    return (f"prediction file {str(pred_dir / PRED_FILES[kind])!r} entry {index} ({s.task_id}"
            + (f", {row_name}" if row_name else "") + f", image {s.rel_image_path!r})")


def _probabilities(value, n_cls: int, where: str) -> np.ndarray:
    p = _numbers(value, n_cls, "predicted_probs", where)
    if (p < 0).any():
        raise DataError(f"{where}: predicted_probs {[float(v) for v in p]} has negative values: write probabilities in [0, 1]")
    total = float(p.sum())
    if abs(total - 1.0) > PROBS_SUM_TOL:
        raise DataError(
            f"{where}: predicted_probs sum to {total:.6g}, not 1 (tolerance {PROBS_SUM_TOL:g}): write probabilities "
            f"(e.g. a softmax), not scores or logits"
        )
    return p


def _class_id(value, n_cls: int, where: str) -> int:
    try:
        c = int(value)
        ok = not isinstance(value, bool) and float(value) == c
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(f"{where}: predicted_class {value!r} is not an integer")
    if not 0 <= c < n_cls:
        raise DataError(f"{where}: predicted_class {c} is outside 0..{n_cls - 1} (the task has {n_cls} classes)")
    return c


def _eval_classification(samples: list[Sample], preds: dict, used: set, pred_dir: Path | None = None,
                         rows: dict | None = None) -> dict:
    n_cls = samples[0].num_classes
    y, probs, yp, cases = [], [], [], []
    missing = missing_probs = 0
    for s in samples:
        k = _key(s.rel_image_path, s.task_id)
        index, e = preds.get(k, (None, None))
        where = _where("classification", pred_dir or Path("."), index, s, rows)
        if e is None:
            missing += 1
            p = np.full(n_cls, 1.0 / n_cls)
            c = -1
        else:
            used.add(k)
            if e.get("predicted_probs") is None and e.get("predicted_class") is None:
                _check_keys(e, "classification", where)  # raises: no answer
            if e.get("predicted_probs") is None:
                missing_probs += 1
                p = np.full(n_cls, 1.0 / n_cls)
            else:
                p = _probabilities(e["predicted_probs"], n_cls, where)
            if e.get("predicted_class") is None:
                c = int(np.argmax(p))
            else:
                c = _class_id(e["predicted_class"], n_cls, where)
        y.append(s.label)
        probs.append(p)
        yp.append(c)
        cases.append(
            {
                "image_path": s.rel_image_path,
                "image_file": str(s.image_path),
                "label": int(s.label),
                "predicted_class": int(c),
                "predicted_probs": [float(v) for v in p],
                "correct": bool(c == s.label),
                "missing": e is None,
            }
        )
    m = M.classification_metrics(np.array(y), np.array(probs), np.array(yp))
    return {"metrics": m, "cases": cases, "missing": missing, "missing_probs": missing_probs}


def _eval_detection(samples: list[Sample], preds: dict, used: set, sizes: dict, pred_dir: Path | None = None,
                    rows: dict | None = None) -> dict:
    cases, missing = [], 0
    for s in samples:
        k = _key(s.rel_image_path, s.task_id)
        index, e = preds.get(k, (None, None))
        where = _where("detection", pred_dir or Path("."), index, s, rows)
        box = None
        if e is not None:
            used.add(k)
            if e.get("bbox_pixels") is not None:
                box = _numbers(e["bbox_pixels"], 4, "bbox_pixels", where)
            elif e.get("bbox_normalized") is not None:
                w, h = _image_size(s.image_path, sizes)
                box = _numbers(e["bbox_normalized"], 4, "bbox_normalized", where) * np.array([w, h, w, h])
        if box is None:
            missing += 1
        iou = M.box_iou(box, s.box) if box is not None else 0.0
        cases.append(
            {
                "image_path": s.rel_image_path,
                "image_file": str(s.image_path),
                "box_true": [float(v) for v in s.box],
                "box_pred": None if box is None else [float(v) for v in box],
                "iou": float(iou),
                "missing": box is None,
            }
        )
    return {"metrics": {"iou": _mean(c["iou"] for c in cases)}, "cases": cases, "missing": missing}


def _eval_regression(samples: list[Sample], preds: dict, used: set, sizes: dict, pred_dir: Path | None = None,
                     rows: dict | None = None) -> dict:
    cases, missing = [], 0
    for s in samples:
        n = s.num_classes
        k = _key(s.rel_image_path, s.task_id)
        index, e = preds.get(k, (None, None))
        where = _where("regression", pred_dir or Path("."), index, s, rows)
        pts = None
        if e is not None:
            used.add(k)
            if e.get("predicted_points_pixels") is not None:
                pts = _numbers(e["predicted_points_pixels"], 2 * n, "predicted_points_pixels", where).reshape(n, 2)
            elif e.get("predicted_points_normalized") is not None:
                w, h = _image_size(s.image_path, sizes)
                pts = _numbers(e["predicted_points_normalized"], 2 * n, "predicted_points_normalized", where).reshape(n, 2)
                pts = pts * np.array([w, h])
        if pts is None:
            missing += 1
            w, h = _image_size(s.image_path, sizes)
            errs = np.full(n, math.hypot(w, h))
        else:
            errs = M.radial_errors(pts, s.points)
        row = {
            "image_path": s.rel_image_path,
            "image_file": str(s.image_path),
            "points_true": s.points.tolist(),
            "points_pred": None if pts is None else pts.tolist(),
            "errors_px": [float(v) for v in errs],
            "mre_px": float(errs.mean()),
            "mre_mm": float(errs.mean() * s.pixel_size_mm) if s.pixel_size_mm else None,
            "missing": pts is None,
        }
        hc_true = _finite(s.extra.get("head_circumference_mm"))
        if hc_true is not None and s.pixel_size_mm and n == 4:
            hc_pred = points_biometry(pts)[2] * s.pixel_size_mm if pts is not None else 0.0
            row.update(hc_true_mm=hc_true, hc_pred_mm=float(hc_pred), hc_abs_err_mm=abs(hc_pred - hc_true))
        cases.append(row)
    metrics = {"mre_px": _mean(c["mre_px"] for c in cases)}
    if all(c["mre_mm"] is not None for c in cases):
        metrics["mre_mm"] = _mean(c["mre_mm"] for c in cases)
    hc = [c["hc_abs_err_mm"] for c in cases if "hc_abs_err_mm" in c]
    if hc:
        metrics["hc_abs_err_mm"] = float(np.mean(hc))
        metrics["hc_n"] = len(hc)
    return {"metrics": metrics, "cases": cases, "missing": missing}


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

      ``metrics`` per kind: segmentation ``dice``, ``hd`` (pixels; macro mean over non-background classes of
      the per-class means over images), ``dice_per_class``, ``hd_per_class``, and when every row has a pixel
      size ``hd_mm``; with ``head_circumference_mm`` also ``hc_abs_err_mm`` (ellipse fit of the predicted mask).
      Classification ``auc``, ``accuracy``, ``macro_f1``, ``mcc``, ``auc_skipped_classes`` (see
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
    rows = csv_rows(data_root, split)
    loaded: dict[str, dict] = {}
    used: dict[str, set] = {}
    sizes: dict = {}
    out_tasks: dict[str, dict] = {}
    # prediction files first: a malformed one fails before any mask is scored
    for kind in dict.fromkeys(samples[0].kind for samples in split.values()):
        if kind != "segmentation":
            loaded[kind] = _load_pred_json(pred_dir, kind, set(split))
            used[kind] = set()
    for task_id, samples in split.items():
        kind = samples[0].kind
        if kind == "segmentation":
            res = _eval_segmentation(samples, pred_dir, rows)
        elif kind == "classification":
            res = _eval_classification(samples, loaded[kind], used[kind], pred_dir, rows)
        elif kind == "detection":
            res = _eval_detection(samples, loaded[kind], used[kind], sizes, pred_dir, rows)
        else:
            res = _eval_regression(samples, loaded[kind], used[kind], sizes, pred_dir, rows)
        out_tasks[task_id] = {
            "kind": kind,
            "num_classes": samples[0].num_classes,
            "class_names": samples[0].class_names,
            "n": len(samples),
            **res,
        }
    scored = set(split)
    unmatched = {
        PRED_FILES[kind]: sum(1 for k in entries if k not in used[kind] and (tasks is None or k[1] in scored))
        for kind, entries in loaded.items()
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
    probabilities; boxes and points are written in pixels and normalised by the image size.

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
    counts: dict[str, int] = {}
    for task_id, samples in split.items():
        for s in samples:
            if s.kind == "segmentation":
                dst = out / output_mask_relpath(s.rel_mask_path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s.mask_path, dst)
            elif s.kind == "classification":
                probs = [0.0] * s.num_classes
                probs[s.label] = 1.0
                entries["classification"].append(
                    {"image_path": s.rel_image_path, "task_id": task_id, "predicted_class": int(s.label), "predicted_probs": probs}
                )
            elif s.kind == "detection":
                w, h = _image_size(s.image_path, sizes)
                box = [float(v) for v in s.box]
                entries["detection"].append(
                    {
                        "image_path": s.rel_image_path,
                        "task_id": task_id,
                        "bbox_normalized": [box[0] / w, box[1] / h, box[2] / w, box[3] / h],
                        "bbox_pixels": box,
                    }
                )
            else:
                w, h = _image_size(s.image_path, sizes)
                pts = np.asarray(s.points, dtype=np.float64)
                entries["regression"].append(
                    {
                        "image_path": s.rel_image_path,
                        "task_id": task_id,
                        "predicted_points_normalized": (pts / np.array([w, h])).reshape(-1).tolist(),
                        "predicted_points_pixels": pts.reshape(-1).tolist(),
                    }
                )
        counts[task_id] = len(samples)
    for kind, rows in entries.items():
        if rows:
            (out / PRED_FILES[kind]).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return counts
