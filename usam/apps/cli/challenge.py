"""``usam predict`` / ``usam evaluate`` / ``usam measure``: challenge outputs, their scores, clinical measurements.

- ``usam predict DATA_ROOT OUT_DIR --adapters A B ...``: the FMC_UIA output files for every CSV row of a split
  (see :mod:`usam.challenge.predict`); resumable; exit code 0, or 3 when some images could not be decoded
  (listed, the others are predicted), 7 for bad data, rows sharing an output mask or an output folder that is a
  file / not writable (checked before the model loads), 8 when no adapter serves any task, 130 when
  interrupted (rerun the same command to resume). Under ``torchrun --nproc_per_node N -m usam predict ...`` or
  ``accelerate launch --multi_gpu --num_processes N -m usam predict ...`` the images are shared out over the N processes
  (:mod:`usam.challenge.shard`); rank 0 writes the JSON files and prints the report, every rank exits alike.
- ``usam evaluate DATA_ROOT PRED_DIR [--report DIR] [--clicks N --adapters A B ... [--limit K]]``: scores per
  task (see :func:`usam.challenge.evaluate`); with ``--clicks`` also the interactive benchmark (click protocol,
  :func:`usam.challenge.interactive.evaluate_clicks`) of every segmentation task a loaded adapter serves
  (:func:`click_benchmark`); exit code 7 for malformed predictions (naming the file and the entry or CSV row)
  and for a report folder that is a file or not writable (checked before scoring), 2 for ``--clicks`` without
  ``--adapters``, 8 when no adapter serves any segmentation task (both checked before scoring).
- ``usam measure IMAGE --adapter A [--pixel-size MM] [--frame K]``: head circumference / BPD / OFD (fetal-head
  adapters) or lesion long / short axes (breast adapters) from the adapter's automatic segmentation, and BPD / OFD
  from a 4-point biometry regression task. Without ``--pixel-size`` the pixel spacing comes from a DICOM's tags
  (:func:`usam.io.read_spacing`); with neither, measurements are in pixels and the output says so.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .common import add_model_args, build_model, log, positive_float, positive_int

__all__ = ["build_model", "click_benchmark", "cmd_evaluate", "cmd_measure", "cmd_predict", "register"]


# ----------------------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from ...challenge.predict import (
        FAILED_IMAGES_NAME,
        MISSING_TASKS_NAME,
        check_predict_inputs,
        predict_split,
    )
    from ...challenge.shard import current_shard
    from ...errors import AdapterError

    t0 = time.perf_counter()
    # bad data, clashing output paths and an unwritable output folder fail before the model loads (and before
    # the processes of a sharded run join up: every rank refuses alike, none waits)
    check_predict_inputs(args.data_root, args.out_dir, tasks=args.tasks)
    if not args.adapters:
        raise AdapterError("give the adapters that serve the split's tasks: --adapters DIR_OR_HUB_ID ...")
    shard = current_shard(args.device)  # torchrun / accelerate launch: this process's share; else the whole split
    if shard.device:
        args.device = shard.device
    model = build_model(args, adapters=args.adapters)
    try:
        r = predict_split(args.data_root, args.out_dir, model, tasks=args.tasks, batch_size=args.batch_size,
                          restart=args.restart, progress=not args.quiet, log=log, shard=shard)
    except AdapterError as exc:
        if args.adapters and "adapters given" in str(exc):
            raise AdapterError(f"{exc} (--adapters {' '.join(args.adapters)})") from exc
        raise
    except KeyboardInterrupt:  # said once here, not again by usam.apps.cli
        log("usam predict: interrupted; finished rows are kept: run the same command again to resume")
        return 130
    wall = time.perf_counter() - t0
    if not shard.main:  # rank 0 reports the whole run
        log(f"usam predict: rank {shard.rank} of {shard.world_size}: shard of {r['shard']['images']} image(s) done "
            f"in {wall:.1f} s")
        return 3 if r["failed_images"] else 0
    for tid, t in r["tasks"].items():
        redone = f", {t['redone']} redone (bad earlier output)" if t.get("redone") else ""
        log(f"usam predict: {tid} ({t['kind']}, adapter {t['adapter']}): {t['predicted']} predicted, "
             f"{t['skipped']} already done{redone}, of {t['rows']}")
    if r["missing_tasks"]:
        shown = ", ".join(f"{m['task_id']} ({m['kind']}, {m['rows']} rows)" for m in r["missing_tasks"])
        log(f"usam predict: WARNING: no adapter serves {len(r['missing_tasks'])} task(s): {shown}. Their predictions "
             f"are missing (scored as worst case); load adapters trained on them. Listed in {MISSING_TASKS_NAME}.")
    if r["failed_images"]:
        log(f"usam predict: ERROR: {len(r['failed_images'])} image(s) could not be read; their rows are not predicted "
             f"(listed in {FAILED_IMAGES_NAME}; fix them and rerun to fill the gaps):")
        for f in r["failed_images"][:20]:
            log(f"  {f['image_path']} ({', '.join(f['tasks'])}): {f['error']}")
    log(f"usam predict: {r['images']} image(s) in {r['seconds']:.1f} s ({r['images_per_s']:.2f} images/s, "
         f"{r['encoder_calls']} encoder passes); wall time {wall:.1f} s -> {r['out_dir']}")
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(r["out_dir"])
    return 3 if r["failed_images"] else 0


# ---------------------------------------------------------------------------------------------- evaluate
def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _click_routes(model, split: dict) -> tuple[dict[str, str], list[dict]]:
    """``({task_id: adapter name}, [unserved task])`` for the segmentation tasks of ``split``, routed as
    ``usam predict`` routes them (:func:`usam.challenge.predict.route_tasks`): the first loaded adapter whose
    tasks include the task serves it, and its task must agree with the CSV (kind, number of classes)."""
    from ...challenge.predict import route_tasks
    from ...errors import AdapterError

    segmentation = {tid: rows for tid, rows in split.items() if rows[0].kind == "segmentation"}
    served, unserved, mismatches = route_tasks(model, segmentation, list(model.adapters), log, "usam evaluate")
    unserved = [{k: u[k] for k in ("task_id", "num_classes", "rows")} for u in unserved]
    if mismatches:
        raise AdapterError("adapter tasks disagree with the data: " + "; ".join(mismatches))
    if not served:
        seg = ", ".join(u["task_id"] for u in unserved) or "none (tasks: " + ", ".join(
            f"{t} ({rows[0].kind})" for t, rows in split.items()) + ")"
        adapters = ", ".join(f"{n!r} (tasks: {', '.join(sorted(a.tasks)) or 'none'})" for n, a in model.adapters.items())
        raise AdapterError(f"--clicks: no adapter serves any segmentation task; segmentation tasks: {seg}; "
                           f"adapters given: {adapters or 'none'}: load adapters trained on these tasks, or choose "
                           f"served tasks with --tasks")
    return served, unserved


def click_benchmark(model, split: dict, n_clicks: int, limit: int | None = None, progress: bool = True,
                    routes: tuple[dict, list] | None = None) -> dict:
    """The interactive benchmark of every segmentation task of ``split`` that a loaded adapter of ``model`` serves.

    Args:
      model: a :class:`~usam.model.UsamModel` with the adapters loaded.
      split: ``{task_id: [Sample, ...]}`` (:func:`usam.data.fmc.read_split`); other kinds are ignored.
      n_clicks: click budget (the NoC cap).
      limit: at most this many images per task (the first rows; ``None``: all).
      progress: tqdm progress bars.
      routes: ``({task_id: adapter name}, [unserved task])`` when already worked out (default: routed here).

    Returns:
      ``{"n_clicks", "limit", "tasks": {task_id: {"adapter", "images", "n_objects", "n_clicks", "dice_curve",
      "noc85", "noc90", "iou_error", "iou_spearman", "cases"}}, "unserved_tasks": [{"task_id", "num_classes",
      "rows"}]}`` (see :func:`usam.challenge.interactive.evaluate_clicks`).

    Raises:
      AdapterError: no adapter serves any segmentation task of ``split`` (or it has none), or an adapter's
        task disagrees with the CSV.
    """
    from ...challenge.interactive import evaluate_clicks

    served, unserved = routes or _click_routes(model, split)
    active0 = model.active_adapter
    out = {"n_clicks": n_clicks, "limit": limit, "tasks": {}, "unserved_tasks": unserved}
    try:
        for tid, name in served.items():
            samples = split[tid][:limit] if limit else split[tid]
            res = evaluate_clicks(model, name, samples, n_clicks=n_clicks, progress=progress)
            out["tasks"][tid] = {"adapter": name, "images": len(samples), **res}
    finally:
        if model.active_adapter != active0:
            model.set_adapter(active0)
    return out


def _clicks_summary(c: dict) -> dict:
    """A task's click results without the per-object cases."""
    return {k: v for k, v in c.items() if k != "cases"}


def _usage_error(args) -> str | None:
    """What is wrong with ``usam evaluate``'s flags together (``None``: nothing)."""
    if args.clicks and not args.adapters:
        return "--clicks needs the adapters that serve the segmentation tasks: --adapters DIR_OR_HUB_ID ..."
    if args.adapters and not args.clicks:
        return "--adapters is only used by the click benchmark: add --clicks N (e.g. --clicks 20)"
    if args.limit and not args.clicks:
        return "--limit caps the images of the click benchmark: add --clicks N"
    return None


def _evaluation(args) -> dict:
    """The scores (and with ``--clicks`` the click benchmark); the model and its routing come before the scoring
    work, so that their errors come first."""
    from ...challenge import evaluate
    from ...data.fmc import read_split

    model = split = routes = None
    if args.clicks:
        split = read_split(args.data_root, tasks=args.tasks)
        model = build_model(args, adapters=args.adapters)
        routes = _click_routes(model, split)
    results = evaluate(args.data_root, args.pred_dir, tasks=args.tasks)
    if args.clicks:
        bench = click_benchmark(model, split, args.clicks, limit=args.limit, progress=not args.quiet, routes=routes)
        for tid, c in bench["tasks"].items():
            results["tasks"][tid]["clicks"] = c
        results["clicks"] = {k: v for k, v in bench.items() if k != "tasks"}
    return results


def _summary(results: dict, report: dict | None) -> dict:
    """What ``--json`` prints: the scores without the per-row cases."""
    summary = {
        "tasks": {tid: {"kind": t["kind"], "n": t["n"], "missing": t["missing"], "metrics": t["metrics"],
                        **({"clicks": _clicks_summary(t["clicks"])} if "clicks" in t else {})}
                  for tid, t in results["tasks"].items()},
        "missing_total": results["missing_total"],
        "unmatched_predictions": results["unmatched_predictions"],
    }
    if "clicks" in results:
        summary["clicks"] = results["clicks"]
    if report:
        summary["report"] = str(report["report_md"])
    return summary


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _print_scores(results: dict) -> None:
    """One line per task: kind, rows, missing, its kind's main metrics."""
    from ...tasks import KINDS

    rows = [("task", "kind", "n", "missing", "main metrics")]
    for tid, t in results["tasks"].items():
        m = t["metrics"]
        shown = "  ".join(f"{k} {_fmt(m[k])}" for k in KINDS[t["kind"]].main_metrics if k in m)
        rows.append((tid, t["kind"], str(t["n"]), str(t["missing"]), shown))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])


def _print_clicks(results: dict) -> None:
    """The click-protocol table, when the click benchmark ran."""
    clicked = {tid: t["clicks"] for tid, t in results["tasks"].items() if "clicks" in t}
    if not clicked:
        return
    n = results["clicks"]["n_clicks"]
    print(f"\nclick protocol ({n}-click budget; NoC unreached counted as {n}):")
    rows = [("task", "adapter", "objects", f"Dice@1 -> @{n}", "NoC@85", "NoC@90", "IoU err", "Spearman")]
    for tid, c in clicked.items():
        curve = c.get("dice_curve")
        rows.append((tid, c["adapter"], str(c["n_objects"]),
                     f"{curve[0]:.3f} -> {curve[-1]:.3f}" if curve else "n/a",
                     *(f"{c[k]:.2f}" if c.get(k) is not None else "n/a" for k in ("noc85", "noc90")),
                     *(_fmt(c.get(k)) for k in ("iou_error", "iou_spearman"))))
    _print_table(rows)


def _log_notes(results: dict, report: dict | None) -> None:
    if results["missing_total"]:
        log(f"usam evaluate: {results['missing_total']} prediction(s) missing (scored as worst case)")
    for name, count in results["unmatched_predictions"].items():
        if count:
            log(f"usam evaluate: {name}: {count} entries match no ground-truth row (ignored)")
    if report:
        log(f"usam evaluate: report -> {report['report_md']}")


def cmd_evaluate(args) -> int:
    from ...challenge import write_report
    from ...challenge.checks import check_output_dir
    from ...io import json_safe

    # usage first: the click benchmark needs a model with adapters; adapters are only used by it
    problem = _usage_error(args)
    if problem:
        log(f"usam evaluate: error: {problem}")
        return 2
    if args.report:  # before the scoring work
        check_output_dir(args.report, "report folder")
    results = _evaluation(args)
    report = None
    if args.report:
        report = write_report(results, args.report, data_root=args.data_root, pred_dir=args.pred_dir)
    unserved = results.get("clicks", {}).get("unserved_tasks", [])
    if unserved:
        log(f"usam evaluate: WARNING: no adapter serves {len(unserved)} segmentation task(s), left out of the click "
             f"benchmark: " + ", ".join(f"{u['task_id']} ({u['rows']} rows)" for u in unserved))
    if args.json:
        print(json.dumps(json_safe(_summary(results, report)), indent=1, allow_nan=False))
        return 0
    _print_scores(results)
    _print_clicks(results)
    _log_notes(results, report)
    return 0


# ----------------------------------------------------------------------------------------------- measure
def _measure_kind(task_id: str) -> str | None:
    low = task_id.lower()
    if low == "fetal_head" or "head" in low:
        return "head"
    if "breast" in low or "lesion" in low:
        return "lesion"
    return None


def measure_prediction(adapter, pred, pixel_size_mm: float | None) -> list[dict]:
    """Measurements of one adapter's :class:`~usam.heads.Prediction` (see ``usam measure``).

    Returns one dict per measurable task: ``{"task_id", "kind": "head" | "lesion" | "points", ...}`` with the
    :func:`~usam.measure.head_biometry` / :func:`~usam.measure.lesion_axes` fields, or ``bpd_*`` / ``ofd_*`` /
    ``hc_*`` and ``points`` for a 4-point biometry task; ``{"task_id", "kind", "error"}`` when the mask is empty.
    ``*_mm`` are ``None`` when ``pixel_size_mm`` is ``None`` (pixel units only).
    """
    import numpy as np

    from ...ops.masks import points_biometry
    from ...errors import InputImageError
    from ...measure import head_biometry, lesion_axes, measured_class, refuse_unconfident

    out = []
    for tid, spec in adapter.tasks.items():
        if spec.kind == "segmentation" and tid in pred.masks:
            kind = _measure_kind(tid)
            if kind is None:
                continue
            labels = np.asarray(pred.masks[tid])
            cls = measured_class(spec, kind)
            mask = labels == cls if cls is not None else labels > 0
            try:
                res = head_biometry(mask, pixel_size_mm) if kind == "head" else lesion_axes(mask, pixel_size_mm)
            except InputImageError as exc:
                out.append({"task_id": tid, "kind": kind, "error": f"no {kind} found by the adapter ({exc})"})
                continue
            out.append({"task_id": tid, **res})
        elif spec.kind == "regression" and spec.num_classes == 4 and tid in pred.keypoints:
            p = np.asarray(pred.keypoints[tid], dtype=np.float64).reshape(4, 2)
            ofd, bpd, hc = points_biometry(p)
            out.append({
                "task_id": tid, "kind": "points", "points": p.tolist(),
                "ofd_px": ofd, "bpd_px": bpd, "hc_px": hc,
                **{f"{k}_mm": (v * pixel_size_mm if pixel_size_mm else None) for k, v in (("ofd", ofd), ("bpd", bpd), ("hc", hc))},
                "pixel_size_mm": pixel_size_mm,
            })
    return refuse_unconfident(adapter, pred, out)  # no measurement without a confident mask (usam.measure)


def _draw_points(image, m: dict):
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    th = max(1, int(round(min(h, w) / 300)))
    scale = max(0.4, min(h, w) / 700)
    colour = (255, 0, 255)
    pts = [(int(round(x)), int(round(y))) for x, y in m["points"]]
    cv2.line(out, pts[0], pts[1], colour, th, cv2.LINE_AA)
    cv2.line(out, pts[2], pts[3], colour, th, cv2.LINE_AA)
    for p in pts:
        cv2.circle(out, p, th + 2, colour, -1, cv2.LINE_AA)
    text = f"points: OFD {_length(m, 'ofd')}, BPD {_length(m, 'bpd')}"
    y = h - 8
    cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)
    return out


def _length(m: dict, key: str) -> str:
    """``"12.3 mm"``, or ``"45.6 px"`` when the measurement has no pixel size."""
    return f"{m[key + '_mm']:.1f} mm" if m.get(key + "_mm") is not None else f"{m[key + '_px']:.1f} px"


def measure_pixel_size(args) -> tuple[float | None, str | None]:
    """``(pixel size in mm, where it came from)``: ``--pixel-size``, else the DICOM's spacing tags, else
    ``(None, None)`` (measure in pixels). Anisotropic tag spacing is refused (lengths would depend on direction)."""
    from ...errors import InputImageError
    from ...io import isotropic_pixel_size, read_spacing

    if args.pixel_size is not None:
        return float(args.pixel_size), "--pixel-size"
    spacing = read_spacing(args.image)
    try:
        size = isotropic_pixel_size(spacing)
    except ValueError as exc:
        raise InputImageError(f"{str(args.image)!r}: {exc}") from exc
    return (size, "DICOM tags") if size is not None else (None, None)


def _check_measurable(adapter, name: str) -> None:
    """Refuse an adapter with no task ``usam measure`` can measure."""
    from ...errors import AdapterError

    measurable = [t for t, s in adapter.tasks.items()
                  if (s.kind == "segmentation" and _measure_kind(t)) or (s.kind == "regression" and s.num_classes == 4)]
    if not measurable:
        raise AdapterError(
            f"adapter {name!r} has nothing to measure: it needs a fetal-head segmentation task (id containing 'head'), "
            f"a breast / lesion segmentation task, or a 4-point biometry regression task; its tasks: "
            + ", ".join(f"{t} ({s.kind})" for t, s in adapter.tasks.items())
        )


def _annotate(image, good: list[dict]):
    """The image with the first head / lesion measurement and every 4-point measurement drawn."""
    from ...measure import draw_measurements

    annotated, drawn = image, False
    for m in good:
        if m["kind"] in ("head", "lesion") and not drawn:
            annotated = draw_measurements(annotated, m)
            drawn = True
        elif m["kind"] == "points":
            annotated = _draw_points(annotated, m)
    return annotated


def _print_measurements(results: list[dict], units_note: str | None, pixel_size, pixel_size_source) -> None:
    if units_note:
        print(units_note)
    elif pixel_size_source == "DICOM tags":
        print(f"pixel size {pixel_size:.4g} mm from the DICOM tags")
    for m in results:
        if "error" in m:
            print(f"{m['task_id']}: {m['error']}")
        elif m["kind"] == "head":
            print(f"{m['task_id']}: HC {_length(m, 'hc')}, BPD {_length(m, 'bpd')}, OFD {_length(m, 'ofd')}")
        elif m["kind"] == "lesion":
            print(f"{m['task_id']}: long axis {_length(m, 'long')}, short axis {_length(m, 'short')}")
        else:
            print(f"{m['task_id']} (points): BPD {_length(m, 'bpd')}, OFD {_length(m, 'ofd')}, HC {_length(m, 'hc')}")


def cmd_measure(args) -> int:
    from ...errors import InputImageError, OutputError
    from ...io import check_output_path, json_safe, read_image, write_png
    from .segment import check_adapters

    if args.out:  # the annotated picture: a new PNG, never the input (checked before any work)
        check_output_path(args.out, "--out", (".png",))
        if Path(args.out).resolve() == Path(args.image).resolve():
            raise OutputError(f"--out {args.out!r} is the input image: write the annotated picture elsewhere")
    image = read_image(args.image, frame=args.frame)  # validate the input before loading any model
    pixel_size, pixel_size_source = measure_pixel_size(args)
    check_adapters([args.adapter])
    model = build_model(args)
    name = model.load_adapter(args.adapter)
    adapter = model.adapters[name]
    _check_measurable(adapter, name)
    pred = model.predict(image, adapter=name)
    results = measure_prediction(adapter, pred, pixel_size)
    good = [m for m in results if "error" not in m]
    if not good:
        raise InputImageError(f"nothing measurable in {args.image!r}: " + "; ".join(m["error"] for m in results))
    if args.out:
        write_png(args.out, _annotate(image, good))
    units_note = None if pixel_size is not None else (
        f"measurements are in pixels: {str(args.image)!r} records no pixel spacing; give --pixel-size MM for mm")
    doc = {"image": str(args.image), "frame": args.frame, "adapter": name, "pixel_size_mm": pixel_size,
           "pixel_size_source": pixel_size_source, "units": "mm" if pixel_size is not None else "px",
           "measurements": results, "annotated": str(args.out) if args.out else None}
    if units_note:
        doc["note"] = units_note
    if args.json:
        print(json.dumps(json_safe(doc), indent=1, allow_nan=False))
        return 0
    _print_measurements(results, units_note, pixel_size, pixel_size_source)
    if args.out:
        log(f"usam measure: annotated image -> {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- register
def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="write the challenge's prediction files for every row of a split",
        description="Predict every row of every DATA_ROOT/csv_files/*.csv whose task a loaded adapter serves, in the "
                    "FMC_UIA output formats: segmentation PNGs (class ids) at mask_path without its leading ../, and "
                    "classification_predictions.json, detection_predictions.json, regression_predictions.json (pixel and "
                    "normalised coordinates). Each image is encoded once per encoder state. Resumable: rerun the same "
                    "command after an interruption. Tasks no adapter serves are listed (missing_tasks.json). Images that "
                    "cannot be decoded are reported (failed_images.json) and the others predicted; the exit code is then 3. "
                    "Under torchrun / accelerate launch the images are shared out over the processes (each image to "
                    "one of them) and rank 0 writes the JSON files: the same files as one process.",
    )
    p.add_argument("data_root", help="split folder holding csv_files/ (e.g. ../shared/data/fmc_uia_dev/test)")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK_ID", help="only these tasks (default: every CSV)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per encoder call (default 1; larger helps on a GPU)")
    p.add_argument("--restart", action="store_true", help="redo the tasks predicted now instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    add_model_args(p, adapters=True, device=True)
    p.set_defaults(func=cmd_predict)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a prediction folder against a split (Dice, HD, AUC, F1, IoU, MRE, HC error)",
        description="Score predictions in the FMC_UIA output formats against DATA_ROOT's ground truth. Missing "
                    "predictions are scored as the worst case and counted. With --clicks N --adapters A B ..., also "
                    "run the click protocol on every segmentation task an adapter serves (routed as usam predict "
                    "routes: the first adapter given that has the task); tasks no adapter serves are listed. The "
                    "results go into the output (and report.json / report.md, with a Dice-vs-clicks plot).",
    )
    p.add_argument("data_root", help="split folder holding csv_files/ and the ground truth")
    p.add_argument("pred_dir", help="prediction folder (as written by usam predict)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK_ID", help="only these tasks")
    p.add_argument("--report", default=None, metavar="DIR", help="also write report.md, report.json and figures into DIR")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--clicks", type=positive_int, default=None, metavar="N",
                   help="also run the interactive benchmark (standard click protocol, N clicks: Dice after 1..N "
                        "clicks, NoC@85/90, quality-estimate error and Spearman) on every segmentation task an adapter "
                        "of --adapters serves (needs --adapters)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="K",
                   help="with --clicks: only the first K images of each task in the click benchmark (a quick look; "
                        "the official metrics still score every row)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (--clicks)")
    add_model_args(p, adapters=True, device=True)
    p.set_defaults(func=cmd_evaluate)


def _add_measure(sub) -> None:
    p = sub.add_parser(
        "measure", help="fetal head HC / BPD / OFD or lesion axes in mm from an adapter's segmentation",
        description="Segment IMAGE with the adapter's automatic segmentation and measure: head circumference, BPD and "
                    "OFD for a fetal-head task (id containing 'head'); long and short axes for a breast / lesion task; "
                    "BPD and OFD from a 4-point biometry regression task (OFD ends, then BPD ends).",
    )
    p.add_argument("image", help="ultrasound image file, DICOM file or video file")
    p.add_argument("--adapter", required=True, metavar="DIR_OR_HUB_ID", help="adapter directory or Hub id")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="MM",
                   help="pixel size in mm (isotropic); default: from the DICOM's spacing tags, else measure in pixels")
    p.add_argument("--frame", type=int, default=None, metavar="K",
                   help="0-based frame of a multi-frame DICOM or a video (required for those)")
    p.add_argument("--out", default=None, metavar="PNG", help="write the image annotated with the measurements")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p, adapters=False, device=True)
    p.set_defaults(func=cmd_measure)


def register(sub) -> None:
    """Add ``predict``, ``evaluate`` and ``measure`` to the ``usam`` sub-command parser."""
    _add_predict(sub)
    _add_evaluate(sub)
    _add_measure(sub)
