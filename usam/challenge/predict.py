"""Write the FMC_UIA challenge outputs for a split with a model and its adapters (``usam predict``).

For every row of every ``DATA_ROOT/csv_files/*.csv`` whose task an adapter serves (its ``tasks`` include the
row's ``task_id``), :func:`predict_split` writes into ``out_dir``:

- segmentation: a PNG of class ids (uint8) at ``output_mask_relpath(mask_path)``;
- ``classification_predictions.json``: ``[{"image_path", "task_id", "predicted_class", "predicted_probs"}]``,
  probabilities in float64, summing to 1;
- ``detection_predictions.json``: ``[{"image_path", "task_id", "bbox_normalized", "bbox_pixels"}]``
  (``[x0, y0, x1, y1]``; normalised = pixels / (W, H, W, H));
- ``regression_predictions.json``: ``[{"image_path", "task_id", "predicted_points_normalized",
  "predicted_points_pixels"}]`` (``[x1, y1, x2, y2, ...]``; normalised = pixels / (W, H));
- ``missing_tasks.json``: the tasks of the split no adapter serves (``[]`` when none): never silently skipped;
- ``failed_images.json`` (only when some image could not be decoded): those images and their tasks.

``image_path`` is written exactly as in the CSV. JSON entries are ordered by ``(task_id, image_path)``.

Each image is read once and encoded once per encoder state: rows are grouped by image, and every adapter
that needs the image runs on it before the next image (adapters without encoder LoRA share the bare
embedding through the model's content-keyed cache; each LoRA adapter encodes with its own LoRA).
With ``batch_size > 1`` the encoder runs on ``batch_size`` images at a time (useful on a GPU).

Resuming: every finished row is appended (and flushed) to a journal ``out_dir/.usam_predict/<task>.jsonl``;
a rerun skips rows that are in the journal, so an interrupted run continues where it stopped. A segmentation
row also needs its PNG, and it is verified: a PNG that is empty, cannot be decoded, is not single-channel, does
not have the image's size or holds values ``>= num_classes`` is removed and its row predicted again. The final
JSON files are rebuilt from the journals and written atomically at the end (PNGs are written atomically too):
no partial file is ever left. ``.usam_predict/state.json``
records which adapter (name, weights hash, backbone, precision) produced each task; a rerun with a
different one for a task refuses to mix outputs unless ``restart=True``, which re-predicts the run's tasks.

Errors (all raised before any work, and before a model is needed: :func:`check_predict_inputs`): a bad data
root or CSV, image files that do not exist (all listed), rows whose outputs would overwrite each other (two
segmentation rows with one ``mask_path``: both rows named), and an output folder that is a file or cannot be
written raise :class:`~usam.errors.DataError`; no adapter serving any task raises
:class:`~usam.errors.AdapterError`. An image that exists but cannot be decoded does not stop the run: it is
reported, its rows stay unpredicted (they score as worst case), and it is listed in the result and in
``failed_images.json`` (the CLI then exits with code 3). A rerun retries it.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..data.fmc import Sample, output_mask_relpath, read_split
from ..errors import AdapterError, DataError, InputImageError, UsamError
from ..io import read_image, write_png, write_text_atomic
from .checks import check_output_dir, csv_names
from .evaluate import PRED_FILES

__all__ = ["JOURNAL_DIR", "MISSING_TASKS_NAME", "FAILED_IMAGES_NAME", "adapter_fingerprint", "check_predict_inputs",
           "predict_split"]

#: Side folder of the journals and the state file.
JOURNAL_DIR = ".usam_predict"
STATE_NAME = "state.json"
MISSING_TASKS_NAME = "missing_tasks.json"
FAILED_IMAGES_NAME = "failed_images.json"
#: Problems listed in one error message before "... and N more".
MAX_LISTED = 20


# ------------------------------------------------------------------------------------------------ helpers
def _dump(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_id) or "_"


def _listed(items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = len(items) - len(shown)
    return "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")


def adapter_fingerprint(model, name: str) -> dict:
    """What produced a task's outputs: adapter name + weights hash, backbone checksum, precision."""
    from ..backbones.base import sha256_state_dict

    adapter = model.adapters[name]
    state = dict(adapter.head_state())
    if adapter.lora_name:
        from ..adapters.lora import lora_state_dict

        state.update({f"lora.{k}": v for k, v in lora_state_dict(model.backbone.image_encoder, adapter.lora_name).items()})
    return {
        "adapter": name,
        "weights_sha256": sha256_state_dict(state),
        "backbone": model.backbone.name,
        "backbone_sha256": model.backbone.checksum,
        "precision": model.precision,
    }


def _entry_kind(entry: dict) -> str | None:
    if "predicted_probs" in entry:
        return "classification"
    if "bbox_pixels" in entry:
        return "detection"
    if "predicted_points_pixels" in entry:
        return "regression"
    if "mask_path" in entry:
        return "segmentation"
    return None


class _Journal:
    """Append-only JSON-lines record of the finished rows of one task."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        self._fh = None
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            lines = text.split("\n")
            good: list[str] = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: that row is simply redone
                    continue
                if isinstance(e, dict) and "image_path" in e and "task_id" in e:
                    self.entries[e["image_path"]] = e
                    good.append(line)
            clean = "".join(g + "\n" for g in good)
            if clean != text:
                write_text_atomic(path, clean)

    def add(self, entry: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(entry, ensure_ascii=False, allow_nan=False) + "\n")
        self._fh.flush()
        self.entries[entry["image_path"]] = entry

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _row_entry(sample: Sample, pred, hw: tuple[int, int], out_rel: str | None) -> dict:
    """The challenge's JSON entry (or, for segmentation, the journal record) of one row."""
    h, w = hw
    tid = sample.task_id
    entry = {"image_path": sample.rel_image_path, "task_id": tid}
    if sample.kind == "segmentation":
        entry["mask_path"] = out_rel
    elif sample.kind == "classification":
        p = np.asarray(pred.probabilities[tid], dtype=np.float64).reshape(-1)
        p = p / p.sum()
        entry["predicted_class"] = int(np.argmax(p))
        entry["predicted_probs"] = [float(v) for v in p]
    elif sample.kind == "detection":
        b = np.asarray(pred.boxes[tid], dtype=np.float64).reshape(4)
        x0, x1 = sorted((float(np.clip(b[0], 0, w)), float(np.clip(b[2], 0, w))))
        y0, y1 = sorted((float(np.clip(b[1], 0, h)), float(np.clip(b[3], 0, h))))
        entry["bbox_normalized"] = [x0 / w, y0 / h, x1 / w, y1 / h]
        entry["bbox_pixels"] = [x0, y0, x1, y1]
    else:
        pts = np.asarray(pred.keypoints[tid], dtype=np.float64).reshape(-1, 2)
        entry["predicted_points_normalized"] = [float(v) for v in (pts / np.array([w, h], dtype=np.float64)).reshape(-1)]
        entry["predicted_points_pixels"] = [float(v) for v in pts.reshape(-1)]
    return entry


def _encode_batch(model, images: list[np.ndarray]) -> None:
    """Fill ``model``'s embedding cache for ``images`` in one encoder call (active encoder state)."""
    import torch

    from ..embedding import Embedded, image_digest

    todo: dict[str, np.ndarray] = {}
    for im in images:
        key = image_digest(im) + "|" + model.encoder_key()
        if key not in todo and model.cache.get(key) is None:
            todo[key] = im
    if not todo:
        return
    xs, geos = [], []
    for im in todo.values():
        x, g = model.backbone.preprocess(im)
        xs.append(x)
        geos.append(g)
    t0 = time.perf_counter()
    with torch.no_grad(), model.autocast():
        emb = model.backbone.encode(torch.cat(xs).to(model.device))
    model.last_encode_seconds = time.perf_counter() - t0
    model.encoder_calls += len(todo)
    for i, (key, g) in enumerate(zip(todo, geos)):
        model.cache.put(Embedded(emb[i : i + 1].float().clone(), g, key))


def _read(path: Path):
    try:
        return read_image(path)
    except InputImageError as exc:
        return exc


def _bad_output_mask(path: Path, sample: Sample, sizes: dict) -> str | None:
    """Why a finished segmentation row's PNG cannot be kept (``None``: it is fine). Only headers and the mask
    itself are read."""
    import cv2
    from PIL import Image

    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    try:
        mask = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (cv2.error, OSError):
        mask = None
    if mask is None:
        return "not a decodable PNG"
    if mask.ndim != 2:
        return f"not a single-channel PNG (shape {mask.shape})"
    if sample.image_path not in sizes:
        try:
            with Image.open(sample.image_path) as im:
                sizes[sample.image_path] = (int(im.size[1]), int(im.size[0]))
        except Exception:  # the image itself will be reported when it is read
            sizes[sample.image_path] = None
    hw = sizes[sample.image_path]
    if hw is None or mask.shape != hw:
        return f"{mask.shape[1]}x{mask.shape[0]} but the image is " + (f"{hw[1]}x{hw[0]}" if hw else "unreadable")
    top = int(mask.max()) if mask.size else 0
    if top >= sample.num_classes:
        return f"holding value {top} but the task has {sample.num_classes} classes"
    return None


def _segmentation_outputs(data_root, split: dict) -> dict[tuple[str, str], str]:
    """``{(task_id, image_path): output mask path}`` of every segmentation row; refuses rows that share one."""
    seg_out: dict[tuple[str, str], str] = {}
    seen: dict[str, list[tuple[str, int, str]]] = {}  # normalised output path -> [(task, row, mask_path)]
    for tid, rows in split.items():
        for i, s in enumerate(rows, 1):
            if s.kind != "segmentation":
                continue
            rel = output_mask_relpath(s.rel_mask_path)
            seg_out.setdefault((tid, s.rel_image_path), rel)
            seen.setdefault(os.path.normcase(os.path.normpath(rel)), []).append((tid, i, s.rel_mask_path))
    clashes = {k: v for k, v in seen.items() if len(v) > 1}
    if clashes:
        names = csv_names(data_root, split)
        parts = []
        for rel, rows in list(clashes.items())[:5]:
            where = " and ".join(f"{names[t]} row {i}" for t, i, _ in rows[:4]) + (f" and {len(rows) - 4} more" if len(rows) > 4 else "")
            masks = sorted({m for _, _, m in rows})
            parts.append(f"{where} write {rel!r} (mask_path {', '.join(repr(m) for m in masks)})")
        more = f"; ... and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise DataError(
            f"{len(clashes)} output mask(s) of {str(data_root)!r} would be written by several rows, one overwriting "
            f"the other: " + "; ".join(parts) + more + ": give each segmentation row its own mask_path"
        )
    return seg_out


def _prepare(data_root, out_dir, tasks) -> tuple[dict, dict]:
    split = read_split(Path(data_root), tasks=tasks, check_files=False)
    missing_files: dict[Path, str] = {}
    for tid, rows in split.items():
        for s in rows:
            if s.image_path not in missing_files and not s.image_path.is_file():
                missing_files[s.image_path] = f"{tid}: {s.rel_image_path!r} (looked for {str(s.image_path)!r})"
    if missing_files:
        raise DataError(f"{len(missing_files)} image file(s) of {str(data_root)!r} do not exist:" + _listed(list(missing_files.values())))
    seg_out = _segmentation_outputs(data_root, split)
    check_output_dir(out_dir, "output folder")
    return split, seg_out


def check_predict_inputs(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    tasks: list[str] | None = None,
) -> dict:
    """Everything :func:`predict_split` checks before it needs a model; writes nothing.

    The split's CSVs are valid, its image files exist, no two segmentation rows write the same output mask,
    and ``out_dir`` is (or can be created as) a writable folder.

    Returns:
      The split, ``{task_id: [Sample, ...]}``.

    Raises:
      DataError: naming the CSV rows, files or folder at fault.
    """
    return _prepare(data_root, out_dir, tasks)[0]


# ------------------------------------------------------------------------------------------------- public
def predict_split(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    model,
    tasks: list[str] | None = None,
    adapters: list[str] | None = None,
    batch_size: int = 1,
    restart: bool = False,
    progress: bool = True,
    log=None,
) -> dict:
    """Predict every row of a split in the challenge's output formats (see the module docstring).

    Args:
      data_root: the split folder holding ``csv_files/`` (e.g. ``fmc_uia_dev/test``).
      out_dir: output folder (created); finished outputs already there are kept (resume).
      model: a :class:`~usam.model.UsamModel` with the adapters loaded.
      tasks: task ids to predict (``None``: every task of the split).
      adapters: names of loaded adapters to use (``None``: all loaded, in load order). When several serve a
        task, the first one does.
      batch_size: images per encoder call.
      restart: ignore (and overwrite) earlier outputs of the tasks predicted now.
      progress: show a tqdm progress bar.
      log: ``callable(str)`` for notes (default: silent).

    Returns:
      A JSON-able summary: ``{"out_dir", "tasks": {task_id: {"kind", "adapter", "rows", "predicted",
      "skipped", "redone"}}, "missing_tasks": [{"task_id", "kind", "num_classes", "rows"}], "failed_images":
      [{"image_path", "tasks", "error"}], "images": encoded this run, "images_total", "encoder_calls",
      "seconds", "images_per_s", "files": [written file names]}``.

    Raises:
      DataError: bad data root / CSVs, missing image files, mask paths that leave ``out_dir``, rows that share
        an output mask, an ``out_dir`` that is a file or cannot be written (see :func:`check_predict_inputs`).
      AdapterError: no adapter loaded, unknown adapter names, no adapter serving any task to predict, an adapter
        whose task disagrees with the CSV (kind, number of classes or points).
      UsamError: ``out_dir`` holds outputs of another adapter / backbone for a task (use ``restart``).
    """
    from tqdm.auto import tqdm

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    if batch_size < 1:
        raise UsamError(f"batch size must be >= 1, got {batch_size}")
    # ---- data, image files, output paths, output folder (cheap, before any work); decoding problems come
    # later, per image
    split, seg_out_all = _prepare(data_root, out_dir, tasks)

    # ---- which adapter serves which task
    names = list(model.adapters) if adapters is None else list(dict.fromkeys(adapters))
    if not names:
        raise AdapterError("no adapter is loaded: pass the adapters that serve the split's tasks (--adapters DIR_OR_ID ...)")
    unknown = [n for n in names if n not in model.adapters]
    if unknown:
        raise AdapterError(f"adapter(s) {unknown} are not loaded (loaded: {sorted(model.adapters)})")
    served: dict[str, str] = {}
    missing_tasks: list[dict] = []
    mismatches: list[str] = []
    for tid, rows in split.items():
        s0 = rows[0]
        servers = [n for n in names if tid in model.adapters[n].tasks]
        if not servers:
            missing_tasks.append({"task_id": tid, "kind": s0.kind, "num_classes": s0.num_classes, "rows": len(rows)})
            continue
        name = servers[0]
        spec = model.adapters[name].tasks[tid]
        if spec.kind != s0.kind or int(spec.num_classes) != int(s0.num_classes):
            what = "points" if s0.kind == "regression" else "classes"
            mismatches.append(f"{tid}: the CSV has {s0.kind} with {s0.num_classes} {what}, adapter {name!r} "
                              f"predicts {spec.kind} with {spec.num_classes}")
            continue
        served[tid] = name
        if len(servers) > 1:
            log(f"usam predict: {tid} is served by adapters {servers}: using {name!r}")
    if mismatches:
        raise AdapterError("adapter tasks disagree with the data:" + _listed(mismatches))
    if not served:
        shown_tasks = ", ".join(f"{m['task_id']} ({m['kind']})" for m in missing_tasks)
        shown_adapters = ", ".join(f"{n!r} (tasks: {', '.join(sorted(model.adapters[n].tasks)) or 'none'})" for n in names)
        raise AdapterError(
            f"no adapter serves any of the {len(missing_tasks)} task(s) to predict in {str(data_root)!r}: "
            f"{shown_tasks}; adapters given: {shown_adapters}: load adapters trained on these tasks, or choose "
            f"served tasks with --tasks"
        )
    for n in names:
        if not any(a == n for a in served.values()):
            log(f"usam predict: adapter {n!r} serves none of the tasks predicted here (its tasks: {sorted(model.adapters[n].tasks)})")

    out = Path(out_dir)
    seg_out = {k: v for k, v in seg_out_all.items() if k[0] in served}
    out.mkdir(parents=True, exist_ok=True)
    jdir = out / JOURNAL_DIR

    # ---- state: refuse to mix outputs of different adapters / backbones for one task
    state_path = jdir / STATE_NAME
    state = {"tasks": {}}
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            assert isinstance(state.get("tasks"), dict)
        except (json.JSONDecodeError, AssertionError, UnicodeDecodeError) as exc:
            raise UsamError(f"{state_path} is damaged ({exc}): delete {str(jdir)!r} to start afresh") from exc
    fps = {n: adapter_fingerprint(model, n) for n in set(served.values())}
    conflicts = [
        f"{tid}: earlier outputs from {state['tasks'][tid]}, now {fps[n]}"
        for tid, n in served.items()
        if tid in state["tasks"] and state["tasks"][tid] != fps[n]
    ]
    if conflicts and not restart:
        raise UsamError(
            f"{str(out)!r} holds predictions made with another adapter, backbone or precision for "
            f"{len(conflicts)} task(s) (use --restart to redo them, or another output folder):" + _listed(conflicts)
        )
    for tid, n in served.items():
        state["tasks"][tid] = fps[n]
    write_text_atomic(state_path, _dump(state))

    journals: dict[str, _Journal] = {}
    for tid in served:
        jp = jdir / f"{_safe_name(tid)}.jsonl"
        if restart and jp.exists():
            jp.unlink()
        journals[tid] = _Journal(jp)

    # ---- work: rows not done yet, grouped by image (first-seen order)
    work: dict[Path, list[Sample]] = {}
    stats = {tid: {"kind": split[tid][0].kind, "adapter": n, "rows": len(split[tid]), "predicted": 0, "skipped": 0,
                   "redone": 0}
             for tid, n in served.items()}
    sizes: dict = {}
    for tid in served:
        j = journals[tid]
        for s in split[tid]:
            done = s.rel_image_path in j.entries
            if done and s.kind == "segmentation":
                png = out / seg_out[(tid, s.rel_image_path)]
                why = _bad_output_mask(png, s, sizes)
                if why is not None:
                    done = False
                    j.entries.pop(s.rel_image_path, None)
                    if why != "missing":
                        log(f"usam predict: {tid}: the earlier output {str(png)!r} is {why}: predicting it again")
                        stats[tid]["redone"] += 1
                        png.unlink()
            if done:
                stats[tid]["skipped"] += 1
            elif not any(r.task_id == tid and r.rel_image_path == s.rel_image_path for r in work.get(s.image_path, [])):
                work.setdefault(s.image_path, []).append(s)
    order = [p for p in dict.fromkeys(s.image_path for rows in split.values() for s in rows) if p in work]

    # adapters that do not change the encoder first (they share one embedding), then one per LoRA
    used = list(dict.fromkeys(n for n in names if n in served.values()))
    used.sort(key=lambda n: model.adapters[n].lora_name is not None)
    states: dict[str, list[str]] = {}
    for n in used:
        states.setdefault(model.adapters[n].lora_name or "-", []).append(n)

    failed: list[dict] = []
    encoded = 0
    calls0 = model.encoder_calls
    active0 = model.active_adapter
    capacity0 = model.cache.capacity
    model.cache.capacity = max(capacity0, batch_size * max(1, len(states)) + 1)
    bar = tqdm(total=len(order), desc="usam predict", unit="img", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=1)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        ahead = pool.submit(lambda b: [_read(p) for p in b], batches[0]) if batches else None
        for bi, batch in enumerate(batches):
            images = ahead.result()
            ahead = pool.submit(lambda b: [_read(p) for p in b], batches[bi + 1]) if bi + 1 < len(batches) else None
            ok = []
            for path, im in zip(batch, images):
                if isinstance(im, InputImageError):
                    rows = work[path]
                    failed.append({"image_path": rows[0].rel_image_path, "tasks": sorted({r.task_id for r in rows}), "error": str(im)})
                    log(f"usam predict: skipping unreadable image: {im}")
                    bar.update(1)
                else:
                    ok.append((path, im))
            if batch_size > 1 and ok:
                for members in states.values():
                    need = [im for path, im in ok if any(served[r.task_id] in members for r in work[path])]
                    if need:
                        model.set_adapter(members[0])
                        _encode_batch(model, need)
            for path, im in ok:
                rows = work[path]
                hw = im.shape[:2]
                for n in used:
                    mine = [r for r in rows if served[r.task_id] == n]
                    if not mine:
                        continue
                    pred = model.predict(im, adapter=n)
                    for r in mine:
                        out_rel = seg_out.get((r.task_id, r.rel_image_path))
                        if r.kind == "segmentation":
                            mask = np.asarray(pred.masks[r.task_id])
                            if mask.shape != hw:  # pragma: no cover - heads return original-size masks
                                raise UsamError(f"adapter {n!r} returned a {mask.shape} mask for a {hw} image")
                            write_png(out / out_rel, mask.astype(np.uint8))
                        journals[r.task_id].add(_row_entry(r, pred, hw, out_rel))
                        stats[r.task_id]["predicted"] += 1
                encoded += 1
                bar.update(1)
            if failed:
                bar.set_postfix(failed=len(failed))
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        for j in journals.values():
            j.close()
        model.cache.capacity = capacity0
        if model.active_adapter != active0 and (active0 is None or active0 in model.adapters):
            model.set_adapter(active0)

    # ---- final files, from every journal in the folder (earlier runs' tasks included)
    by_kind: dict[str, list[dict]] = {k: [] for k in PRED_FILES}
    by_path = {j.path: j for j in journals.values()}
    for jp in sorted(jdir.glob("*.jsonl")):
        j = by_path.get(jp) or _Journal(jp)
        for e in j.entries.values():
            kind = _entry_kind(e)
            if kind in by_kind:
                by_kind[kind].append(e)
    files = []
    for kind, entries in by_kind.items():
        entries.sort(key=lambda e: (str(e["task_id"]), str(e["image_path"])))
        write_text_atomic(out / PRED_FILES[kind], _dump(entries))
        files.append(PRED_FILES[kind])
    write_text_atomic(out / MISSING_TASKS_NAME, _dump(missing_tasks))
    files.append(MISSING_TASKS_NAME)
    failed_path = out / FAILED_IMAGES_NAME
    if failed:
        write_text_atomic(failed_path, _dump(failed))
        files.append(FAILED_IMAGES_NAME)
    elif failed_path.exists():
        failed_path.unlink()

    seconds = time.perf_counter() - t_start
    return {
        "out_dir": str(out.resolve()),
        "tasks": stats,
        "missing_tasks": missing_tasks,
        "failed_images": failed,
        "images": encoded,
        "images_total": len(dict.fromkeys(s.image_path for tid in served for s in split[tid])),
        "encoder_calls": model.encoder_calls - calls0,
        "seconds": seconds,
        "images_per_s": encoded / seconds if seconds > 0 else 0.0,
        "files": files,
    }
