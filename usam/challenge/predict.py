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

Sharded (several processes started by ``torchrun`` / ``accelerate launch``, :mod:`usam.challenge.shard`): every
rank checks the inputs and routes the tasks as above; rank 0 then claims the tasks, reads every journal (what
earlier runs left, whatever their number of processes) and works out what is left to do, which it sends to all.
The images left, in the order above, are dealt out one by one (image ``i`` to rank ``i % world_size``): each is
encoded on one rank only, for all its rows. Each rank writes its images' PNGs and its own journals
``<task>@<rank>.jsonl``, so no two processes write one file. When every rank is done, rank 0 merges the journals
into ``<task>.jsonl`` and writes the JSON files, byte for byte what one process writes (``out_dir`` must be a
folder every process sees: on several nodes, a shared file system; rank 0 refuses when a row is lacking). An
error on any rank (the refusals above come before any work, on every rank alike) is raised on every rank: none
is left waiting.

Errors (all raised before any work, and before a model is needed: :func:`check_predict_inputs`): a bad data
root or CSV, image files that do not exist (all listed), rows whose outputs would overwrite each other (two
segmentation rows with one ``mask_path``: both rows named), an output folder that is a file or cannot be
written, and one that is the data folder itself or would overwrite a file the split reads (an image, a
ground-truth mask, a CSV) raise :class:`~usam.errors.DataError`; no adapter serving any task raises
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.fmc import MAX_LISTED, Sample, csv_folder, output_mask_relpath, read_split
from ..errors import AdapterError, DataError, InputImageError, UsamError
from ..io import read_image, write_png, write_text_atomic
from ..tasks import KINDS
from .checks import check_output_dir, csv_names
from .evaluate import PRED_FILES
from .shard import Shard, agree, current_shard, each

__all__ = ["JOURNAL_DIR", "MISSING_TASKS_NAME", "FAILED_IMAGES_NAME", "adapter_fingerprint", "check_predict_inputs",
           "predict_split", "route_tasks"]

#: Side folder of the journals and the state file.
JOURNAL_DIR = ".usam_predict"
STATE_NAME = "state.json"
MISSING_TASKS_NAME = "missing_tasks.json"
FAILED_IMAGES_NAME = "failed_images.json"


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
    return {
        "adapter": name,
        "weights_sha256": model.adapters[name].weights_sha256(model.backbone.image_encoder),
        "backbone": model.backbone.name,
        "backbone_sha256": model.backbone.checksum,
        "precision": model.precision,
    }


def _entry_kind(entry: dict) -> str | None:
    """The kind whose answer keys a journal entry holds."""
    return next((name for name, k in KINDS.items() if any(key in entry for key in k.answer_keys)), None)


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
    """The challenge's JSON entry (or, for a per-row PNG kind, the journal record) of one row."""
    answer = KINDS[sample.kind].output_entry(sample, pred, hw, out_rel)
    return {"image_path": sample.rel_image_path, "task_id": sample.task_id, **answer}


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
            if KINDS[s.kind].pred_file is not None:  # this kind's answers go to a JSON file, not a PNG per row
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
    _spare_inputs(data_root, out_dir, split, seg_out)
    return split, seg_out


def _spare_inputs(data_root, out_dir, split: dict, seg_out: dict) -> None:
    """Refuse an output folder that is the split's own folder (the mask PNGs would land in its layout, over its
    ground truth) or where any output file would be one the split reads (an image, a mask, a CSV)."""
    split_dir = csv_folder(Path(data_root)).parent
    out = Path(os.path.realpath(out_dir))
    if out == Path(os.path.realpath(split_dir)):
        raise DataError(f"output folder {str(out_dir)!r} is the data folder {str(data_root)!r}: the predicted masks "
                        "would be written into its layout, over its ground-truth masks: give a separate output folder")
    inputs: dict[Path, str] = {}
    for rows in split.values():
        for s in rows:
            for path in (s.image_path, s.mask_path):
                if path is not None:
                    inputs[Path(os.path.realpath(path))] = str(path)
    for csv_path in (split_dir / "csv_files").glob("*.csv"):
        inputs[Path(os.path.realpath(csv_path))] = str(csv_path)
    written = [*dict.fromkeys(seg_out.values()), *PRED_FILES.values(), MISSING_TASKS_NAME, FAILED_IMAGES_NAME]
    hits = [f"{rel!r} is {inputs[p]!r}" for rel in written if (p := Path(os.path.realpath(out / rel))) in inputs]
    if hits:
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        raise DataError(f"output folder {str(out_dir)!r} would overwrite {len(hits)} file(s) the data reads (images, "
                        f"ground-truth masks, CSVs): {'; '.join(hits[:3])}{more}: give a separate output folder")


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


# ------------------------------------------------------------------------------------------------- routing
def route_tasks(model, split: dict, names: list[str], log=None, prog: str = "usam predict"
                ) -> tuple[dict[str, str], list[dict], list[str]]:
    """Which loaded adapter serves which task of ``split``: the first of ``names`` whose tasks include it.

    Returns:
      ``({task_id: adapter name}, [{"task_id", "kind", "num_classes", "rows"} of each task no adapter serves],
      [one line per task whose adapter disagrees with the CSV (kind, number of classes or points)])``; tasks
      that disagree are not served. ``log`` (``callable(str)``) hears of tasks several adapters serve.
    """
    served: dict[str, str] = {}
    unserved: list[dict] = []
    mismatches: list[str] = []
    for tid, rows in split.items():
        s0 = rows[0]
        servers = [n for n in names if tid in model.adapters[n].tasks]
        if not servers:
            unserved.append({"task_id": tid, "kind": s0.kind, "num_classes": s0.num_classes, "rows": len(rows)})
            continue
        name = servers[0]
        spec = model.adapters[name].tasks[tid]
        if spec.kind != s0.kind or int(spec.num_classes) != int(s0.num_classes):
            mismatches.append(f"{tid}: the CSV has {s0.kind} with {s0.num_classes} {KINDS[s0.kind].count_noun}, "
                              f"adapter {name!r} predicts {spec.kind} with {spec.num_classes}")
            continue
        served[tid] = name
        if len(servers) > 1 and log:
            log(f"{prog}: {tid} is served by adapters {servers}: using {name!r}")
    return served, unserved, mismatches


def _routes(model, split: dict, adapters: list[str] | None, data_root, log) -> tuple[list[str], dict, list[dict]]:
    """``(adapter names, {task_id: adapter}, [unserved task])`` for ``usam predict``; refuses what cannot run."""
    names = list(model.adapters) if adapters is None else list(dict.fromkeys(adapters))
    if not names:
        raise AdapterError("no adapter is loaded: pass the adapters that serve the split's tasks (--adapters DIR_OR_ID ...)")
    unknown = [n for n in names if n not in model.adapters]
    if unknown:
        raise AdapterError(f"adapter(s) {unknown} are not loaded (loaded: {sorted(model.adapters)})")
    served, missing_tasks, mismatches = route_tasks(model, split, names, log)
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
    return names, served, missing_tasks


# ------------------------------------------------------------------------------------------------- journal
def _claim_tasks(model, out: Path, served: dict, restart: bool) -> None:
    """Record in ``state.json`` which adapter produces each served task; refuse to mix outputs of different
    adapters / backbones / precisions for one task unless ``restart``."""
    jdir = out / JOURNAL_DIR
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


def _rank_journals(jdir: Path, tid: str) -> list[Path]:
    """The per-rank journals of a task a sharded run left (``<task>@<rank>.jsonl``), in rank order."""
    found = []
    for p in jdir.glob(f"{_safe_name(tid)}@*.jsonl"):
        rank = p.name[len(_safe_name(tid)) + 1 : -len(".jsonl")]
        if rank.isdigit():
            found.append((int(rank), p))
    return [p for _, p in sorted(found)]


def _merge_journal(jp: Path, parts: list[Path]) -> None:
    """Fold per-rank journals into the task's journal ``jp`` (written atomically first, then the parts go)."""
    entries = dict(_Journal(jp).entries)
    for part in parts:
        entries.update(_Journal(part).entries)
    write_text_atomic(jp, "".join(json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries.values()))
    for part in parts:
        part.unlink()


def _open_journals(jdir: Path, served: dict, restart: bool) -> dict[str, _Journal]:
    """Each served task's journal, with what earlier sharded runs left merged in (``restart``: all removed)."""
    journals: dict[str, _Journal] = {}
    for tid in served:
        jp = jdir / f"{_safe_name(tid)}.jsonl"
        parts = _rank_journals(jdir, tid)
        if restart:
            for q in [jp, *parts]:
                q.unlink(missing_ok=True)
        elif parts:
            _merge_journal(jp, parts)
        journals[tid] = _Journal(jp)
    return journals


def _rank_journal_writers(jdir: Path, served: dict, rank: int) -> dict[str, _Journal]:
    """The journals one rank of a sharded run appends to: its own file per task, no other process writes it."""
    return {tid: _Journal(jdir / f"{_safe_name(tid)}@{rank}.jsonl") for tid in served}


def _still_done(s: Sample, png: Path | None, journal: _Journal, sizes: dict, stats: dict, log) -> bool:
    """Whether a journalled row's output can be kept: its PNG (per-row PNG kinds) must be sound; a bad one is
    removed and the row forgotten."""
    if png is None:
        return True
    why = _bad_output_mask(png, s, sizes)
    if why is None:
        return True
    journal.entries.pop(s.rel_image_path, None)
    if why != "missing":
        log(f"usam predict: {s.task_id}: the earlier output {str(png)!r} is {why}: predicting it again")
        stats["redone"] += 1
        png.unlink()
    return False


def _pending(split: dict, served: dict, journals: dict, out: Path, seg_out: dict, log) -> tuple[dict, dict]:
    """``({image path: [rows not done yet]}, per-task stats)``; rows grouped by image in first-seen order."""
    work: dict[Path, list[Sample]] = {}
    stats = {tid: {"kind": split[tid][0].kind, "adapter": n, "rows": len(split[tid]), "predicted": 0, "skipped": 0,
                   "redone": 0}
             for tid, n in served.items()}
    sizes: dict = {}
    for tid in served:
        j = journals[tid]
        for s in split[tid]:
            png = out / seg_out[(tid, s.rel_image_path)] if (tid, s.rel_image_path) in seg_out else None
            if s.rel_image_path in j.entries and _still_done(s, png, j, sizes, stats[tid], log):
                stats[tid]["skipped"] += 1
            elif not any(r.task_id == tid and r.rel_image_path == s.rel_image_path for r in work.get(s.image_path, [])):
                work.setdefault(s.image_path, []).append(s)
    order = [p for p in dict.fromkeys(s.image_path for rows in split.values() for s in rows) if p in work]
    return {p: work[p] for p in order}, stats


# ------------------------------------------------------------------------------------------------- the loop
@dataclass
class _Run:
    """One prediction run: the model, the routing, where outputs go, and what happened."""

    model: object
    served: dict[str, str]
    used: list[str]                      # adapters in use: LoRA-free first (they share one embedding)
    states: dict[str, list[str]]         # encoder state (LoRA name or "-") -> its adapters
    out: Path
    seg_out: dict
    journals: dict
    stats: dict
    work: dict
    log: object
    failed: list[dict] = field(default_factory=list)
    encoded: int = 0


def _encode_ahead(run: _Run, ok: list[tuple[Path, np.ndarray]]) -> None:
    """Encode a batch of images once per encoder state that needs them (``model.embed_batch``)."""
    for members in run.states.values():
        need = [im for path, im in ok if any(run.served[r.task_id] in members for r in run.work[path])]
        if need:
            run.model.set_adapter(members[0])
            run.model.embed_batch(need)


def _predict_image(run: _Run, path: Path, im: np.ndarray) -> None:
    """Every pending row of one image: each adapter that serves one of its rows runs once."""
    rows, hw = run.work[path], im.shape[:2]
    for n in run.used:
        mine = [r for r in rows if run.served[r.task_id] == n]
        if not mine:
            continue
        pred = run.model.predict(im, adapter=n)
        for r in mine:
            out_rel = run.seg_out.get((r.task_id, r.rel_image_path))
            mask = KINDS[r.kind].output_mask(r, pred, hw)
            if mask is not None:
                write_png(run.out / out_rel, mask)
            run.journals[r.task_id].add(_row_entry(r, pred, hw, out_rel))
            run.stats[r.task_id]["predicted"] += 1
    run.encoded += 1


def _unreadable(run: _Run, path: Path, exc: InputImageError) -> None:
    rows = run.work[path]
    run.failed.append({"image_path": rows[0].rel_image_path, "tasks": sorted({r.task_id for r in rows}), "error": str(exc)})
    run.log(f"usam predict: skipping unreadable image: {exc}")


def _loop(run: _Run, batch_size: int, progress: bool) -> None:
    """Read images one batch ahead (a thread), encode each batch, predict every row."""
    from tqdm.auto import tqdm

    order = list(run.work)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bar = tqdm(total=len(order), desc="usam predict", unit="img", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        ahead = pool.submit(lambda b: [_read(p) for p in b], batches[0]) if batches else None
        for bi, batch in enumerate(batches):
            images = ahead.result()
            ahead = pool.submit(lambda b: [_read(p) for p in b], batches[bi + 1]) if bi + 1 < len(batches) else None
            ok = [(p, im) for p, im in zip(batch, images) if not isinstance(im, InputImageError)]
            for p, im in zip(batch, images):
                if isinstance(im, InputImageError):
                    _unreadable(run, p, im)
                    bar.update(1)
            if batch_size > 1 and ok:
                _encode_ahead(run, ok)
            for p, im in ok:
                _predict_image(run, p, im)
                bar.update(1)
            if run.failed:
                bar.set_postfix(failed=len(run.failed))
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        for j in run.journals.values():
            j.close()


def _encoder_states(model, names: list[str], served: dict) -> tuple[list[str], dict[str, list[str]]]:
    """``(adapters in use, LoRA-free first; {encoder state: its adapters})``."""
    used = list(dict.fromkeys(n for n in names if n in served.values()))
    used.sort(key=lambda n: model.adapters[n].lora_name is not None)
    states: dict[str, list[str]] = {}
    for n in used:
        states.setdefault(model.adapters[n].lora_name or "-", []).append(n)
    return used, states


def _begin(model, out: Path, served: dict, split: dict, seg_out: dict, restart: bool, log) -> tuple[dict, dict, dict]:
    """The start of a run, done by one process (rank 0 when sharded): the output folder, the state file, the
    journals (earlier shards merged in) and what is left: ``(journals, {image path: [rows]}, per-task stats)``."""
    out.mkdir(parents=True, exist_ok=True)
    _claim_tasks(model, out, served, restart)
    journals = _open_journals(out / JOURNAL_DIR, served, restart)
    work, stats = _pending(split, served, journals, out, seg_out, log)
    return journals, work, stats


def _start(shard: Shard, model, out: Path, served: dict, split: dict, seg_out: dict, restart: bool, log
           ) -> tuple[dict, dict, dict]:
    """:func:`_begin` in this process, or on rank 0 with its answer sent to every rank, each of which then
    appends to journals of its own (``<task>@<rank>.jsonl``): ``(journals to append to, work, stats)``."""
    if not shard.sharded:
        return _begin(model, out, served, split, seg_out, restart, log)
    work, stats = agree(shard, lambda: _begin(model, out, served, split, seg_out, restart, log)[1:])
    return _rank_journal_writers(out / JOURNAL_DIR, served, shard.rank), work, stats


def _run_shard(run: _Run, batch_size: int, progress: bool) -> dict:
    """Predict this process's images (``run.work``): ``{"predicted": {task_id: rows}, "failed": [...], "encoded",
    "encoder_calls"}``."""
    model = run.model
    calls0, active0, capacity0 = model.encoder_calls, model.active_adapter, model.cache.capacity
    model.cache.capacity = max(capacity0, batch_size * max(1, len(run.states)) + 1)
    try:
        _loop(run, batch_size, progress)
    finally:
        model.cache.capacity = capacity0
        if model.active_adapter != active0 and (active0 is None or active0 in model.adapters):
            model.set_adapter(active0)
    return {"predicted": {tid: st["predicted"] for tid, st in run.stats.items()}, "failed": run.failed,
            "encoded": run.encoded, "encoder_calls": model.encoder_calls - calls0}


def _combine(stats: dict, parts: list[dict], work: dict) -> tuple[list[dict], int, int]:
    """Fold the ranks' results (:func:`_run_shard`) into ``stats``; ``(failed images in work order, images
    encoded, encoder calls)``: what one process would have reported."""
    for tid, st in stats.items():
        st["predicted"] = sum(p["predicted"][tid] for p in parts)
    position = {rows[0].rel_image_path: i for i, rows in enumerate(work.values())}
    failed = sorted((f for p in parts for f in p["failed"]), key=lambda f: position[f["image_path"]])
    return failed, sum(p["encoded"] for p in parts), sum(p["encoder_calls"] for p in parts)


# ------------------------------------------------------------------------------------------------- outputs
def _write_outputs(out: Path, journals: dict, missing_tasks: list[dict], failed: list[dict]) -> list[str]:
    """The final files, rebuilt from every journal in the folder (earlier runs' tasks included); their names."""
    jdir = out / JOURNAL_DIR
    by_kind: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in PRED_FILES}
    by_path = {j.path: j for j in journals.values()}
    for jp in sorted(jdir.glob("*.jsonl")):  # a task's journal, then what a sharded run left of it (rank order)
        j = by_path.get(jp) or _Journal(jp)
        for e in j.entries.values():
            kind = _entry_kind(e)
            if kind in by_kind:
                by_kind[kind][(str(e["task_id"]), str(e["image_path"]))] = e
    files = []
    for kind, entries in by_kind.items():
        write_text_atomic(out / PRED_FILES[kind], _dump([entries[k] for k in sorted(entries)]))
        files.append(PRED_FILES[kind])
    write_text_atomic(out / MISSING_TASKS_NAME, _dump(missing_tasks))
    files.append(MISSING_TASKS_NAME)
    failed_path = out / FAILED_IMAGES_NAME
    if failed:
        write_text_atomic(failed_path, _dump(failed))
        files.append(FAILED_IMAGES_NAME)
    elif failed_path.exists():
        failed_path.unlink()
    return files


def _check_merged(out: Path, journals: dict, split: dict, failed: list[dict]) -> None:
    """Refuse to write the JSON files when the merged journals lack a row that was predicted (another node wrote
    its journal into a folder rank 0 does not see)."""
    unread = {f["image_path"] for f in failed}
    lacking = [f"{tid}: {s.rel_image_path!r}" for tid, j in journals.items() for s in split[tid]
               if s.rel_image_path not in j.entries and s.rel_image_path not in unread]
    if lacking:
        raise UsamError(f"{len(lacking)} predicted row(s) are not in the journals of {str(out)!r}: the output folder "
                        f"must be one every process (every node) shares; rerun to resume:" + _listed(lacking))


def _finish(out: Path, journals: dict, run: tuple[dict, dict, list, list], shard: Shard) -> list[str]:
    """Write the final files (``run``: served tasks, split, missing tasks, failed images); sharded, rank 0 does
    it once every rank is done, the ranks' journals merged and checked first."""
    served, split, missing_tasks, failed = run
    if shard.sharded:
        journals = _open_journals(out / JOURNAL_DIR, served, restart=False)
        _check_merged(out, journals, split, failed)
    return _write_outputs(out, journals, missing_tasks, failed)


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
    shard: Shard | None = None,
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
      shard: this process's share when launched as several (:func:`usam.challenge.shard.current_shard`, the
        default, finds it: a single process unless ``torchrun`` / ``accelerate launch`` started this one).

    Returns:
      A JSON-able summary: ``{"out_dir", "tasks": {task_id: {"kind", "adapter", "rows", "predicted",
      "skipped", "redone"}}, "missing_tasks": [{"task_id", "kind", "num_classes", "rows"}], "failed_images":
      [{"image_path", "tasks", "error"}], "images": encoded this run, "images_total", "encoder_calls",
      "seconds", "images_per_s", "files": [written file names]}``; sharded, the same on every rank (the counts
      of all ranks), plus ``"shard": {"rank", "world_size", "images": this rank's}``.

    Raises:
      DataError: bad data root / CSVs, missing image files, mask paths that leave ``out_dir``, rows that share
        an output mask, an ``out_dir`` that is a file or cannot be written (see :func:`check_predict_inputs`).
      AdapterError: no adapter loaded, unknown adapter names, no adapter serving any task to predict, an adapter
        whose task disagrees with the CSV (kind, number of classes or points).
      UsamError: ``out_dir`` holds outputs of another adapter / backbone for a task (use ``restart``).
    """
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    if batch_size < 1:
        raise UsamError(f"batch size must be >= 1, got {batch_size}")
    shard = shard or current_shard(str(model.device))
    # data, image files, output paths, output folder, routing: cheap, before any work, the same on every rank
    split, seg_out_all = _prepare(data_root, out_dir, tasks)
    names, served, missing_tasks = _routes(model, split, adapters, data_root, log if shard.main else (lambda _m: None))
    out = Path(out_dir)
    seg_out = {k: v for k, v in seg_out_all.items() if k[0] in served}
    journals, work, stats = _start(shard, model, out, served, split, seg_out, restart, log)
    mine = {p: work[p] for p in shard.take(list(work))}
    used, states = _encoder_states(model, names, served)
    run = _Run(model, served, used, states, out, seg_out, journals, stats, mine,
               log if not shard.sharded else (lambda msg: log(f"[rank {shard.rank}] {msg}")))
    parts = each(shard, lambda: _run_shard(run, batch_size, progress and shard.main))
    failed, encoded, calls = _combine(stats, parts, work)
    files = agree(shard, lambda: _finish(out, journals, (served, split, missing_tasks, failed), shard))
    seconds = time.perf_counter() - t_start
    summary = {
        "out_dir": str(out.resolve()),
        "tasks": stats,
        "missing_tasks": missing_tasks,
        "failed_images": failed,
        "images": encoded,
        "images_total": len(dict.fromkeys(s.image_path for tid in served for s in split[tid])),
        "encoder_calls": calls,
        "seconds": seconds,
        "images_per_s": encoded / seconds if seconds > 0 else 0.0,
        "files": files,
    }
    if shard.sharded:
        summary["shard"] = {"rank": shard.rank, "world_size": shard.world_size, "images": len(mine)}
    return summary
