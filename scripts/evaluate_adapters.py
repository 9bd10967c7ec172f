#!/usr/bin/env python
"""Recompute every reported figure of the shipped adapters on the dev data's test split.

    .venv/bin/python scripts/evaluate_adapters.py [--data ../shared/data/fmc_uia_dev] [--split test] [--limit N]

1. ``usam predict`` + ``usam evaluate`` with all shipped adapters (official metrics, report under runs/eval/report);
2. interactive Dice per segmentation task (GT box, 1..3 simulated error-region clicks, no prompt);
3. writes ``adapters/RESULTS.md`` and ``adapters/results.json``, puts the test figures into each adapter's
   ``metrics.json`` and card, and stores a few per-image figures that ``tests/test_shipped_adapters.py`` re-checks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = {"breast": ["breast_lesion"], "fetal_head": ["fetal_head"], "intrapartum": ["head_symphysis_multi"]}
TARGETS = [  # (task, metric key, label, op, target)
    ("breast_lesion", "prompt:box", "breast_lesion, GT box — Dice", ">=", 0.92),
    ("breast_lesion", "prompt:click_1", "breast_lesion, 1 click — Dice", ">=", 0.80),
    ("breast_lesion", "prompt:click_3", "breast_lesion, 3 clicks — Dice", ">=", 0.87),
    ("breast_lesion", "dice", "breast_lesion, no prompt — Dice", ">=", 0.78),
    ("breast_3cls", "auc", "breast_3cls — macro AUC (OvR)", ">=", 0.88),
    ("breast_2cls", "auc", "breast_2cls — AUC", None, None),
    ("breast_lesion_det", "iou", "breast_lesion_det — mean box IoU", ">=", 0.70),
    ("head_symphysis_multi", "dice", "head_symphysis_multi, no prompt — mean Dice of 2 classes", ">=", 0.88),
    ("head_symphysis_multi", "prompt:box", "head_symphysis_multi, GT box — Dice", None, None),
    ("head_symphysis_multi", "prompt:click_1", "head_symphysis_multi, 1 click — Dice", None, None),
    ("fetal_head", "dice", "fetal_head, no prompt — Dice", ">=", 0.96),
    ("fetal_head", "hc_abs_err_mm", "fetal_head — head circumference abs error (mm)", "<=", 3.0),
    ("fetal_head", "prompt:box", "fetal_head, GT box — Dice", None, None),
    ("fetal_head", "prompt:click_1", "fetal_head, 1 click — Dice", None, None),
    ("fetal_head_biometry", "mre_px", "fetal_head_biometry — mean radial error (px)", "<=", 15.0),
]
#: Fixed test images per segmentation task whose per-image figures CI re-checks (always in fp32: bf16 kernels
#: differ between CPUs with AMX, with AVX-512 bf16 and without either, fp32 does not beyond summation order).
CHECK_IMAGES = 6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=str(ROOT / "runs" / "eval"))
    ap.add_argument("--limit", type=int, default=None, help="at most N rows per task (quick look; figures not written)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--adapters", nargs="+", choices=sorted(ADAPTERS), default=sorted(ADAPTERS),
                    help="recompute only these adapters' tasks; the other tasks keep their stored figures")
    ap.add_argument("--clicks", type=int, default=20, help="click budget of the interactive benchmark (NoC cap)")
    ap.add_argument("--quality-only", action="store_true",
                    help="only recompute the chosen adapters' first-click quality figures (IoU error / Spearman of the "
                         "interactive table, after a new decoder.quality); every other figure is kept")
    ap.add_argument("--clicks-only", action="store_true",
                    help="only recompute the chosen adapters' interactive benchmark (the Dice-vs-clicks curve, NoC and "
                         "quality figures of the interactive table, after a new click setting); every other figure is "
                         "kept")
    ap.add_argument("--prompts-only", action="store_true",
                    help="only recompute the chosen adapters' prompted Dice (GT box, 1..3 clicks, no prompt, e.g. after "
                         "a new box route) and the fp32 check cases; every other figure is kept")
    ap.add_argument("--official-only", action="store_true",
                    help="only recompute the chosen adapters' official metrics (usam predict + usam evaluate on their "
                         "tasks: automatic masks, classes, boxes, landmarks, e.g. after new head options or a new "
                         "localisation head) and the fp32 check cases; every other figure is kept")
    ap.add_argument("--check-only", action="store_true",
                    help="only recompute the fp32 per-image check cases in adapters/results.json (what CI re-checks)")
    args = ap.parse_args(argv)
    if args.check_only:
        results_path = ROOT / "adapters" / "results.json"
        stored = json.loads(results_path.read_text())
        stored.update(check_cases(Path(args.data) / args.split))
        results_path.write_text(json.dumps(stored, indent=1) + "\n")
        print(json.dumps(stored["check_means"], indent=1))
        return 0

    if args.quality_only:
        return quality_only(args)
    if args.clicks_only:
        return clicks_only(args)
    if args.prompts_only:
        return prompts_only(args)
    if args.official_only:
        return official_only(args)

    import usam
    from usam.challenge.interactive import evaluate_clicks, evaluate_prompts
    from usam.data.fmc import read_split

    split = Path(args.data) / args.split
    out = Path(args.out)
    from usam.adapters import validate_adapter_dir

    chosen = {a: ADAPTERS[a] for a in args.adapters}
    dirs = [ROOT / "adapters" / a for a in chosen]
    model = usam.UsamModel.from_pretrained(adapters=[str(d) for d in dirs], precision=args.precision, cache_size=2000)
    t0 = time.time()
    data = split
    if args.limit or len(chosen) < len(ADAPTERS):
        tasks = {t for d in dirs for t in validate_adapter_dir(d).config.tasks}
        data = _limited_copy(split, out / "data", args.limit, tasks)
    summary, results = official_figures(model, data, out)
    figures = {tid: dict(r["metrics"]) for tid, r in results["tasks"].items()}
    rows = read_split(data)
    prompt_cases = {}
    for adapter, tasks in chosen.items():
        for tid in tasks:
            res = evaluate_prompts(model, adapter, rows[tid], n_clicks=3)
            figures[tid].update({f"prompt:{k}": v for k, v in res["mean"].items()})
            figures[tid]["prompt:n_objects"] = res["n_objects"]
            prompt_cases[tid] = res["cases"]
            inter = evaluate_clicks(model, adapter, rows[tid], n_clicks=args.clicks)
            figures[tid].update({f"clicks:{k}": v for k, v in inter.items() if k != "cases"})
    seconds = time.time() - t0
    n = {tid: len(r) for tid, r in rows.items()}
    runs = {a: {"seconds": round(seconds), "images_per_s": summary["images_per_s"], "precision": model.precision,
                "runtime": model.runtime} for a in chosen}
    stored = ROOT / "adapters" / "results.json"
    if len(chosen) < len(ADAPTERS) and not args.limit and stored.is_file():  # keep the other adapters' figures
        old = json.loads(stored.read_text())
        figures = {**{t: f for t, f in old["figures"].items() if t not in figures}, **figures}
        n = {**old.get("n", {}), **n}
        runs = {**old.get("runs", {}), **runs}
    md = results_markdown(args, figures, n, runs)
    print(md)
    if args.limit:
        return 0
    (ROOT / "adapters" / "RESULTS.md").write_text(md)
    (ROOT / "adapters" / "results.json").write_text(json.dumps(
        {"split": args.split, "precision": model.precision, "n": n, "figures": figures, **check_cases(split),
         "runs": runs}, indent=1) + "\n")
    _update_cards(dirs, figures)
    return 0


def quality_only(args) -> int:
    """``--quality-only``: the chosen adapters' first-click quality figures recomputed on the split
    (:func:`usam.train.calibrate.first_click_quality`, the quality the adapter shows now), the rest of
    ``adapters/results.json`` kept; ``RESULTS.md`` and the cards rewritten from it."""
    import usam
    from usam.data.fmc import read_split
    from usam.train.calibrate import choose_quality, first_click_quality

    stored = json.loads((ROOT / "adapters" / "results.json").read_text())
    rows = read_split(Path(args.data) / args.split)
    dirs = [ROOT / "adapters" / a for a in args.adapters]
    for adapter, d in zip(args.adapters, dirs):
        model = usam.UsamModel.from_pretrained(adapters=[str(d)], precision=args.precision)
        model.set_adapter(adapter)
        decoder = model.adapter.decoder
        for tid in ADAPTERS[adapter]:
            figures = stored["figures"][tid]
            _, table = choose_quality(first_click_quality(model, rows[tid], desc=f"quality {tid}"),
                                      fit=decoder.quality_fit)
            figures["clicks:iou_error"] = table[decoder.quality]["iou_error"]
            figures["clicks:iou_spearman"] = table[decoder.quality]["iou_spearman"]
            figures["clicks:predicted_iou_error"] = table["predicted"]["iou_error"]
            figures["clicks:predicted_iou_spearman"] = table["predicted"]["iou_spearman"]
            print(tid, decoder.quality, json.dumps(table), file=sys.stderr)
        stored["runs"].setdefault(adapter, {})["quality_figures"] = f"--quality-only, precision {model.precision}"
    _rewrite_results(args, stored, dirs)
    return 0


def clicks_only(args) -> int:
    """``--clicks-only``: the chosen adapters' interactive benchmark
    (:func:`usam.challenge.interactive.evaluate_clicks`, ``--clicks`` clicks) recomputed on the split, the rest of
    ``adapters/results.json`` kept; ``RESULTS.md`` and the cards rewritten from it."""
    from usam.challenge.interactive import evaluate_clicks

    def figures(model, adapter, rows):
        return {f"clicks:{k}": v for k, v in evaluate_clicks(model, adapter, rows, n_clicks=args.clicks).items()
                if k != "cases"}

    stored, dirs = _recompute(args, "click_figures", "--clicks-only", figures)
    _rewrite_results(args, stored, dirs)
    return 0


def prompts_only(args) -> int:
    """``--prompts-only``: the chosen adapters' prompted Dice (:func:`usam.challenge.interactive.evaluate_prompts`:
    GT box, 1..3 clicks, no prompt) recomputed on the split, and the fp32 check cases; the rest of
    ``adapters/results.json`` kept; ``RESULTS.md`` and the cards rewritten from it."""
    from usam.challenge.interactive import evaluate_prompts

    def figures(model, adapter, rows):
        res = evaluate_prompts(model, adapter, rows, n_clicks=3)
        return {**{f"prompt:{k}": v for k, v in res["mean"].items()}, "prompt:n_objects": res["n_objects"]}

    stored, dirs = _recompute(args, "prompt_figures", "--prompts-only", figures)
    stored.update(check_cases(Path(args.data) / args.split))
    _rewrite_results(args, stored, dirs)
    return 0


def official_only(args) -> int:
    """``--official-only``: the chosen adapters' official metrics (``usam predict`` + ``usam evaluate`` on their tasks,
    the adapter loaded alone) recomputed on the split, and the fp32 check cases; the rest of ``adapters/results.json``
    kept; ``RESULTS.md`` and the cards rewritten from it."""
    import usam
    from usam.adapters import validate_adapter_dir

    stored = json.loads((ROOT / "adapters" / "results.json").read_text())
    split, out = Path(args.data) / args.split, Path(args.out)
    dirs = [ROOT / "adapters" / a for a in args.adapters]
    for adapter, d in zip(args.adapters, dirs):
        t0 = time.time()
        model = usam.UsamModel.from_pretrained(adapters=[str(d)], precision=args.precision, cache_size=2000)
        data = _limited_copy(split, out / "data", None, set(validate_adapter_dir(d).config.tasks))
        summary, results = official_figures(model, data, out)
        for tid, r in results["tasks"].items():
            stored["figures"].setdefault(tid, {}).update(r["metrics"])
        stored["runs"].setdefault(adapter, {})["official_figures"] = (
            f"--official-only, precision {model.precision}, runtime {model.runtime}, {time.time() - t0:.0f} s, "
            f"predict {summary['images_per_s']:.2f} images/s")
    stored.update(check_cases(split))
    _rewrite_results(args, stored, dirs)
    return 0


def official_figures(model, data: Path, out: Path) -> tuple[dict, dict]:
    """``usam predict`` of the split ``data`` into ``out/pred`` and ``usam evaluate`` of it (report under
    ``out/report``); returns predict's summary and the evaluation."""
    from usam.challenge import evaluate, write_report
    from usam.challenge.predict import predict_split

    summary = predict_split(data, out / "pred", model, restart=True, log=lambda m: print(m, file=sys.stderr))
    results = evaluate(data, out / "pred")
    write_report(results, out / "report", data_root=data, pred_dir=out / "pred")
    return summary, results


def _recompute(args, note: str, flag: str, figures) -> tuple[dict, list[Path]]:
    """``adapters/results.json`` with each chosen adapter's tasks' figures updated by ``figures(model, adapter,
    rows)`` (the adapter loaded alone, ``--precision``), and ``runs[adapter][note]`` saying how (``flag``, precision,
    runtime, seconds). Returns it and the adapters' folders."""
    import usam
    from usam.data.fmc import read_split

    stored = json.loads((ROOT / "adapters" / "results.json").read_text())
    rows = read_split(Path(args.data) / args.split)
    dirs = [ROOT / "adapters" / a for a in args.adapters]
    for adapter, d in zip(args.adapters, dirs):
        t0 = time.time()
        model = usam.UsamModel.from_pretrained(adapters=[str(d)], precision=args.precision, cache_size=2000)
        for tid in ADAPTERS[adapter]:
            stored["figures"][tid].update(figures(model, adapter, rows[tid]))
        stored["runs"].setdefault(adapter, {})[note] = (
            f"{flag}, precision {model.precision}, runtime {model.runtime}, {time.time() - t0:.0f} s")
    return stored, dirs


def _rewrite_results(args, stored: dict, dirs: list[Path]) -> None:
    """``adapters/results.json`` from ``stored`` (as read, some figures recomputed), then ``RESULTS.md`` and the
    cards of the adapters in ``dirs`` from it."""
    (ROOT / "adapters" / "results.json").write_text(json.dumps(stored, indent=1) + "\n")
    (ROOT / "adapters" / "RESULTS.md").write_text(results_markdown(args, stored["figures"], stored["n"], stored["runs"]))
    _update_cards(dirs, stored["figures"])


def results_markdown(args, figures: dict, n: dict, runs: dict) -> str:
    """``adapters/RESULTS.md``: the target table, the interactive table and every official metric."""
    lines = ["# Shipped adapters: test-split figures", "",
             f"Recomputed by `python scripts/evaluate_adapters.py` on `{args.split}/` of the FMC_UIA dev data "
             "on a 2-core CPU; per adapter (recomputed with `--adapters NAME`): " + "; ".join(
                 f"`{a}` {r['seconds']} s in all, predict {r['images_per_s']:.2f} images/s, precision {r['precision']}, "
                 f"runtime {r.get('runtime', 'torch')}" + (f" (quality figures recomputed by {r['quality_figures']})"
                                                           if r.get("quality_figures") else "")
                 + (f" (interactive benchmark recomputed by {r['click_figures']})" if r.get("click_figures") else "")
                 + (f" (prompted Dice recomputed by {r['prompt_figures']})" if r.get("prompt_figures") else "")
                 + (f" (official metrics recomputed by {r['official_figures']})" if r.get("official_figures") else "")
                 for a, r in sorted(runs.items())) + ".", "",
             "| task / metric | n | value | target | met |", "|---|---|---|---|---|"]
    for tid, key, label, op, target in TARGETS:
        v = figures.get(tid, {}).get(key)
        if v is None:
            continue
        met = "" if op is None else ("yes" if (v >= target if op == ">=" else v <= target) else f"no ({v - target:+.3f})")
        lines.append(f"| {label} | {n.get(tid)} | {v:.4f} | {'' if op is None else f'{op} {target}'} | {met} |")
    lines += ["", f"Interactive benchmark (standard click protocol, {args.clicks}-click budget; NoC = clicks to reach IoU "
              f"0.85 / 0.90, unreached counted as {args.clicks}; IoU error = |estimated - measured| IoU of the chosen "
              "first-click mask, the estimate being the quality shown with it (the adapter's `decoder.quality`); "
              "Spearman = their rank correlation over objects):", "", click_table(figures)]
    lines += ["", "All official metrics per task (from `usam evaluate`):", "", "```", json.dumps(
        {t: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()} for t, m in figures.items()}, indent=1), "```", ""]
    return "\n".join(lines)


def click_table(figures: dict) -> str:
    """Markdown table of the Dice-vs-clicks curve, NoC and IoU calibration of every task that has them."""
    shown = (1, 2, 3, 5, 10, 15, 20)
    rows = ["| task | objects | " + " | ".join(f"Dice@{k}" for k in shown) + " | NoC@85 | NoC@90 | IoU err | Spearman |",
            "|---|---|" + "---|" * (len(shown) + 4)]
    for tid, f in figures.items():
        curve = f.get("clicks:dice_curve")
        if not curve:
            continue
        cells = [f"{curve[k - 1]:.3f}" if k <= len(curve) else "" for k in shown]
        rows.append(f"| {tid} | {f['clicks:n_objects']} | " + " | ".join(cells) +
                    f" | {f['clicks:noc85']:.2f} | {f['clicks:noc90']:.2f} | {f['clicks:iou_error']:.3f} | {f['clicks:iou_spearman']:.2f} |")
    return "\n".join(rows)


def check_cases(split: Path) -> dict:
    """Per-image Dice (GT box, 1..3 clicks, no prompt) of the first ``CHECK_IMAGES`` rows of each segmentation
    task, computed in fp32 so that any x86-64 CPU reproduces them; ``tests/test_shipped_adapters.py`` re-checks."""
    import numpy as np

    import usam
    from usam.challenge.interactive import evaluate_prompts
    from usam.data.fmc import read_split

    model = usam.UsamModel.from_pretrained(adapters=[str(ROOT / "adapters" / a) for a in ADAPTERS], precision="fp32",
                                           runtime="torch")
    rows = read_split(split, tasks=[t for ts in ADAPTERS.values() for t in ts])
    cases = {tid: evaluate_prompts(model, adapter, rows[tid][:CHECK_IMAGES], n_clicks=3, progress=False)["cases"]
             for adapter, tasks in ADAPTERS.items() for tid in tasks}
    means = {tid: {k: float(np.mean([c[k] for c in cs])) for k in cs[0] if k not in ("image", "class")}
             for tid, cs in cases.items()}
    return {"check_precision": "fp32", "check_cases": cases, "check_means": means}


def _update_cards(dirs, figures) -> None:
    from usam.adapters import rewrite_card, validate_adapter_dir

    for d in dirs:
        config = validate_adapter_dir(d).config
        mpath = d / "metrics.json"
        metrics = json.loads(mpath.read_text()) if mpath.exists() else {}
        metrics["test"] = {t: {k.replace("prompt:", "dice_"): v for k, v in figures[t].items() if isinstance(v, (int, float))}
                           for t in config.tasks if t in figures}
        metrics["test_clicks"] = {t: {k[len("clicks:"):]: v for k, v in figures[t].items() if k.startswith("clicks:")}
                                  for t in config.tasks if t in figures and "clicks:dice_curve" in figures[t]}
        mpath.write_text(json.dumps(metrics, indent=2) + "\n")
        rewrite_card(d, metrics)


def _limited_copy(split: Path, dest: Path, limit: int | None, tasks: set[str] | None = None) -> Path:
    """A split with the CSVs of ``tasks`` only (default all), each cut to ``limit`` rows; images are symlinked."""
    import csv
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    (dest / "csv_files").mkdir(parents=True)
    for f in (split / "csv_files").glob("*.csv"):
        if tasks is not None and f.stem not in tasks:
            continue
        with open(f, newline="") as fh:
            rows = list(csv.reader(fh))
        with open(dest / "csv_files" / f.name, "w", newline="") as fh:
            csv.writer(fh).writerows(rows[: (limit + 1) if limit else None])
    for sub in ("Classification", "Segmentation"):
        (dest / sub).symlink_to(split / sub)
    return dest


if __name__ == "__main__":
    sys.exit(main())
