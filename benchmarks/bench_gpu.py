"""GPU fast path: LiteMedSAM encoder images/s at batch 1 / 8 / 32 and click -> mask latency (``benchmarks/gpu.sh``).

    .venv/bin/python benchmarks/bench_gpu.py                     # cuda when torch sees one, else CPU parts only
    .venv/bin/python benchmarks/bench_gpu.py --batches 1 8 --reps 5 --no-compile

Encoder rows (GPU only; skipped with a message on the CPU): network images/s on preprocessed real breast-lesion
images, per batch size, for eager fp32, the fast path (bf16 autocast + channels-last) and the fast path under
``torch.compile`` (skipped with the error's first line where it does not compile), with the embedding's max |diff|
vs eager fp32. Click rows: ``Predictor.predict`` p50 / p95 on a cached embedding (one click, multimask, and a
corrective pair with ``mask_input``, single mask) on the device; on the CPU, ``bench_click.py``'s variants.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_click  # benchmarks/bench_click.py (this folder is on sys.path)

from usam import Predictor, UsamModel, build_backbone

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fmc_uia_dev"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_inputs(backbone, data: Path, n: int, device: torch.device) -> torch.Tensor:
    """``(n, 3, S, S)`` preprocessed real images (the first test rows, repeated to ``n``)."""
    images = [im for im, _, _ in bench_click.click_sets(data, min(n, 8))]
    xs = [backbone.preprocess(images[i % len(images)])[0] for i in range(n)]
    return torch.cat(xs).to(device)


def variant_fn(backbone, name: str):
    """``x -> embedding`` for ``fp32`` (eager), ``fast`` (bf16 + channels-last), ``compiled`` (fast + torch.compile)."""
    encoder = backbone.image_encoder
    if name == "fp32":
        return lambda x: encoder(x)
    fast = encoder.to(memory_format=torch.channels_last)
    run = torch.compile(fast) if name == "compiled" else fast

    def call(x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return run(x.contiguous(memory_format=torch.channels_last))

    return call


def time_batches(fn, x: torch.Tensor, batch: int, reps: int, device) -> tuple[float, torch.Tensor]:
    """Median seconds per batch of ``batch`` images (first call a warm-up / compilation), and one output."""
    xb = x[:batch]
    with torch.inference_mode():
        out = fn(xb)
        sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(xb)
            sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def encoder_rows(args, device: torch.device) -> None:
    backbone = build_backbone("litemedsam").to(device).eval()
    x = encoder_inputs(backbone, args.data, max(args.batches), device)
    ref = {}
    print(f"\n| {'encoder':<22} | {'batch':>5} | {'images/s':>9} | {'ms/batch':>9} | {'max |diff| vs fp32':>18} |")
    for name in ("fp32", "fast", "compiled"):
        if name == "compiled" and args.no_compile:
            print(f"| {name:<22} | skipped (--no-compile)")
            continue
        fn = variant_fn(backbone, name)
        label = {"fp32": "eager fp32", "fast": "bf16 + channels-last", "compiled": "bf16 + cl + compile"}[name]
        for b in args.batches:
            try:
                sec, out = time_batches(fn, x, b, args.reps, device)
            except Exception as exc:  # noqa: BLE001 - a variant that does not run here is reported, the others go on
                print(f"| {label:<22} | {b:>5} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                break
            diff = "" if name == "fp32" else f"{(out.float() - ref[b]).abs().max().item():.3g}"
            ref.setdefault(b, out.float())
            print(f"| {label:<22} | {b:>5} | {b / sec:>9.1f} | {sec * 1000:>9.1f} | {diff:>18} |", flush=True)
        backbone.image_encoder.to(memory_format=torch.contiguous_format)


def click_rows_gpu(args, device: torch.device) -> None:
    image, first, pair = bench_click.click_sets(args.data, 1)[0]
    model = UsamModel(build_backbone("litemedsam").to(device))
    if args.adapter != "none":
        model.load_adapter(args.adapter)
    predictor = Predictor(model)
    predictor.set_image(image)
    _, scores, low = predictor.predict(point_coords=first, point_labels=np.array([1]))
    prev = low[int(np.argmax(scores))][None]
    calls = {"one click, multimask": {"point_coords": first, "point_labels": np.array([1])},
             "pair + mask_input": {"point_coords": pair, "point_labels": np.array([1, 0]), "mask_input": prev,
                                   "multimask_output": False}}
    print(f"\nclick -> mask on {device} ({image.shape[1]}x{image.shape[0]} image, cached embedding, n = {args.clicks})")
    for label, kwargs in calls.items():
        times = []
        for i in range(args.clicks + 1):
            sync(device)
            t0 = time.perf_counter()
            predictor.predict(**kwargs)
            sync(device)
            if i:
                times.append(time.perf_counter() - t0)
        print(f"| {label:<22} | p50 {bench_click.pct(times, 0.5):6.1f} ms | p95 {bench_click.pct(times, 0.95):6.1f} ms |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--reps", type=int, default=10, help="timed batches per row (default 10; +1 warm-up)")
    ap.add_argument("--clicks", type=int, default=50, help="timed clicks per click row (default 50; +1 warm-up)")
    ap.add_argument("--adapter", default=str(ROOT / "adapters" / "breast"), help="adapter of the click rows ('none': bare)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}")
    if cuda:
        encoder_rows(args, device)
        click_rows_gpu(args, device)
    else:
        print("bench_gpu: no CUDA device: encoder batch rows skipped (GPU only); click rows on the CPU:")
        adapter = None if args.adapter == "none" else args.adapter
        print(bench_click.report(bench_click.run(args.data, 2, max(1, args.clicks // 2), adapter)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
