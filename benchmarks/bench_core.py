"""Encoder time per image vs prompt time per prompt (on a cached embedding), LiteMedSAM vs SAM ViT-B.

    .venv/bin/python benchmarks/bench_core.py                 # 5 images for litemedsam, 2 for sam_vit_b
    .venv/bin/python benchmarks/bench_core.py --images 10 --vit-images 3 --prompts 20

LiteMedSAM runs its real bundled weights; SAM ViT-B runs at full size with random weights (timing does
not depend on the values). Images are the first rows of ``../shared/data/fmc_uia_dev/test/csv_files/
breast_lesion.csv``; prompts are ground-truth boxes (mask extent). One image per backbone is a warm-up
and is not timed. Prompt time covers ``Predictor.predict`` end to end (validation, prompt encoder, mask
decoder, upsampling to the original size), with the image embedding already cached.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import breast_lesion_csv, cpu_model  # noqa: E402  (benchmarks/common.py)

from usam import Predictor, UsamModel, build_backbone  # noqa: E402
from usam.io import read_image, read_mask  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fmc_uia_dev"


def load_cases(data: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """First ``n`` breast_lesion test images with their ground-truth box (x1 / y1 exclusive)."""
    csv_path = breast_lesion_csv(data)
    csv_dir = csv_path.parent
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    cases = []
    for r in rows:
        image = read_image(csv_dir / r["image_path"])
        ys, xs = np.nonzero(read_mask(csv_dir / r["mask_path"]) > 0)
        cases.append((Path(r["image_path"]).name, image, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)))
    return cases


def bench(name: str, model: UsamModel, cases, n_images: int, n_prompts: int) -> dict:
    """Warm up on the first case, then time ``n_images`` encodes and ``n_prompts`` prompts per image."""
    predictor = Predictor(model)
    enc_ms, prompt_ms, shapes = [], [], []
    for i, (_, image, box) in enumerate(cases[: n_images + 1]):
        model.cache.clear()
        t0 = time.perf_counter()
        predictor.set_image(image)
        t_enc = (time.perf_counter() - t0) * 1000
        predictor.predict(box=box, multimask_output=False)  # first prompt on this image (not timed)
        t0 = time.perf_counter()
        for _ in range(n_prompts):
            predictor.predict(box=box, multimask_output=False)
        t_prompt = (time.perf_counter() - t0) * 1000 / n_prompts
        if i == 0:
            continue  # warm-up
        enc_ms.append(t_enc)
        prompt_ms.append(t_prompt)
        shapes.append(image.shape[:2])
        print(f"  {name:<10} image {i}/{n_images} {image.shape[1]}x{image.shape[0]}: encoder {t_enc:8.1f} ms, prompt {t_prompt:6.1f} ms",
              file=sys.stderr, flush=True)
    b = model.backbone
    return {
        "backbone": name,
        "input": b.input_size,
        "params_m": sum(p.numel() for p in b.image_encoder.parameters()) / 1e6,
        "images": len(enc_ms),
        "enc_ms": statistics.mean(enc_ms),
        "enc_sd": statistics.pstdev(enc_ms),
        "prompt_ms": statistics.mean(prompt_ms),
        "prompt_sd": statistics.pstdev(prompt_ms),
        "precision": model.precision,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5, help="timed images for litemedsam (default 5; plus 1 warm-up)")
    ap.add_argument("--vit-images", type=int, default=2, help="timed images for sam_vit_b (default 2; plus 1 warm-up)")
    ap.add_argument("--prompts", type=int, default=10, help="timed box prompts per image (default 10)")
    ap.add_argument("--backbones", nargs="+", default=["litemedsam", "sam_vit_b"], choices=["litemedsam", "sam_vit_b"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"], help="encoder precision (default fp32)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"FMC_UIA dev data (default {DEFAULT_DATA})")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    counts = {"litemedsam": args.images, "sam_vit_b": args.vit_images}
    cases = load_cases(args.data, max(counts[b] for b in args.backbones) + 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (interop {torch.get_num_interop_threads()}), "
          f"CPU: {cpu_model()} ({__import__('os').cpu_count()} logical CPUs), precision {args.precision}")
    print(f"images: first rows of {args.data / 'test/csv_files/breast_lesion.csv'}, 1 warm-up each; "
          f"{args.prompts} box prompts per image on the cached embedding")

    results = []
    with torch.inference_mode():
        for name in args.backbones:
            t0 = time.perf_counter()
            backbone = build_backbone(name) if name == "litemedsam" else build_backbone(name, pretrained=False)
            model = UsamModel(backbone, precision=args.precision)
            label = name if name == "litemedsam" else f"{name} (random)"
            print(f"  built {label} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            results.append(bench(name, model, cases, counts[name], args.prompts))
            del model, backbone

    print()
    print(f"| {'backbone':<22} | {'input':>5} | {'enc params':>10} | {'imgs':>4} | {'encoder ms/image':>18} | {'prompt ms/prompt':>16} | {'encoder / prompt':>16} |")
    print(f"|{'-' * 24}|{'-' * 7}|{'-' * 12}|{'-' * 6}|{'-' * 20}|{'-' * 18}|{'-' * 18}|")
    for r in results:
        label = r["backbone"] + (" (random)" if r["backbone"] != "litemedsam" else " (real)")
        print(f"| {label:<22} | {r['input']:>5} | {r['params_m']:>9.1f}M | {r['images']:>4} | "
              f"{r['enc_ms']:>9.1f} ± {r['enc_sd']:>6.1f} | {r['prompt_ms']:>7.1f} ± {r['prompt_sd']:>5.1f} | "
              f"{r['enc_ms'] / r['prompt_ms']:>15.1f}x |")
    by = {r["backbone"]: r for r in results}
    if {"litemedsam", "sam_vit_b"} <= set(by):
        lm, vb = by["litemedsam"], by["sam_vit_b"]
        print(f"\nsam_vit_b / litemedsam: encoder {vb['enc_ms'] / lm['enc_ms']:.1f}x slower, "
              f"prompt {vb['prompt_ms'] / lm['prompt_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
