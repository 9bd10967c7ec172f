"""Encoder runtimes and ``usam predict`` timed round-robin in one process: ratios that hold on a busy machine.

    .venv/bin/python benchmarks/bench_interleaved.py --threads 2 --images 8 --rounds 2

``bench_speed.py`` runs each row in its own process, one after the other, so when other jobs share the cores
its ratios compare different loads. Here every variant handles the same image back to back before the next image
is taken (round-robin), and each ratio is the median over images of ``time(reference) / time(variant)`` measured
within one round, so slow periods hit both sides of a ratio alike.

Rows:

- encoder (network only, batch 1): LiteMedSAM eager fp32 (reference), eager bf16 autocast and OpenVINO bf16 only
  where the CPU computes bf16 natively (elsewhere they are emulated and not what ``auto`` picks), ONNX Runtime fp32,
  OpenVINO fp32, and OpenVINO int8 where ``usam export int8`` left a checked int8 encoder in ``$USAM_CACHE``;
- ``usam predict`` (``predict_split`` on a one-image split: read, encode, automatic segmentation head + tuned
  decoder, PNG + journal), eager torch fp32 (round 1's path, the reference) vs the defaults (``runtime auto``),
  beside the FMC_UIA baseline architecture (EfficientNet-B4 + FPN, random weights, 256 px; needs
  ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import bench_speed as bs  # benchmarks/bench_speed.py: data, split folders, the baseline
from common import cpu_model


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (elsewhere bf16 is emulated: not a variant ``precision auto`` runs)."""
    from usam.model import native_bf16_cpu

    return native_bf16_cpu()


def encoder_variants() -> dict:
    """name -> ``fn(x (1, 3, S, S)) -> embedding`` for every encoder variant that runs natively here."""
    import torch

    from usam import UsamModel, build_backbone
    from usam.runtime import checked_int8

    backbone = build_backbone("litemedsam")
    variants = {}
    for name, runtime, precision in (("eager fp32", "torch", "fp32"), ("eager bf16", "torch", "bf16"),
                                     ("ONNX Runtime fp32", "onnx", "fp32"), ("OpenVINO fp32", "openvino", "fp32"),
                                     ("OpenVINO bf16", "openvino", "bf16"), ("OpenVINO int8", "openvino", "int8")):
        if precision == "bf16" and not native_bf16():
            continue
        if precision == "int8" and not checked_int8(backbone):
            print("(OpenVINO int8 skipped: no checked int8 encoder in $USAM_CACHE; make one with "
                  "`usam export int8 --data ../shared/data/fmc_uia_dev`)", file=sys.stderr)
            continue
        model = UsamModel(backbone, precision=precision, runtime=runtime)

        def run(x, model=model):
            with torch.inference_mode():
                return model._encode(x)

        variants[name] = run
    return variants


def predict_variants(data: Path, tmp: Path) -> dict:
    """name -> ``fn(split_dir, out_dir)``: ``usam predict`` eager fp32, defaults, and the baseline architecture."""
    from usam import UsamModel
    from usam.challenge.predict import predict_split

    variants = {}
    for name, runtime in (("usam predict, torch fp32", "torch"), ("usam predict, defaults", "auto")):
        model = UsamModel.from_pretrained(precision="fp32" if runtime == "torch" else "auto", runtime=runtime)
        model.load_adapter(str(bs._tiny_adapter(model, tmp / f"adapter_{runtime}")))

        def run(split, out, model=model):
            model.cache.clear()
            predict_split(split, out, model, progress=False)

        variants[f"{name} ({model.runtime}, {model.precision})"] = run
    base = baseline()
    if base is not None:
        variants["FMC_UIA baseline fp32"] = base
    return variants


def baseline():
    """The FMC_UIA baseline architecture's inference on a split's one image, or ``None`` without smp."""
    import csv

    net = bs.baseline_model()
    if net is None:
        print("(FMC_UIA baseline skipped: pip install -e .[bench])", file=sys.stderr)
        return None

    def run(split: Path, out: Path) -> None:
        with open(split / "csv_files" / "breast_lesion.csv", newline="") as fh:
            row = next(csv.DictReader(fh))
        bs.baseline_segment(net, split / "csv_files" / row["image_path"], out / (Path(row["mask_path"]).stem + ".png"))

    return run


def round_robin(variants: dict, items: list, rounds: int) -> dict[str, list[float]]:
    """Seconds per (round, item) for every variant, the variants run back to back on each item; the first item of
    the first round is a warm-up for every variant and is not kept."""
    times = {name: [] for name in variants}
    for r in range(rounds):
        for i, item in enumerate(items):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn(item)
                if r or i:
                    times[name].append(time.perf_counter() - t0)
    return times


def report(title: str, times: dict[str, list[float]], unit: str) -> str:
    """A table: median time, rate and the median per-item ratio against the first variant."""
    ref_name = next(iter(times))
    ref = times[ref_name]
    lines = [f"\n{title} (reference: {ref_name}; ratio = median over items of t(reference) / t(variant))",
             f"| {'variant':<44} | {'median ms':>10} | {unit + '/s':>9} | {'vs reference':>12} |",
             f"|{'-' * 46}|{'-' * 12}|{'-' * 11}|{'-' * 14}|"]
    for name, t in times.items():
        med = statistics.median(t)
        ratio = statistics.median(a / b for a, b in zip(ref, t))
        lines.append(f"| {name:<44} | {med * 1000:>10.0f} | {1 / med:>9.2f} | {ratio:>11.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images per round (default 8; the first is also a warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the images (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch / runtime threads (default: torch's choice)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["encoder", "predict"], help="groups to leave out")
    ap.add_argument("--data", type=Path, default=bs.DEFAULT_DATA)
    args = ap.parse_args(argv)
    if args.images < 2 or args.rounds < 1:
        ap.error("--images must be >= 2 and --rounds >= 1")
    bs.breast_lesion_csv(args.data)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {cpu_model()}, threads {torch.get_num_threads()}, native bf16: {native_bf16()}; "
          f"{args.images} breast_lesion test images x {args.rounds} round(s), round-robin")
    if "encoder" not in args.skip:
        from usam import build_backbone

        pre = build_backbone("litemedsam")
        xs = [pre.preprocess(im)[0] for im in bs.load_images(args.data, args.images)]
        print(report("LiteMedSAM encoder", round_robin(encoder_variants(), xs, args.rounds), "images"), flush=True)
    if "predict" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            splits = [bs.split_dir(args.data, 1, tmp / f"split{k}", offset=k) for k in range(args.images)]
            fresh = iter(range(10**9))  # every call writes into a new folder (an old one would be resumed, not redone)
            variants = {name: (lambda split, fn=fn: fn(split, tmp / "out" / str(next(fresh))))
                        for name, fn in predict_variants(args.data, tmp).items()}
            print(report("usam predict, one image per call", round_robin(variants, splits, args.rounds), "images"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
