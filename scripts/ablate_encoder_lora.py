#!/usr/bin/env python
"""Does encoder LoRA help an organ? Score adapters side by side on the validation split (never on test).

    .venv/bin/python scripts/ablate_encoder_lora.py adapters/fetal_head runs/fetal_head_tail runs/fetal_head_ctl \\
        --names shipped "tail (encoder LoRA)" "control (no encoder LoRA)" [--clicks 10] [--record adapters/fetal_head]

Each adapter is scored by the product's own commands, in fp32 on the PyTorch runtime (figures that do not depend
on this CPU's bf16 kernels): ``usam predict`` + ``usam evaluate --clicks N`` (official metrics of every task, and
the standard click protocol on its segmentation tasks). The table is printed; with ``--record DIR`` it goes into
DIR's ``config.json`` (``training.encoder_lora_ablation``) and model card, so the card shows why the adapter has
(or has not) encoder LoRA. The intended arms: the adapter as it is, the same recipe with encoder LoRA
(``mode: tail``) and without it (``mode: cache``, same steps), so the comparison isolates the encoder LoRA.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (metric key in usam evaluate's JSON, label) per task kind, in table order
METRICS = {
    "segmentation": [("dice", "no-prompt Dice"), ("hc_abs_err_mm", "HC abs error (mm)")],
    "classification": [("auc", "AUC"), ("macro_f1", "macro F1")],
    "detection": [("iou", "box IoU")],
    "regression": [("mre_px", "MRE (px)"), ("hc_abs_err_mm", "HC abs error (mm)")],
}
CLICK_POINTS = (1, 3, 5, 10)


def run(cmd: list[str]) -> str:
    print("+", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{cmd[1]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def fingerprint(adapter: Path, data: Path, clicks: int, limit: int | None) -> str:
    """SHA-256 of the adapter's files and the settings: a stored report is reused only for the same of both."""
    h = hashlib.sha256(f"{data.resolve()} {clicks} {limit}".encode())
    for f in sorted(p for p in adapter.iterdir() if p.is_file() and p.name != "README.md"):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def score(adapter: Path, data: Path, out: Path, clicks: int, limit: int | None) -> dict:
    """``{task: {label: value}}`` for one adapter on ``data`` (a split folder). ``usam evaluate``'s report is kept
    in ``out/evaluate.json`` and reused while the adapter and the settings are the same."""
    key, stored = fingerprint(adapter, data, clicks, limit), out / "evaluate.json"
    tasks = sorted(json.loads((adapter / "config.json").read_text())["tasks"])
    if stored.is_file() and json.loads(stored.read_text()).get("fingerprint") == key:
        report = json.loads(stored.read_text())["report"]
    else:
        usam = [sys.executable, "-m", "usam"]
        common = ["--tasks", *tasks, "--adapters", str(adapter), "--precision", "fp32", "--runtime", "torch"]
        run(usam + ["predict", str(data), str(out), "--restart", "--quiet", *common])
        extra = ["--limit", str(limit)] if limit else []
        report = json.loads(run(usam + ["evaluate", str(data), str(out), "--json", "--quiet", "--clicks", str(clicks),
                                        *extra, *common]))
        report["box_dice"] = box_dice(adapter, data, [t for t in tasks if report["tasks"][t]["kind"] == "segmentation"],
                                      limit)
        stored.write_text(json.dumps({"fingerprint": key, "adapter": str(adapter), "report": report}, indent=1))
    rows = {}
    for tid in tasks:
        t = report["tasks"][tid]
        m = t["metrics"]
        row = {label: m[k] for k, label in METRICS[t["kind"]] if k in m}
        if tid in report.get("box_dice", {}):
            row["GT-box Dice"] = report["box_dice"][tid]
        curve = (t.get("clicks") or {}).get("dice_curve")
        if curve:
            row.update({f"Dice {k} click{'s' if k > 1 else ''}": curve[k - 1] for k in CLICK_POINTS if k <= len(curve)})
            row["NoC@90"] = t["clicks"]["noc90"]
        rows[tid] = {k: round(float(v), 4) for k, v in row.items()}
    return rows


def arm_dir(out: Path, adapter: Path) -> Path:
    """Where an arm's predictions and report go: named by its path in the repository (``runs/x`` -> ``runs_x``)."""
    a = adapter.resolve()
    return out / (a.relative_to(ROOT).as_posix().replace("/", "_") if a.is_relative_to(ROOT) else a.name)


def box_dice(adapter: Path, data: Path, tasks: list[str], limit: int | None) -> dict[str, float]:
    """Mean Dice from each object's ground-truth box (the box path a user's box takes), per segmentation task."""
    import usam
    from usam.challenge.interactive import evaluate_prompts
    from usam.data.fmc import read_split

    model = usam.load(adapters=[str(adapter)], precision="fp32", runtime="torch")
    split = read_split(data, tasks=tasks)
    return {tid: evaluate_prompts(model, model.adapter.name, split[tid][:limit], n_clicks=0, progress=False)["mean"]["box"]
            for tid in tasks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapters", nargs="+", type=Path)
    ap.add_argument("--names", nargs="+", help="a name per adapter (default: the folder names)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fmc_uia_dev")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clicks", type=int, default=10, help="click budget of the click protocol")
    ap.add_argument("--limit", type=int, default=None, help="click protocol on the first N images only (quick look)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("--record", type=Path, help="write the table into this adapter's config.json and card")
    ap.add_argument("--conclusion", default="", help="a sentence for the card under the table (what was chosen, why)")
    args = ap.parse_args(argv)
    if args.split == "test":
        ap.error("choose on val/ (or train/), never on test/")
    names = args.names or [a.name for a in args.adapters]
    if len(names) != len(args.adapters):
        ap.error("--names needs one name per adapter")
    from usam.adapters import rewrite_card
    from usam.adapters.card import ablation_table

    results = [score(a, args.data / args.split, arm_dir(args.out, a), args.clicks, args.limit) for a in args.adapters]
    print("\n".join(ablation_table(dict(zip(names, results)))))
    if args.record:
        path = args.record / "config.json"
        cfg = json.loads(path.read_text())
        cfg.setdefault("training", {})["encoder_lora_ablation"] = {
            "split": args.split, "clicks": args.clicks, "precision": "fp32",
            "command": "python scripts/ablate_encoder_lora.py " + " ".join(str(a) for a in args.adapters),
            "arms": {n: {"adapter": str(a), "lora": json.loads((a / "config.json").read_text()).get("lora") is not None,
                         "figures": r} for n, a, r in zip(names, args.adapters, results)},
            "conclusion": args.conclusion,
        }
        path.write_text(json.dumps(cfg, indent=2) + "\n")
        rewrite_card(args.record)
        print(f"recorded in {path} and its card", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
