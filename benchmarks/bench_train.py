"""Training cost of ``mode: cache``, ``mode: lora`` and ``mode: tail``, side by side from one run.

    .venv/bin/python benchmarks/bench_train.py                    # 8 breast images, batch 4, 1 thread
    .venv/bin/python benchmarks/bench_train.py --images 8 --steps 4 --stages 1 2 --views 2 --threads 2

Each mode trains ``breast_lesion`` (automatic-mask head + tuned prompt decoder on simulated clicks / boxes, the
defaults of ``configs/default.yaml``) on the first ``--images`` training images of the dev data, with the trainer's
own code (:func:`usam.train.trainer.build_run`, :func:`usam.train.trainer.run_epoch`), so a step here is a step
of ``usam train``. Every mode draws the same tasks, rows and prompts (same seed): the rows differ only in how the
embedding is obtained -- cached (cache), the full encoder forward + backward on an augmented image (lora), or the
last ``K`` encoder stages forward + backward on a cached stage input (tail, LoRA in those stages only).

Reported per mode: seconds per step and per image-step (one warm-up step not timed), steps/s, the ratio to
``lora``, and separately the one-off cost of building the cache (into an empty ``$USAM_CACHE``: ``views`` entries
per training image + one per validation image for tail, one per image for cache) with its size on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu_model

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fmc_uia_dev"


def _config(mode: str, args, out: Path, stages: int | None = None) -> dict:
    return {
        "name": f"bench_{mode}", "backbone": "litemedsam", "precision": "fp32", "mode": mode,
        "data": {"root": str(args.data), "tasks": ["breast_lesion"], "limit": args.images},
        "lora": {"rank": 8, "alpha": 16, **({"stages": stages} if stages else {})},
        "decoder": {"tune": True, "lora": {"rank": 16, "alpha": 16}},
        "train": {"epochs": 1, "steps_per_epoch": args.steps + 1, "batch_size": args.batch, "lr": 1e-4, "seed": 0,
                  "views": args.views, "val_limit": 1},
        "output": str(out),
    }


def _dir_mb(path: Path) -> tuple[int, float]:
    files = [f for f in path.rglob("*.safetensors")] if path.is_dir() else []
    return len(files), sum(f.stat().st_size for f in files) / 2**20


def measure(mode: str, args, stages: int | None = None) -> dict:
    """Build a run of ``mode`` in a fresh cache folder, then time ``--steps`` steps after one warm-up step."""
    from usam.train.config import load_config
    from usam.train.trainer import build_run, run_epoch

    with tempfile.TemporaryDirectory(prefix="usam_bench_train_") as tmp:
        os.environ["USAM_CACHE"] = str(Path(tmp) / "cache")
        run = build_run(load_config(_config(mode, args, Path(tmp) / "out", stages)), log=lambda *_: None)
        entries, mb = _dir_mb(Path(tmp) / "cache")
        run.steps = 1
        run_epoch(run, 0)  # warm-up: first-touch allocations, memoised targets
        run.steps = args.steps
        t0 = time.perf_counter()
        run_epoch(run, 1)
        seconds = (time.perf_counter() - t0) / args.steps
        trained = sum(p.numel() for g in run.optimizer.param_groups for p in g["params"])
    return {"mode": mode, "stages": stages, "s_step": seconds, "cache_s": run.cache_seconds, "entries": entries,
            "mb": mb, "trained": trained}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=8, help="training images (breast_lesion train/)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--views", type=int, default=2, help="tail mode: cached views per training image")
    ap.add_argument("--stages", type=int, nargs="+", default=[1], help="tail mode: LoRA stages K (one row each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-lora", action="store_true", help="leave out mode lora (the slow one)")
    args = ap.parse_args()
    if not (args.data / "train" / "csv_files" / "breast_lesion.csv").is_file():
        raise SystemExit(f"benchmark data not found under {args.data} (pass --data FMC_UIA_ROOT with train/csv_files/)")
    import torch

    torch.set_num_threads(args.threads)
    rows = [("cache", None)] + ([] if args.skip_lora else [("lora", None)]) + [("tail", k) for k in args.stages]
    results = []
    for mode, k in rows:
        results.append(measure(mode, args, k))
        print(f"# {mode}{f' K={k}' if k else ''}: {results[-1]['s_step']:.2f} s/step", file=sys.stderr, flush=True)
    report(results, args)


def report(results: list[dict], args) -> None:
    lora = next((r["s_step"] for r in results if r["mode"] == "lora"), None)
    print(f"# bench_train: {cpu_model()}, {args.threads} thread(s), torch fp32; breast_lesion, batch {args.batch}, "
          f"{args.images} train images, {args.steps} timed steps per mode")
    print("| mode                 |   s/step | s/image-step | steps/s | step vs lora | trained params | "
          "cache build (one-off)          |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        label = r["mode"] + (f" (K={r['stages']}, {args.views} views)" if r["mode"] == "tail" else "")
        ratio = f"{lora / r['s_step']:.1f}x faster" if lora and r["mode"] != "lora" else ""
        cache = (f"{r['cache_s']:.1f} s, {r['entries']} entries, {r['mb']:.0f} MB "
                 f"({r['cache_s'] / max(r['entries'], 1):.2f} s / {r['mb'] / max(r['entries'], 1):.1f} MB each)"
                 if r["entries"] else "none")
        print(f"| {label:20s} | {r['s_step']:8.2f} | {r['s_step'] / args.batch:12.2f} | {1 / r['s_step']:7.3f} | "
              f"{ratio:12s} | {r['trained'] / 1e6:12.2f}M | {cache} |")


if __name__ == "__main__":
    main()
