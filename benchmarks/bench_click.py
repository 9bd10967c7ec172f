"""Click -> mask at original resolution on a cached LiteMedSAM embedding: the prompt path's variants side by side.

Used by ``bench_speed.py`` (row ``click``); runs alone too::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_click.py --threads 2 --clicks 40 --adapter adapters/breast

Variants, timed round-robin in one process (a busy machine slows them alike, so their ratios hold):

- ``before``: the prompt path as it was (``no_grad``, dense positional encoding recomputed per call, eager decoder,
  ``Geometry.masks_to_original``, threshold), re-implemented here from the same library pieces;
- ``torch``: ``Predictor(runtime="torch")`` (inference mode, cached dense PE);
- ``openvino`` / ``onnx``: ``Predictor(runtime=...)``, the compiled prompt decoder (:mod:`usam.runtime.decoder`);
- ``openvino-bf16`` (CPUs with native bf16): the same in bf16, as ``precision auto`` runs it there;
  by default only the first installed of the two (see :func:`default_variants`).

Each click set: one positive click at the lesion's centroid (multimask, as the first click in the demo), then a
corrective click pair with the previous best low-res logits as ``mask_input`` (single mask); each timed click
follows a short idle pause (:data:`PAUSE_S`), as clicks do. An adapter's ``first_click: box_refine`` is set to
``direct`` for these (they compare decoder paths) and timed on its own on the last variant; its ``click_zoom`` is set
aside there too and timed on its own on the last variant: the corrective pair without and with the zoomed view, the
first zoomed click on each image (it encodes the view) apart from later ones (the view cached). Its ``click_merge``
(never reached by a 2-click pair) is timed on its own the same way: the pair taken whole and merged. Reported per variant:
p50 / p95 ms, and against ``before`` the smallest mask IoU and the largest score difference. ``stages`` splits the
``before`` path: prompt encoder, dense PE, mask decoder, upsampling to the original size, threshold + copy out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usam import Predictor, UsamModel, build_backbone
from usam.backbones.sam_style import run_mask_decoder
from usam.io import read_image, read_mask
from usam.predictor import check_points
from usam.runtime import installed

VARIANTS = ("before", "torch", "onnx", "openvino", "openvino-bf16")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fmc_uia_dev"
#: Idle time before each timed click, as between a user's clicks: the previous variant's worker threads (OpenMP,
#: TBB) stop spinning, otherwise on 2 busy cores they steal the next variant's time (measured: OpenVINO 415 ms
#: alone, 2870 ms right after an eager PyTorch call).
PAUSE_S = 0.1


def click_sets(data: Path, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` (image, first click (1, 2), corrective pair (2, 2)) from the first breast_lesion test rows."""
    csv_dir = Path(data) / "test" / "csv_files"
    if not (csv_dir / "breast_lesion.csv").is_file():
        raise SystemExit(f"benchmark data: {csv_dir / 'breast_lesion.csv'} not found; give the FMC_UIA root that holds "
                         "test/csv_files/breast_lesion.csv with --data DIR (default ../shared/data/fmc_uia_dev)")
    out = []
    with open(csv_dir / "breast_lesion.csv", newline="") as fh:
        for row in list(csv.DictReader(fh))[:n]:
            gt = read_mask(csv_dir / row["mask_path"]) > 0
            ys, xs = np.nonzero(gt)
            first = np.array([[xs.mean(), ys.mean()]])
            far = np.array([[min(xs.max() + 10, gt.shape[1] - 1), ys.mean()]])  # a negative click beside the lesion
            out.append((read_image(csv_dir / row["image_path"]), first, np.concatenate([first, far])))
    return out


def before(predictor: Predictor, coords, labels, mask_input, multimask: bool, stages: dict | None = None):
    """The prompt path before issue #16's work (no_grad, dense PE per call, eager decoder): ``predict``'s outputs."""
    emb, model = predictor._embedded, predictor.model
    geo = emb.geometry
    dec = model.prompt_decoder()
    # the weights that answer clicks: an adapter's click decoder if it has one, else its (or the backbone's) decoder
    prompt_encoder, mask_decoder = dec.answering(points=True) if hasattr(dec, "answering") else (dec.prompt_encoder, dec.mask_decoder)
    t = [time.perf_counter()]
    with torch.no_grad():
        c, lab = check_points(coords, labels, geo.original_hw)
        pts = (torch.as_tensor(geo.points_to_input(c), dtype=torch.float32)[None], torch.as_tensor(lab)[None])
        m = None if mask_input is None else torch.tensor(mask_input[None], dtype=torch.float32)
        sparse, dense = prompt_encoder(points=pts, boxes=None, masks=m)
        t.append(time.perf_counter())
        pe = prompt_encoder.get_dense_pe()
        t.append(time.perf_counter())
        low, iou = run_mask_decoder(mask_decoder, emb.embedding, pe, sparse, dense, multimask)
        t.append(time.perf_counter())
        masks = geo.masks_to_original(low.float())
        t.append(time.perf_counter())
        out = (masks > predictor.mask_threshold).cpu().numpy()[0], iou.float().cpu().numpy()[0], low.float().cpu().numpy()[0]
        t.append(time.perf_counter())
    if stages is not None:
        for name, a, b in zip(("prompt encoder", "dense PE", "mask decoder", "upsample to original", "threshold + copy"),
                              t, t[1:]):
            stages.setdefault(name, []).append(b - a)
    return out


def _call(variant: str, predictors: dict, coords, labels, mask_input, multimask: bool, stages: dict):
    if variant == "before":
        return before(predictors["torch"], coords, labels, mask_input, multimask, stages)
    predictor = predictors[variant]
    saved = predictor.model.precision
    if variant.endswith("-bf16"):  # the decoder of precision auto on a native-bf16 CPU (the embedding stays fp32)
        predictor.model.precision = "bf16"
    try:
        return predictor.predict(point_coords=coords, point_labels=labels, mask_input=mask_input,
                                 multimask_output=multimask)
    finally:
        predictor.model.precision = saved


def _timed(variant: str, predictors: dict, *args) -> tuple:
    """One :func:`_call` after the idle pause :data:`PAUSE_S`, as a user's click comes: ``(its answer, seconds)``."""
    time.sleep(PAUSE_S)
    t0 = time.perf_counter()
    out = _call(variant, predictors, *args)
    return out, time.perf_counter() - t0


def _fast(variants: list[str]) -> str:
    """The variant an adapter's own settings are timed on: the last compiled / torch one."""
    return [v for v in variants if v != "before"][-1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def default_variants() -> list[str]:
    """``before``, ``torch`` and one compiled runtime (OpenVINO, else ONNX Runtime): the two in one process contend
    (their spinning thread pools on 2 cores: OpenVINO 165 -> 2080 ms); ask for ``onnx`` alone to time it."""
    from usam.model import float_precision

    compiled = "openvino" if installed("openvino") else "onnx"
    if installed("openvino") and float_precision(torch.device("cpu"), "openvino", build_backbone("litemedsam")) == "bf16":
        compiled = "openvino-bf16"  # what precision auto runs here (with openvino fp32 too, their pools contend)
    return ["before", "torch", compiled]


def run(data: Path, images: int, clicks: int, adapter: str | None, precision: str = "fp32",
        variants: list[str] | None = None) -> dict:
    """Per variant: ``times`` (s per click), ``min_iou`` / ``max_score_diff`` vs ``before``; plus ``stages``."""
    model = UsamModel(build_backbone("litemedsam"), precision=precision)
    if adapter:
        model.load_adapter(adapter)
    variants = [v for v in variants or default_variants() if v in ("before", "torch") or installed(v.split("-")[0])]
    predictors = {v: Predictor(model, runtime=v.split("-")[0]) for v in variants if v != "before"}
    predictors.setdefault("torch", Predictor(model, runtime="torch"))  # "before", the reference, runs on it
    sets = click_sets(data, images)
    decoder = model.prompt_decoder()
    refine = getattr(decoder, "first_click", "direct") == "box_refine"
    # the decoder paths are compared as they were (first click direct, no zoomed view: a zoomed click whose view moves
    # adds an encoder pass); the box refinement is timed on its own below
    aside = {k: v for k, v in (("first_click", "direct"), ("click_zoom", None)) if getattr(decoder, k, v) != v}
    with decoder.using(**aside) if aside else contextlib.nullcontext():
        res, stages = _compare(predictors, variants, sets, clicks)
    first = {}
    if refine:  # the adapter's first_click: box_refine on the last compiled / torch variant, direct and refined in turn
        fast = _fast(variants)
        first = {"variant": fast, "direct": [], "box_refine": []}
        for i in range(clicks + 1):
            image, click, _ = sets[i % len(sets)]
            predictors[fast].set_image(image)
            for setting in ("direct", "box_refine"):
                with decoder.using(first_click=setting):
                    _, dt = _timed(fast, predictors, click, np.array([1]), None, True, {})
                    if i:
                        first[setting].append(dt)
    return {"unit": "click", "variants": res, "stages": stages, "images": len(sets), "threads": torch.get_num_threads(),
            "adapter": adapter or "none (bare backbone)", "first_click": first,
            "click_zoom": _time_zoom(decoder, predictors, variants, sets, clicks),
            "click_merge": _time_merge(decoder, predictors, variants, sets, clicks)}


def _time_merge(decoder, predictors: dict, variants: list[str], sets: list, clicks: int) -> dict:
    """The adapter's ``click_merge`` on the last compiled / torch variant: the corrective pair (2 clicks, the first
    click's best mask fed back, on the whole image) taken whole (``off``) and merged (``on``; merged from the second
    click on, whatever the adapter's N: a merge costs the same at any click); ``{}`` without a merge."""
    merge = getattr(decoder, "click_merge", None)
    if merge is None:
        return {}
    fast = _fast(variants)
    out = {"variant": fast, "setting": merge, "off": [], "on": []}
    with decoder.using(click_zoom=None, first_click="direct"):
        for i in range(clicks + 1):
            image, click, pair = sets[i % len(sets)]
            predictors[fast].set_image(image)
            prev = _call(fast, predictors, click, np.array([1]), None, True, {})
            mask_input = prev[2][int(np.argmax(prev[1]))][None]
            for key, setting in (("off", None), ("on", 1)):
                with decoder.using(click_merge=setting):
                    _, dt = _timed(fast, predictors, pair, np.array([1, 0]), mask_input, False, {})
                    if i:
                        out[key].append(dt)
    return out


def _time_zoom(decoder, predictors: dict, variants: list[str], sets: list, clicks: int) -> dict:
    """The adapter's ``click_zoom`` on the last compiled / torch variant, with the encoder as the product runs it
    (``precision auto``, runtime ``$USAM_RUNTIME`` or auto: the zoomed view is a new image to encode): the corrective
    pair (2 clicks, the first click's best mask fed back) answered without the zoom (``off``) and with it, the first
    zoomed call on each image (``view``: it encodes the zoomed view) apart from the later ones (``on``: the view
    cached); ``{}`` without a zoom, or one that starts after more clicks than the pair has."""
    zoom = getattr(decoder, "click_zoom", None)
    if zoom is None or zoom[0] >= 2:
        return {}
    fast = _fast(variants)
    model = predictors[fast].model
    saved = model.requested_precision, model.runtime
    model.requested_precision = "auto"
    model.set_runtime(None)
    out = {"variant": fast, "setting": zoom, "off": [], "on": [], "view": [],
           "encoder": f"{model.runtime} {model.encoder_precision()}"}
    try:
        for i in range(clicks + 1):
            image, click, pair = sets[i % len(sets)]
            predictors[fast].set_image(image)
            with decoder.using(click_zoom=None):
                prev = _call(fast, predictors, click, np.array([1]), None, True, {})
            mask_input = prev[2][int(np.argmax(prev[1]))][None]
            for setting in (None, zoom):
                with decoder.using(click_zoom=setting):
                    _, dt = _timed(fast, predictors, pair, np.array([1, 0]), mask_input, False, {})
                key = "off" if setting is None else "view" if i < len(sets) else "on"
                if i or key == "view":  # round 0 warms the decoder up; its view encode is what "view" times
                    out[key].append(dt)
    finally:
        model.requested_precision = saved[0]
        model.set_runtime(saved[1])
    return out


def _compare(predictors: dict, variants: list[str], sets: list, clicks: int) -> tuple[dict, dict]:
    """Each variant's click latencies and its agreement with ``before``, one click pair per round; the first round
    is a warm-up (compiles the decoders)."""
    res = {v: {"times": [], "min_iou": 1.0, "max_score_diff": 0.0} for v in variants}
    stages: dict[str, list[float]] = {}
    for i in range(clicks + 1):
        image, first, pair = sets[i % len(sets)]
        for p in predictors.values():
            p.set_image(image)  # cached after the first round
        prev = _call("before", predictors, first, np.array([1]), None, True, {})
        prompt = (pair, np.array([1, 0]), prev[2][int(np.argmax(prev[1]))][None])
        for multimask, (coords, labels, mask_input) in ((True, (first, np.array([1]), None)), (False, prompt)):
            ref = _call("before", predictors, coords, labels, mask_input, multimask, {})
            for v in variants:
                out, dt = _timed(v, predictors, coords, labels, mask_input, multimask,
                                 stages if i and v == "before" else {})
                r = res[v]
                if i:
                    r["times"].append(dt)
                r["min_iou"] = min(r["min_iou"], min(_iou(a, b) for a, b in zip(out[0], ref[0])))
                r["max_score_diff"] = max(r["max_score_diff"], float(np.abs(out[1] - ref[1]).max()))
    return res, stages


def pct(times: list[float], q: float) -> float:
    t = sorted(times)
    return t[min(len(t) - 1, round(q * (len(t) - 1)))] * 1000


def report(r: dict) -> str:
    base = statistics.median(r["variants"]["before"]["times"])
    n = len(r["variants"]["before"]["times"])
    lines = [(f"click -> mask, {r['images']} images, adapter {r['adapter']}, threads {r['threads']} "
              f"(n = {n} clicks per variant, half multimask, half single + mask_input)"),
             f"| {'variant':<13} | {'p50 ms':>8} | {'p95 ms':>8} | {'vs before':>9} | {'min IoU':>8} | {'max |dscore|':>12} |"]
    for v, x in r["variants"].items():
        lines.append(f"| {v:<13} | {pct(x['times'], 0.5):8.1f} | {pct(x['times'], 0.95):8.1f} | "
                     f"{base / statistics.median(x['times']):8.2f}x | {x['min_iou']:8.4f} | {x['max_score_diff']:12.2e} |")
    lines.append("before, by stage: " + ", ".join(f"{k} {pct(v, 0.5):.1f}" for k, v in r["stages"].items()) + " (p50 ms)")
    f = r.get("first_click")
    if f:
        lines.append(f"first click (multimask) on {f['variant']}: direct p50 {pct(f['direct'], 0.5):.1f} ms, "
                     f"first_click box_refine (the adapter's setting; 3 more box decodes) p50 "
                     f"{pct(f['box_refine'], 0.5):.1f} / p95 {pct(f['box_refine'], 0.95):.1f} ms")
    z = r.get("click_zoom")
    if z and z["on"]:
        lines.append(f"corrective pair on {z['variant']}: no zoom p50 {pct(z['off'], 0.5):.1f} ms; the adapter's "
                     f"click_zoom (after {z['setting'][0]}, x{z['setting'][1]:g}), view cached p50 {pct(z['on'], 0.5):.1f}"
                     f" / p95 {pct(z['on'], 0.95):.1f} ms; the first zoomed click on an image (encodes its view) "
                     f"p50 {pct(z['view'], 0.5):.1f} ms (n = {len(z['view'])}, encoder {z['encoder']})")
    m = r.get("click_merge")
    if m and m["on"]:
        lines.append(f"corrective pair on {m['variant']}: taken whole p50 {pct(m['off'], 0.5):.1f} ms; merged (the "
                     f"adapter's click_merge, from click {m['setting'] + 1} on) p50 {pct(m['on'], 0.5):.1f} / p95 "
                     f"{pct(m['on'], 0.95):.1f} ms")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=4, help="images the clicks cycle over (default 4)")
    ap.add_argument("--clicks", type=int, default=20, help="timed rounds (2 clicks each) per variant (default 20; +1 warm-up)")
    ap.add_argument("--adapter", default=None, help="adapter dir (default: the bare backbone)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                    help="default: before torch + openvino (else onnx); see default_variants")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(report(run(args.data, args.images, args.clicks, args.adapter, variants=args.variants)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
