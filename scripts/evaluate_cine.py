"""Propagation on the real cine loops of ``../shared/data/cine_carotid`` (issue #17): one click, then tracking.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/evaluate_cine.py --out runs/cine_bare
    OMP_NUM_THREADS=2 .venv/bin/python scripts/evaluate_cine.py --adapter runs/carotid --out runs/cine_carotid
    .venv/bin/python scripts/evaluate_cine.py --limit-frames 10 --sequences 202201121819140033VAS   # a quick look
    .venv/bin/python scripts/evaluate_cine.py --prepare-train /tmp/usam_cine/carotid_lumen          # training folder

Per sequence: one simulated click on frame 0 at the innermost point of the expert mask (largest distance to its
border), nothing else; :class:`usam.Tracker` propagates it forwards through every frame. Reported: per-frame Dice
against the expert lumen mask, the mean over all frames (frame 0 included), the first frame below Dice 0.7, the
**Spearman** rank correlation between the tracker's per-frame confidence and Dice over the propagated frames
(frame 0, the clicked one, excluded), how many frames were flagged lost, and time: encoder ms per frame and
propagation ms per frame *beyond the encoder* (prompting, decoding, upsampling, mask work; the issue's target is
<= 100 ms per frame on 2 CPU cores), and frames/s end to end. Writes ``OUT/<sequence>.png`` (Dice and confidence
per frame) and ``OUT/results.json``; prints a Markdown table.

``--prepare-train DIR`` writes a training folder for ``usam train`` (``images/`` = symlinks to the frames of
``--train-sequence``, ``masks/`` = the expert masks as 0 / 1 PNGs: the folder reader takes mask values as class ids,
so the 0 / 255 masks cannot be read as they are). It refuses a DIR inside the repository (the data is never copied
into it). A carotid adapter is trained on ``--train-sequence`` (default ``202201121748100022VAS``) from that folder:

    .venv/bin/python scripts/evaluate_cine.py --prepare-train /tmp/usam_cine/carotid_lumen
    OMP_NUM_THREADS=1 .venv/bin/python -m usam train configs/default.yaml --set data.root=/tmp/usam_cine/carotid_lumen \
        --set name=carotid --set train.views=4 --set "train.augment_scale=[0.75, 1.33]" --output runs/carotid

(zoomed views: one loop shows the decoder too narrow a range of lumen sizes; README, *Loops and DICOM*.)

With ``--adapter`` that sequence is marked ``train`` in the table and the held-out mean covers the other two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usam.ops.masks import dice

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cine_carotid"
TRAIN_SEQUENCE = "202201121748100022VAS"
DROP = 0.7


def sequences(data: Path) -> list[Path]:
    seqs = sorted(p for p in data.iterdir() if (p / "frames").is_dir() and (p / "masks").is_dir()) if data.is_dir() else []
    if not seqs:
        raise SystemExit(f"no cine sequences (<name>/frames + <name>/masks) under {data}: pass --data")
    return seqs


def read_sequence(seq: Path, limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames ``(H, W, 3)`` uint8 and expert masks ``(H, W)`` bool of one sequence, in name order."""
    from usam.io import read_image, read_mask

    names = sorted(p.name for p in (seq / "frames").glob("*.png"))[: limit or None]
    return [read_image(seq / "frames" / n) for n in names], [read_mask(seq / "masks" / n) > 0 for n in names]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def run_sequence(model, name: str, frames, truths, adapter: str | None = None, settings=None, progress: bool = False) -> dict:
    """Track from one innermost click on frame 0; per-frame Dice and the summary figures."""
    from usam.tracker import Tracker, innermost_point

    tracker = Tracker(model, adapter=adapter, settings=settings, progress=progress)
    tracker.add_prompt(0, points=[innermost_point(truths[0])], labels=[1])
    t0 = time.perf_counter()
    res = tracker.propagate(frames, direction="forward")
    wall = time.perf_counter() - t0
    d = [dice(m, g) for m, g in zip(res.masks, truths)]
    below = [i for i, v in enumerate(d) if v < DROP]
    tm = res.timing
    n = len(frames)
    return {
        "sequence": name, "n_frames": n, "mean_dice": float(np.mean(d)), "first_below_0.7": below[0] if below else None,
        "frames_below_0.7": len(below), "spearman_conf_dice": spearman(res.confidence[1:], d[1:]),
        "lost_frames": int(res.lost.sum()), "dice_of_lost": float(np.mean([d[i] for i in np.flatnonzero(res.lost)])) if res.lost.any() else None,
        "encoder_ms_per_frame": 1000 * tm["encode_s"] / max(1, tm["encoded"]) if tm["encoded"] else None,
        "propagate_ms_per_frame": 1000 * tm["propagate_s"] / n, "frames_per_s": n / wall, "encoded": tm["encoded"],
        "dice": d, "confidence": [float(c) for c in res.confidence], "lost": [bool(x) for x in res.lost],
        "scores": [float(s) for s in res.scores],
    }


def plot(row: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(row["n_frames"])
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    ax.plot(x, row["dice"], "-o", ms=3, label="Dice vs expert mask")
    ax.plot(x, row["confidence"], "-", lw=1, alpha=0.7, label="tracker confidence")
    lost = np.flatnonzero(row["lost"])
    if lost.size:
        ax.plot(lost, np.asarray(row["dice"])[lost], "rx", label="flagged lost")
    ax.axhline(DROP, color="grey", ls="--", lw=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def prepare_train(data: Path, sequence: str, out: Path) -> None:
    """``out/images`` (symlinks) + ``out/masks`` (0 / 1 PNGs) of ``sequence`` for ``usam train``."""
    import cv2

    out = out.resolve()
    if out == ROOT or ROOT in out.parents:
        raise SystemExit(f"--prepare-train {out}: write the training folder outside the repository (e.g. under /tmp)")
    seq = data / sequence
    if not (seq / "frames").is_dir():
        raise SystemExit(f"no sequence {sequence} under {data}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    for f in sorted((seq / "frames").glob("*.png")):
        link = out / "images" / f.name
        if not link.exists():
            os.symlink(f.resolve(), link)
        m = cv2.imread(str(seq / "masks" / f.name), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(out / "masks" / f.name), (m > 127).astype(np.uint8))
    print(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cine_carotid root (default ../shared/data/cine_carotid)")
    ap.add_argument("--adapter", default=None, help="adapter directory whose tuned decoder answers the prompts")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "cine_eval", help="folder for the PNGs and results.json")
    ap.add_argument("--limit-frames", type=int, default=None, help="only the first N frames of each sequence")
    ap.add_argument("--sequences", nargs="*", default=None, help="sequence names (default: all)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--prepare-train", type=Path, default=None, metavar="DIR", help="write a usam-train folder and exit")
    ap.add_argument("--train-sequence", default=TRAIN_SEQUENCE, help=f"sequence for --prepare-train (default {TRAIN_SEQUENCE})")
    args = ap.parse_args(argv)
    if args.prepare_train is not None:
        prepare_train(args.data, args.train_sequence, args.prepare_train)
        return 0

    import usam
    from usam.io import dumps_json

    seqs = sequences(args.data)
    if args.sequences:
        seqs = [s for s in seqs if s.name in set(args.sequences)]
    model = usam.load(adapters=[args.adapter] if args.adapter else [])
    name = next(iter(model.adapters)) if args.adapter else None
    trained_on = args.train_sequence if args.adapter else None  # the carotid adapter's sequence (configs/carotid.yaml)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seq in seqs:
        frames, truths = read_sequence(seq, args.limit_frames)
        row = run_sequence(model, seq.name, frames, truths, adapter=name, progress=not args.no_progress)
        row["role"] = "train" if seq.name == trained_on else ("held-out" if trained_on else "-")
        plot(row, args.out / f"{seq.name}.png", f"{seq.name} ({name or 'bare LiteMedSAM'}): one click on frame 0, "
             f"mean Dice {row['mean_dice']:.3f}")
        rows.append(row)
        print(f"{seq.name}: mean Dice {row['mean_dice']:.4f} over {row['n_frames']} frames", file=sys.stderr, flush=True)

    head = ("| sequence | role | frames | mean Dice | first < 0.7 | frames < 0.7 | lost | Spearman(conf, Dice) "
            "| encoder ms/frame | propagation ms/frame | frames/s |")
    print(f"\nmodel: {name or 'bare LiteMedSAM'} ({model.runtime}, {model.precision}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        enc = f"{r['encoder_ms_per_frame']:.0f}" if r["encoder_ms_per_frame"] is not None else "cached"
        print(f"| {r['sequence']} | {r['role']} | {r['n_frames']} | {r['mean_dice']:.4f} | {r['first_below_0.7']} | "
              f"{r['frames_below_0.7']} | {r['lost_frames']} | {r['spearman_conf_dice']:.2f} | {enc} | "
              f"{r['propagate_ms_per_frame']:.0f} | {r['frames_per_s']:.2f} |")
    held = [r for r in rows if r["role"] != "train"]
    summary = {"model": name or "bare", "runtime": model.runtime, "precision": model.precision,
               "mean_dice_all_sequences": float(np.mean([r["mean_dice"] for r in rows])),
               "mean_dice_held_out": float(np.mean([r["mean_dice"] for r in held])) if held and trained_on else None,
               "sequences": rows}
    print(f"\nmean of sequence means: {summary['mean_dice_all_sequences']:.4f}"
          + (f"; held-out sequences: {summary['mean_dice_held_out']:.4f}" if summary["mean_dice_held_out"] is not None else ""))
    (args.out / "results.json").write_text(dumps_json(summary))
    print(f"wrote {args.out}/results.json and one PNG per sequence", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
