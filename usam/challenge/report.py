"""Human-readable report of :func:`usam.challenge.evaluate.evaluate` results.

:func:`write_report` writes into ``report_dir``:

- ``report.md``: a table (task, kind, n, missing, main metrics), per-class segmentation scores, notes;
- ``report.json``: the results as given (NaN / inf written as ``null``);
- ``metrics.png``: per-task bars of the bounded scores (Dice, AUC, accuracy, F1, MCC, IoU) and of the
  distances (HD, MRE in pixels and mm, HC error in mm);
- ``dice_hist_<task>.png``: per-class Dice histogram of each segmentation task;
- ``worst_<task>.png``: the segmentation cases with the lowest Dice, image / truth / prediction side by side;
- with click results (``usam evaluate --clicks N``: ``results["tasks"][task]["clicks"]``, from
  :func:`usam.challenge.interactive.evaluate_clicks`): a table of the Dice-vs-clicks curve, NoC@85 / NoC@90 and
  the quality-estimate error / Spearman per task in ``report.md``, and ``dice_vs_clicks.png`` (one line per task).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import UsamError
from ..io import dumps_json, json_safe, read_image, read_mask
from ..ops.overlay import PALETTE
from ..tasks import KINDS
from .checks import check_output_dir

__all__ = ["MAIN_METRICS", "write_report"]

#: Metrics shown in the table, per kind (those present in the results): each kind's headline metrics.
MAIN_METRICS = {name: k.main_metrics for name, k in KINDS.items()}
_BOUNDED = ("dice", "auc", "accuracy", "macro_f1", "mcc", "iou")
_DISTANCES = ("hd", "hd_mm", "mre_px", "mre_mm", "hc_abs_err_mm")
#: Overlay colours (RGB 0..1) of classes 1, 2, ...: the one palette of :mod:`usam.ops.overlay`.
_COLOURS = PALETTE[1:] / 255.0


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _pyplot():
    import matplotlib  # lazy: matplotlib is heavy and only the figures need it

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _metrics_figure(tasks: dict, path: Path) -> Path | None:
    plt = _pyplot()
    ids = list(tasks)
    panels = []
    for names, title in ((_BOUNDED, "scores (higher is better)"), (_DISTANCES, "distances (lower is better)")):
        present = [m for m in names if any(tasks[t]["metrics"].get(m) is not None for t in ids)]
        if present:
            panels.append((present, title))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 1.6 * len(ids) + 2), 3.6 * len(panels)), squeeze=False)
    for ax, (present, title) in zip(axes[:, 0], panels):
        width = 0.8 / len(present)
        x = np.arange(len(ids))
        for i, m in enumerate(present):
            vals = [tasks[t]["metrics"].get(m) for t in ids]
            ys = [v if v is not None else 0.0 for v in vals]
            bars = ax.bar(x + (i - (len(present) - 1) / 2) * width, ys, width, label=m)
            for b, v in zip(bars, vals):
                if v is not None:
                    ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels(ids, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=min(len(present), 6))
        if present[0] in _BOUNDED:
            ax.set_ylim(min(0.0, min((tasks[t]["metrics"].get("mcc") or 0.0) for t in ids)), 1.1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _dice_histogram(task_id: str, task: dict, path: Path) -> Path:
    plt = _pyplot()
    names = list(task["metrics"].get("dice_per_class", {})) or [f"class_{k + 1}" for k in range(task["num_classes"] - 1)]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 21)
    for k, name in enumerate(names):
        vals = [c["dice_per_class"][k] for c in task["cases"]]
        ax.hist(vals, bins=bins, alpha=0.6, label=f"{name} (mean {np.mean(vals):.3f})")
    ax.set_xlabel("Dice")
    ax.set_ylabel("images")
    ax.set_title(f"{task_id}: Dice per image (n={task['n']}, missing={task['missing']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: Clicks whose Dice the click table shows (those within the budget, plus the last click).
_CLICKS_SHOWN = (1, 2, 3, 5, 10, 15, 20)


def _clicks_figure(clicks: dict, path: Path) -> Path | None:
    """Mean Dice after 1..N clicks, one line per task."""
    curves = {tid: c["dice_curve"] for tid, c in clicks.items() if c.get("dice_curve")}
    if not curves:
        return None
    plt = _pyplot()
    n = max(len(v) for v in curves.values())
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for tid, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3,
                label=f"{tid} ({clicks[tid]['n_objects']} objects)")
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean Dice")
    ax.set_xlim(0.5, n + 0.5)
    ax.set_xticks(np.arange(1, n + 1, max(1, round(n / 10))))
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Dice vs clicks (click protocol, {n}-click budget)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clicks_table(clicks: dict) -> list[str]:
    """Markdown lines of the click benchmark: Dice after some clicks, NoC@85 / NoC@90, IoU calibration."""
    n = max(c["n_clicks"] for c in clicks.values())
    shown = [k for k in _CLICKS_SHOWN if k < n] + [n]
    lines = ["| task | adapter | images | objects | " + " | ".join(f"Dice@{k}" for k in shown)
             + " | NoC@85 | NoC@90 | IoU error | Spearman |",
             "|---|---|---|---|" + "---|" * (len(shown) + 4)]
    for tid, c in clicks.items():
        curve = c.get("dice_curve") or []
        cells = [_fmt(curve[k - 1]) if k <= len(curve) else "n/a" for k in shown]
        lines.append(f"| {tid} | {c.get('adapter', '')} | {c.get('images', '')} | {c['n_objects']} | " + " | ".join(cells)
                     + " | " + " | ".join(f"{c[k]:.2f}" if c.get(k) is not None else "n/a" for k in ("noc85", "noc90"))
                     + " | " + " | ".join(_fmt(c.get(k)) for k in ("iou_error", "iou_spearman")) + " |")
    return lines


def _overlay(image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    out = image.astype(np.float64) / 255.0
    if labels is None:
        return out
    for c in range(1, int(labels.max()) + 1 if labels.size else 1):
        m = labels == c
        if m.any():
            out[m] = 0.55 * out[m] + 0.45 * _COLOURS[(c - 1) % len(_COLOURS)]
    return out


def _worst_gallery(task_id: str, task: dict, path: Path, data_root, pred_dir, k: int) -> tuple[Path | None, list[str]]:
    plt = _pyplot()
    notes: list[str] = []
    worst = sorted(task["cases"], key=lambda c: (c["dice"], -c["hd"]))[:k]
    rows = []
    for c in worst:
        img_f = Path(data_root) / "csv_files" / c["image_path"] if data_root else Path(c["image_file"])
        gt_f = Path(data_root) / "csv_files" / c["mask_path"] if data_root else Path(c["mask_file"])
        pr_f = Path(pred_dir) / c["pred_mask_path"] if pred_dir else Path(c["pred_file"])
        try:
            image = read_image(img_f)
            truth = read_mask(gt_f)
            pred = read_mask(pr_f) if pr_f.is_file() else None
        except (UsamError, OSError) as exc:
            notes.append(f"{task_id}: {c['image_path']} left out of the gallery ({exc})")
            continue
        if pred is not None and pred.shape != truth.shape:
            pred = None
        rows.append((c, image, truth, pred))
    if not rows:
        return None, notes
    fig, axes = plt.subplots(len(rows), 3, figsize=(9.6, 3.2 * len(rows)), squeeze=False)
    for r, (c, image, truth, pred) in enumerate(rows):
        panels = (
            (_overlay(image, None), Path(c["image_path"]).name),
            (_overlay(image, truth), "truth"),
            (_overlay(image, pred), f"prediction: Dice {c['dice']:.3f}, HD {c['hd']:.1f} px" + (" (MISSING)" if c["missing"] else "")),
        )
        for a, (arr, title) in zip(axes[r], panels):
            a.imshow(arr)
            a.set_title(title, fontsize=8)
            a.axis("off")
    fig.suptitle(f"{task_id}: {len(rows)} lowest-Dice cases", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path, notes


def _figures(tasks: dict, clicks: dict, out: Path, data_root, pred_dir, worst_k: int) -> tuple[list[Path], list[str]]:
    """The report's PNGs (metrics bars, Dice vs clicks, per-task Dice histograms and worst cases) and gallery notes."""
    figures: list[Path] = []
    notes: list[str] = []
    if tasks:
        figures.append(_metrics_figure(tasks, out / "metrics.png"))
    if clicks:
        figures.append(_clicks_figure(clicks, out / "dice_vs_clicks.png"))
    for tid, t in tasks.items():
        if t["kind"] != "segmentation" or not t["cases"]:
            continue
        figures.append(_dice_histogram(tid, t, out / f"dice_hist_{_safe(tid)}.png"))
        g, n = _worst_gallery(tid, t, out / f"worst_{_safe(tid)}.png", data_root, pred_dir, worst_k)
        notes += n
        figures.append(g)
    return [f for f in figures if f], notes


def _summary_lines(results: dict, tasks: dict) -> list[str]:
    """Header, the per-task table of main metrics and the segmentation per-class table."""
    lines = ["# Evaluation report", ""]
    if results.get("data_root"):
        lines.append(f"- ground truth: `{results['data_root']}`")
    if results.get("pred_dir"):
        lines.append(f"- predictions: `{results['pred_dir']}`")
    lines.append(f"- missing predictions (scored as worst case): {results.get('missing_total', 0)}")
    lines += ["", "| task | kind | n | missing | main metrics |", "|---|---|---|---|---|"]
    for tid, t in tasks.items():
        shown = [f"{m} {_fmt(t['metrics'].get(m))}" for m in MAIN_METRICS.get(t["kind"], ()) if m in t["metrics"]]
        lines.append(f"| {tid} | {t['kind']} | {t['n']} | {t['missing']} | {', '.join(shown)} |")
    seg = {tid: t for tid, t in tasks.items() if t["kind"] == "segmentation"}
    if seg:
        lines += ["", "## Segmentation per class", "", "| task | class | Dice | HD (px) |", "|---|---|---|---|"]
        for tid, t in seg.items():
            for name, d in t["metrics"].get("dice_per_class", {}).items():
                lines.append(f"| {tid} | {name} | {_fmt(d)} | {_fmt(t['metrics'].get('hd_per_class', {}).get(name))} |")
    return lines


def _click_lines(bench: dict, clicks: dict) -> list[str]:
    """The interactive (click protocol) section: protocol, Dice@k / NoC table, tasks no adapter serves."""
    if not (clicks or bench):
        return []
    n = bench.get("n_clicks") or max(c["n_clicks"] for c in clicks.values())
    limit = f"; the first {bench['limit']} images of each task" if bench.get("limit") else ""
    lines = ["", "## Interactive segmentation (click protocol)", "",
             f"Standard click protocol, {n}-click budget{limit}: first click at the innermost point of the object, "
             "each next click at the innermost point of the larger error region, the previous logits fed back; "
             "every foreground class present is one object. Dice@k = mean Dice after k clicks; NoC@85 / NoC@90 = "
             f"mean clicks to reach IoU 0.85 / 0.90 (unreached counted as {n}); IoU error = mean |estimated - "
             "measured| IoU of the first-click mask (the estimate: the quality shown with it, the adapter's "
             "`decoder.quality`), Spearman = their rank correlation.", ""]
    if clicks:
        lines += _clicks_table(clicks)
    unserved = bench.get("unserved_tasks") or []
    if unserved:
        lines += ["", "No adapter serves these segmentation tasks (not in the click benchmark): "
                  + ", ".join(f"{u['task_id']} ({u['rows']} rows)" for u in unserved) + "."]
    return lines


def _notes(results: dict, tasks: dict) -> list[str]:
    """Caveats a reader needs: AUC classes skipped, predictions without probabilities, unmatched entries."""
    notes = []
    for tid, t in tasks.items():
        skipped = t["metrics"].get("auc_skipped_classes")
        if skipped:
            notes.append(f"{tid}: classes {skipped} have no positives (or no negatives) in the truth; AUC averages the others")
        if t.get("missing_probs"):
            notes.append(f"{tid}: {t['missing_probs']} predictions without predicted_probs (scored with uniform probabilities)")
    for name, count in (results.get("unmatched_predictions") or {}).items():
        if count:
            notes.append(f"{name}: {count} entries match no ground-truth row (ignored)")
    return notes


def write_report(
    results: dict,
    report_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    pred_dir: str | os.PathLike | None = None,
    worst_k: int = 4,
) -> dict:
    """Write ``report.md``, ``report.json`` and PNG figures for :func:`~usam.challenge.evaluate.evaluate` results.

    Args:
      results: the dict returned by ``evaluate``.
      report_dir: output folder (created).
      data_root, pred_dir: where to find images, truth and predicted masks for the worst-case gallery; default
        the absolute paths stored in the results (pass these when the data has moved).
      worst_k: cases per segmentation task in the gallery.

    Returns:
      ``{"report_md": Path, "report_json": Path, "figures": [Path, ...]}``.

    Raises:
      DataError: ``report_dir`` is a file or cannot be created / written (nothing is written then).
    """

    out = check_output_dir(report_dir, "report folder")
    out.mkdir(parents=True, exist_ok=True)
    results = json_safe(results)
    tasks = results.get("tasks", {})
    (out / "report.json").write_text(dumps_json(results, indent=1), encoding="utf-8")
    clicks = {tid: t["clicks"] for tid, t in tasks.items() if t.get("clicks")}
    figures, notes = _figures(tasks, clicks, out, data_root, pred_dir, worst_k)
    lines = _summary_lines(results, tasks) + _click_lines(results.get("clicks") or {}, clicks)
    notes += _notes(results, tasks)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"report_md": md, "report_json": out / "report.json", "figures": figures}
