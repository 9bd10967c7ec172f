"""Speed and memory, side by side from one run: encoders, click latency, ``usam predict`` vs the FMC_UIA baseline.

    .venv/bin/python benchmarks/bench_speed.py                  # 8 images, CPU
    .venv/bin/python benchmarks/bench_speed.py --images 20 --vit-images 3 --clicks 100
    .venv/bin/python benchmarks/bench_speed.py --device cuda    # on a GPU (benchmarks/gpu.sh)

Rows:

- encoder images/s (network only, preprocessing excluded, batch 1): LiteMedSAM (real weights) on every
  runtime x precision of :mod:`usam.runtime` -- eager fp32, eager bf16 autocast (what ``--precision auto`` picks
  on CPUs with AVX512-BF16 / AMX and on GPUs), ONNX Runtime fp32, OpenVINO fp32 and bf16 (its bf16 hint; fp32
  kernels on CPUs without bf16) -- each with the mean Dice of ground-truth-box masks on the same images and its
  change against eager fp32 (the accuracy guard of ``tests/test_runtime.py``); SAM ViT-B (random weights,
  1024 px) in fp32 and bf16;
- click-to-mask latency p50 / p95 (``bench_click.py``): the prompt path as it was (``before``), ``Predictor`` on
  eager PyTorch and on the compiled prompt decoder, timed round-robin in one process on a cached embedding, end to
  end (prompt encoder, mask decoder, upsampling to the original size, threshold), with the ``before`` path split by
  stage; the tuned decoder of ``adapters/breast`` by default (``--click-adapter none``: the bare backbone);
- ``usam predict`` images/s (``predict_split`` on a split of the same images: read, encode, automatic
  segmentation head + prompt decoder, PNG + journal writes) vs the FMC_UIA baseline architecture
  (EfficientNet-B4 + FPN from segmentation_models_pytorch, random weights, ``encoder_weights=None``; the
  baseline's own inference: resize to 256 x 256, ImageNet normalisation, argmax, nearest resize, PNG write);
  batch 1 for both. Adapter and baseline weights are random: timing does not depend on the values.

Each row runs in a fresh process, so "peak RSS" (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that
row's own peak (interpreter + libraries + model + work); on CUDA the peak allocated GPU memory is shown too.
One image (or click) per row is a warm-up and is not timed. Images: the first rows of
``<data>/test/csv_files/breast_lesion.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import breast_lesion_csv, cpu_model  # noqa: E402  (benchmarks/common.py)
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fmc_uia_dev"

#: row id -> (group, label)
ROWS = {
    "enc_lite_fp32": ("encoder", "litemedsam fp32 (eager)"),
    "enc_lite_bf16": ("encoder", "litemedsam bf16 (fast path)"),
    "enc_lite_onnx": ("encoder", "litemedsam ONNX Runtime fp32"),
    "enc_lite_ov_fp32": ("encoder", "litemedsam OpenVINO fp32"),
    "enc_lite_ov_bf16": ("encoder", "litemedsam OpenVINO bf16"),
    "enc_vitb_fp32": ("encoder", "sam_vit_b fp32 (random)"),
    "enc_vitb_bf16": ("encoder", "sam_vit_b bf16 (random)"),
    "click": ("click", "click -> mask (litemedsam)"),
    "predict_usam_fp32": ("predict", "usam predict torch fp32"),
    "predict_usam_bf16": ("predict", "usam predict torch bf16"),
    "predict_usam_auto": ("predict", "usam predict (defaults)"),
    "predict_base_fp32": ("predict", "FMC_UIA baseline fp32"),
    "predict_base_bf16": ("predict", "FMC_UIA baseline bf16"),
}


# ----------------------------------------------------------------------------------------------- helpers
def rows_of(data: Path, n: int) -> list[dict]:
    with open(breast_lesion_csv(data), newline="") as fh:
        return list(csv.DictReader(fh))[:n]


def warm_first(items: list) -> list:
    """``n + 1`` items -> the last one (warm-up, not timed) first, then the ``n`` timed ones in order."""
    return [items[-1], *items[:-1]]


def load_images(data: Path, n: int):
    from usam.io import read_image

    csv_dir = data / "test" / "csv_files"
    return [read_image(csv_dir / r["image_path"]) for r in rows_of(data, n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def autocast(device: str, precision: str):
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, items, device: str) -> list[float]:
    """Seconds per item, the first item a warm-up (not returned)."""
    out = []
    for i, item in enumerate(items):
        sync(device)
        t0 = time.perf_counter()
        fn(item)
        sync(device)
        if i:
            out.append(time.perf_counter() - t0)
    return out


def split_dir(data: Path, n: int, where: Path, offset: int = 0) -> Path:
    """A split folder with ``n`` breast_lesion test rows from row ``offset`` on (images linked, not copied)."""
    src = data / "test"
    (where / "csv_files").mkdir(parents=True, exist_ok=True)
    for sub in ("Classification", "Segmentation"):
        if not (where / sub).exists():
            os.symlink((src / sub).resolve(), where / sub)
    rows = rows_of(data, offset + n)[offset:]
    with open(where / "csv_files" / "breast_lesion.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return where


# ----------------------------------------------------------------------------------------------- rows
def row_encoder(args, backbone_name: str, precision: str) -> dict:
    import torch

    from usam import build_backbone

    if backbone_name == "litemedsam":
        return row_runtime(args, "torch", precision)
    images = warm_first(load_images(args.data, args.vit_images + 1))
    bb = build_backbone(backbone_name, pretrained=False)
    bb.to(args.device)
    xs = [bb.preprocess(im)[0].to(args.device) for im in images]

    def run(x):
        with torch.inference_mode(), autocast(args.device, precision):
            bb.encode(x)

    return {"times": timed(run, xs, args.device), "unit": "image"}


def row_runtime(args, runtime: str, precision: str) -> dict:
    """LiteMedSAM's encoder on one runtime x precision: time per image, then GT-box Dice of the same images."""
    import numpy as np
    import torch

    from usam import Predictor, UsamModel, build_backbone
    from usam.io import read_mask

    if runtime != "torch" and args.device.startswith("cuda"):
        return {"skipped": f"runtime {runtime} runs on the CPU"}
    model = UsamModel(build_backbone("litemedsam"), precision=precision, runtime=runtime)
    model.to(args.device)
    images = warm_first(load_images(args.data, args.images + 1))
    t0 = time.perf_counter()
    model.embed(images[0])  # builds (or loads from $USAM_CACHE) the compiled encoder
    build_s = time.perf_counter() - t0
    xs = [model.backbone.preprocess(im)[0] for im in images]
    def run(x):
        with torch.inference_mode():  # with gradients on, _encode runs eager torch whatever the runtime (training)
            return model._encode(x)

    times = timed(run, xs, args.device)
    csv_dir = args.data / "test" / "csv_files"
    dices = []
    predictor = Predictor(model)
    for im, r in zip(images[1:], rows_of(args.data, args.images)):
        gt = read_mask(csv_dir / r["mask_path"]) > 0
        ys, xs_ = np.nonzero(gt)
        predictor.set_image(im)
        m, _, _ = predictor.predict(box=np.array([xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1]), multimask_output=False)
        dices.append(float(2 * (m[0] & gt).sum() / (m[0].sum() + gt.sum())))
    note = f"build/load {build_s:.1f} s" if runtime != "torch" else ""
    return {"times": times, "unit": "image", "dice": float(np.mean(dices)), "note": note}


def row_click(args) -> dict:
    """Click -> mask at original resolution, every prompt-path variant side by side (``bench_click.py``)."""
    import bench_click

    if args.device.startswith("cuda"):
        return row_click_gpu(args)
    adapter = None if args.click_adapter == "none" else str(args.click_adapter)
    return bench_click.run(args.data, min(args.images, 4), args.clicks // 2, adapter, precision=args.precision)


def row_click_gpu(args) -> dict:
    """On a GPU: ``Predictor.predict`` (eager PyTorch, one click, multimask) on a cached embedding."""
    import numpy as np

    from usam import Predictor, UsamModel, build_backbone

    image, first, _ = __import__("bench_click").click_sets(args.data, 1)[0]
    predictor = Predictor(UsamModel(build_backbone("litemedsam").to(args.device), precision=args.precision))
    predictor.set_image(image)
    times = timed(lambda _: predictor.predict(point_coords=first, point_labels=np.array([1]), multimask_output=True),
                  range(args.clicks + 1), args.device)
    return {"times": times, "unit": "click", "note": f"{image.shape[1]}x{image.shape[0]} image, multimask, cached embedding"}


def _tiny_adapter(model, where: Path) -> Path:
    """An untrained breast_lesion adapter (automatic segmentation head + tuned prompt decoder)."""
    from usam.adapters.adapter import Adapter, AdapterConfig
    from usam.tasks.spec import TaskSpec
    bb = model.backbone
    cfg = AdapterConfig(name="bench", backbone=bb.name, backbone_checksum=bb.checksum,
                        tasks={"breast_lesion": TaskSpec(task_id="breast_lesion", kind="segmentation", num_classes=2)},
                        decoder={"lora": {"rank": 16, "alpha": 16}}, input_size=bb.input_size)
    Adapter(cfg, bb).save_pretrained(where)
    return where


def row_predict_usam(args, precision: str, runtime: str = "torch") -> dict:
    """``predict_split`` on the first ``--images`` breast rows: eager torch (round 1's path) or the defaults
    (``runtime auto``: the compiled encoder and prompt decoder where installed)."""
    from usam import UsamModel
    from usam.challenge.predict import predict_split

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        split = split_dir(args.data, args.images, tmp / "split")
        model = UsamModel.from_pretrained(precision=precision, device=args.device, runtime=runtime)
        model.load_adapter(str(_tiny_adapter(model, tmp / "adapter")))
        model.predict(load_images(args.data, args.images + 1)[-1])  # warm-up on an image outside the split
        model.cache.clear()
        sync(args.device)
        t0 = time.perf_counter()
        r = predict_split(split, tmp / "out", model, progress=False)
        sync(args.device)
        seconds = time.perf_counter() - t0
    n = r["images"]
    return {"times": [seconds / n] * n, "unit": "image",
            "note": f"{n} images in {seconds:.1f} s, runtime {model.runtime}, {model.precision}; auto-seg head + tuned decoder",
            "precision": model.precision}


def baseline_model(device: str = "cpu"):
    """The FMC_UIA baseline architecture (EfficientNet-B4 + FPN, random weights), or ``None`` without smp."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return None
    return smp.FPN(encoder_name="efficientnet-b4", encoder_weights=None, classes=2).eval().to(device)


def baseline_segment(net, image_path: Path, out_png: Path, device: str = "cpu", precision: str = "fp32") -> None:
    """The baseline's own inference on one image: resize to 256 x 256, ImageNet normalisation, argmax, nearest
    resize back, PNG write."""
    import cv2
    import numpy as np
    import torch

    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    x = torch.from_numpy((cv2.resize(image, (256, 256)).astype(np.float32) / 255.0 - mean) / std).permute(2, 0, 1)[None]
    with torch.inference_mode(), autocast(device, precision):
        logits = net(x.to(device))
    mask = logits[0].float().argmax(0).to(torch.uint8).cpu().numpy()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST))


def row_predict_baseline(args, precision: str) -> dict:
    net = baseline_model(args.device)
    if net is None:
        return {"skipped": "pip install segmentation-models-pytorch"}
    csv_dir = args.data / "test" / "csv_files"
    rows = warm_first(rows_of(args.data, args.images + 1))
    with tempfile.TemporaryDirectory() as tmp:
        def run(row):
            baseline_segment(net, csv_dir / row["image_path"], Path(tmp) / (Path(row["mask_path"]).stem + ".png"),
                             args.device, precision)

        times = timed(run, rows, args.device)
    return {"times": times, "unit": "image", "note": f"EfficientNet-B4 + FPN, {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M params, 256 px"}


def run_row(args, row: str) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if row == "enc_lite_fp32":
        r = row_encoder(args, "litemedsam", "fp32")
    elif row == "enc_lite_bf16":
        r = row_encoder(args, "litemedsam", "bf16")
    elif row == "enc_lite_onnx":
        r = row_runtime(args, "onnx", "fp32")
    elif row == "enc_lite_ov_fp32":
        r = row_runtime(args, "openvino", "fp32")
    elif row == "enc_lite_ov_bf16":
        r = row_runtime(args, "openvino", "bf16")
    elif row == "enc_vitb_fp32":
        r = row_encoder(args, "sam_vit_b", "fp32")
    elif row == "enc_vitb_bf16":
        r = row_encoder(args, "sam_vit_b", "bf16")
    elif row == "click":
        r = row_click(args)
    elif row == "predict_usam_fp32":
        r = row_predict_usam(args, "fp32")
    elif row == "predict_usam_bf16":
        r = row_predict_usam(args, "bf16")
    elif row == "predict_usam_auto":
        r = row_predict_usam(args, "auto", runtime="auto")
    elif row == "predict_base_fp32":
        r = row_predict_baseline(args, "fp32")
    elif row == "predict_base_bf16":
        r = row_predict_baseline(args, "bf16")
    else:
        raise SystemExit(f"unknown row {row!r}")
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if args.device.startswith("cuda"):
        r["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    r["threads"] = torch.get_num_threads()
    return r


# ----------------------------------------------------------------------------------------------- report
def _fmt_row(row: str, r: dict, ref: dict) -> str:
    group, label = ROWS[row]
    if "skipped" in r or "error" in r:
        return f"| {label:<30} | {'n/a':>9} | {'':>10} | {'':>16} | {'':>9} | {r.get('skipped') or r.get('error')}"
    t = sorted(r["times"])
    ms = statistics.mean(t) * 1000
    if r["unit"] == "click":
        p50 = statistics.median(t) * 1000
        p95 = t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))] * 1000
        rate, lat = f"{1000 / ms:>7.1f}/s", f"p50 {p50:5.1f} p95 {p95:5.1f}"
    else:
        rate, lat = f"{1000 / ms:>9.2f}", f"{ms:>10.0f}"
    rel = ""
    base = ref.get(group)
    if base is not None and base is not r and r["unit"] != "click":
        rel = f"{statistics.mean(base['times']) / statistics.mean(r['times']):.2f}x"
    mem = f"{r['peak_rss_mb']:>8.0f}" + (f" / GPU {r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "")
    note = r.get("note", "")
    if "dice" in r:
        base_dice = (ref.get("encoder") or {}).get("dice")
        note = f"Dice {r['dice']:.4f}" + (f" ({r['dice'] - base_dice:+.4f})" if base_dice is not None and base is not r else "") \
            + (f"; {note}" if note else "")
    if r["unit"] == "click":
        return f"| {label:<30} | {rate:>9} | {'':>10} | {lat:>16} | {mem:>9} | {note}"
    return f"| {label:<30} | {rate:>9} | {lat:>10} | {rel:>16} | {mem:>9} | {note}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="timed images per LiteMedSAM / predict row (default 8; +1 warm-up)")
    ap.add_argument("--vit-images", type=int, default=2, help="timed images for sam_vit_b (default 2; +1 warm-up)")
    ap.add_argument("--clicks", type=int, default=50, help="timed clicks per variant (default 50; +1 round warm-up)")
    ap.add_argument("--click-adapter", default=str(ROOT / "adapters" / "breast"),
                    help="adapter whose decoder answers the click rows (default adapters/breast; 'none': the bare backbone)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    ap.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"], help="encoder precision of the click row")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                    help=f"rows to run (default all): {' '.join(ROWS)}")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"FMC_UIA dev data (default {DEFAULT_DATA})")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON here")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: run one row in this process
    args = ap.parse_args(argv)
    if args.images < 1 or args.vit_images < 1 or args.clicks < 2:
        ap.error("--images and --vit-images must be >= 1, --clicks >= 2")
    breast_lesion_csv(args.data)  # exits with a message when the data is not there

    if args.row:  # child: one row, JSON on the last stdout line
        try:
            r = run_row(args, args.row)
        except Exception as exc:  # reported in the table, the other rows still run
            r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print(json.dumps(r))
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_speed: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 1
    from usam import build_backbone
    from usam.model import resolve_precision
    from usam.runtime import installed

    dev = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else cpu_model()
    print(f"torch {torch.__version__}, device {args.device} ({dev}), {os.cpu_count()} logical CPUs, "
          f"threads {args.threads or torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"precision auto -> {resolve_precision('auto', torch.device(args.device))} (eager), "
          f"{resolve_precision('auto', torch.device(args.device), 'openvino', build_backbone('litemedsam')) if args.device == 'cpu' and installed('openvino') else '-'} (openvino)")
    print(f"images: first {args.images} (+1 warm-up) rows of {args.data / 'test/csv_files/breast_lesion.csv'}; "
          f"sam_vit_b {args.vit_images} (+1); {args.clicks} clicks (+1)")
    results = {}
    passthrough = ["--images", str(args.images), "--vit-images", str(args.vit_images), "--clicks", str(args.clicks),
                   "--device", args.device, "--precision", args.precision, "--data", str(args.data),
                   "--click-adapter", str(args.click_adapter)]
    if args.threads:
        passthrough += ["--threads", str(args.threads)]
    for row in args.rows:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--row", row, *passthrough], capture_output=True, text=True)
        try:
            results[row] = json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            results[row] = {"error": f"exit {p.returncode}: {p.stderr.strip()[-300:]}"}
        print(f"  {row}: {time.perf_counter() - t0:.0f} s" + (f" ({results[row]['error']})" if "error" in results[row] else ""),
              file=sys.stderr, flush=True)

    ref = {"encoder": None, "predict": None}
    for row in ("enc_lite_fp32", "predict_base_fp32"):
        if row in results and "times" in results[row]:
            ref[ROWS[row][0]] = results[row]
    enc_vitb = results.get("enc_vitb_fp32")
    print()
    print(f"| {'':<30} | {'images/s':>9} | {'ms/image':>10} | {'vs fp32 / base':>16} | {'peak RSS MB':>9} | notes")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 12}|{'-' * 18}|{'-' * 11}|{'-' * 30}")
    last_group = None
    clicks: list[dict] = []
    for row in args.rows:
        group = ROWS[row][0]
        if last_group is not None and group != last_group:
            print(f"|{' ' * 32}|{' ' * 11}|{' ' * 12}|{' ' * 18}|{' ' * 11}|")
        last_group = group
        r = results[row]
        # sam_vit_b bf16 compares with sam_vit_b fp32, not with litemedsam
        rr = dict(ref)
        if row == "enc_vitb_bf16" and enc_vitb and "times" in enc_vitb:
            rr["encoder"] = enc_vitb
        elif row == "enc_vitb_fp32":
            rr["encoder"] = None
        if row == "click" and "variants" in r:
            clicks.append(r)
            print(f"| {ROWS[row][1]:<30} | {'':>9} | {'':>10} | {'see below':>16} | {r['peak_rss_mb']:>9.0f} |")
            continue
        if row == "click":
            print(f"| {'':<30} | {'clicks/s':>9} | {'':>10} | {'latency ms':>16} | {'':>9} |")
        print(_fmt_row(row, r, rr))
    print("\nvs fp32 / base: encoder rows vs litemedsam fp32 (sam_vit_b bf16 vs sam_vit_b fp32); "
          "predict rows vs the FMC_UIA baseline fp32 (speed-up, >1 = faster)")
    for r in clicks:
        print()
        print(__import__("bench_click").report(r))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
