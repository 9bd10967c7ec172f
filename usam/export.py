"""ONNX export of a backbone (+ adapter): the image encoder and the prompt decoder, for ONNX Runtime.

``usam export onnx --adapter NAME_OR_DIR OUT_DIR`` writes::

    encoder.onnx     image (1, 3, S, S) float32, preprocessed  ->  image_embeddings (1, 256, 64, 64)
    decoder.onnx     image_embeddings, point_coords (1, N, 2), point_labels (1, N), mask_input (1, 1, 256, 256),
                     has_mask_input (1,)  ->  masks (1, 4, 256, 256) low-res logits, iou_predictions (1, 4)
    usam_onnx.json   inputs / outputs, preprocessing, prompt conventions, backbone and adapter, file SHA-256s

The adapter's encoder LoRA is merged into a copy of the encoder (``W + scale * B @ A``, via peft's
``merge``) so the ONNX graph is a plain encoder; an adapter without encoder LoRA exports the bare encoder.
The decoder is the adapter's tuned prompt decoder (its LoRA merged the same way), else the backbone's.
``--adapter none`` exports the bare backbone.

Prompts follow segment-anything's ONNX export: coordinates are (x, y) in model-input pixels (original
pixels times ``resized / original`` per axis); labels 1 positive click, 0 negative click, 2 / 3 the top-left /
bottom-right corners of a box, -1 padding. Without a box, append one padding point ``(0, 0)`` with label -1
(as the PyTorch path does). ``masks[:, 0]`` is the single-mask output (``multimask_output=False``, the one for
boxes and several clicks), ``masks[:, 1:]`` the three candidates of ``multimask_output=True`` (one click).

The encoder is exported with the TorchScript-based exporter (``dynamo=False``): TinyViT's Python-side
shapes do not trace with the dynamo exporter, and batch size is fixed at 1 (TinyViT reads ``len(x)``).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import torch

from .adapters.lora import merged_copy
from .adapters.resolve import resolve_adapter
from .adapters.validate import read_config
from .backbones import DEFAULT_BACKBONE, LOW_RES
from .backbones.base import sha256_file
from .errors import AdapterError, ConfigError, OutputError, UsamError
from .io import dumps_json, write_problem
from .model import UsamModel
from .runtime.decoder import PromptGraph
from .runtime.onnx import OPSET, export_onnx_file
from .version import __version__

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
META_FILE = "usam_onnx.json"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")


# --------------------------------------------------------------------------------------------- decoder
# --------------------------------------------------------------------------------------------- helpers
def _io(name: str, shape: list, dtype: str = "float32", doc: str = "") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype, "doc": doc}


def preprocessing_spec(backbone) -> dict:
    """How to turn an image into the encoder input, per backbone (mirrors ``backbone.preprocess``)."""
    s = int(backbone.input_size)
    common = {
        "input": "RGB uint8 (H, W, 3); grey images repeated to 3 channels, alpha dropped (usam.io.to_rgb_uint8)",
        "input_size": s,
        "geometry": {"scale": f"{s} / max(H, W)", "resized_hw": "(int(H * scale + 0.5), int(W * scale + 0.5))"},
        "pad": f"zeros at the bottom / right to {s} x {s}",
        "layout": f"NCHW float32, shape (1, 3, {s}, {s})",
    }
    name = backbone.name
    if name == "litemedsam":
        return {**common, "resize": "longest side to input_size, cv2.INTER_AREA",
                "normalize": "min-max over the resized image (all channels): (x - min) / max(max - min, 1e-8)"}
    mean, std = getattr(backbone, "pixel_mean", None), getattr(backbone, "pixel_std", None)
    return {**common, "resize": "longest side to input_size, segment_anything ResizeLongestSide (PIL bilinear)",
            "normalize": f"(x - mean) / std per channel, mean {list(mean or ())}, std {list(std or ())}"}


def _prompt_spec(input_size: int) -> dict:
    return {
        "coordinates": "(x, y) in model-input pixels: x * resized_w / W, y * resized_h / H (original pixels in)",
        "point_labels": {"-1": "padding point (0, 0): append one when there is no box", "0": "negative click",
                         "1": "positive click", "2": "box top-left corner (x0, y0)", "3": "box bottom-right corner (x1, y1)"},
        "order": "clicks first, then the two box corners (labels 2, 3)",
        "mask_input": "low-res logits of a previous call (masks[:, k:k+1]) with has_mask_input = [1]; zeros and [0] otherwise",
        "masks": "index 0: single-mask output (multimask_output=False; boxes, several clicks); 1..3: the three "
                 "candidates of multimask_output=True (one click: pick the highest iou_predictions)",
        "postprocess": f"bilinear (align_corners=False) upsample {LOW_RES} -> {input_size}, crop [:resized_h, :resized_w], "
                       "bilinear resize to (H, W), mask = logits > 0",
    }


def _model_fingerprint(model, name: str | None) -> dict | None:
    if name is None:
        return None
    a = model.adapters[name]
    return {
        "name": name,
        "weights_sha256": a.weights_sha256(model.backbone.image_encoder),
        "encoder_lora": a.config.lora.to_dict() if a.config.lora else None,
        "encoder_lora_merged": bool(a.lora_name),
        "decoder": "tuned (adapter)" if a.decoder is not None else "backbone",
        "decoder_lora_merged": bool(a.decoder is not None and a.decoder.lora is not None),
        "tasks": {tid: {"kind": t.kind, "num_classes": t.num_classes, "class_names": t.class_names} for tid, t in a.tasks.items()},
        "heads": "not exported (the heads run in PyTorch: usam predict)",
    }


def decoder_inputs(points: np.ndarray, labels: np.ndarray, box: np.ndarray | None = None,
                   mask_input: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``decoder.onnx`` feeds from clicks / a box in model-input pixels (segment-anything's conventions)."""
    pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
    lab = np.zeros((0,), np.float32) if labels is None else np.asarray(labels, np.float32).reshape(-1)
    if box is not None:
        pts = np.concatenate([pts, np.asarray(box, np.float32).reshape(2, 2)])
        lab = np.concatenate([lab, np.array([2, 3], np.float32)])
    else:
        pts = np.concatenate([pts, np.zeros((1, 2), np.float32)])
        lab = np.concatenate([lab, np.array([-1], np.float32)])
    has = mask_input is not None
    m = np.asarray(mask_input, np.float32).reshape(1, 1, LOW_RES, LOW_RES) if has else np.zeros((1, 1, LOW_RES, LOW_RES), np.float32)
    return {"point_coords": pts[None], "point_labels": lab[None], "mask_input": m,
            "has_mask_input": np.array([1.0 if has else 0.0], np.float32)}


# --------------------------------------------------------------------------------------------- export
def export_model(model, out_dir: str | os.PathLike, adapter: str | None = None, opset: int = OPSET,
                 verify: bool = True, source: str | None = None, log=None) -> dict:
    """Export ``model``'s encoder (+ adapter ``adapter``'s encoder LoRA, merged) and prompt decoder to ONNX.

    Args:
      model: a :class:`~usam.model.UsamModel` on a segment-anything style backbone (litemedsam, sam_vit_*).
      out_dir: output folder (created); the three files are replaced atomically one by one.
      adapter: name of a loaded adapter, or ``None`` for the bare backbone.
      opset: ONNX opset (>= 17).
      verify: run both models in onnxruntime (when installed) on a synthetic image and record the max abs
        difference to PyTorch in the JSON.
      source: where the adapter came from (recorded in the JSON).

    Returns:
      The JSON metadata that was written to ``out_dir/usam_onnx.json``.
    """
    log = log or (lambda _m: None)
    out = _check_request(model, out_dir, adapter, opset)
    a = model.adapters[adapter] if adapter is not None else None
    t0 = time.perf_counter()
    _export_encoder(model.backbone, a, out / ENCODER_FILE, opset)
    log(f"usam export: {ENCODER_FILE} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    _export_decoder(model.backbone, a, out / DECODER_FILE, opset)
    log(f"usam export: {DECODER_FILE} in {time.perf_counter() - t0:.1f} s")
    meta = _metadata(model, adapter, source, opset)
    if verify:
        meta["verification"] = _verify(model, adapter, out)
    meta["files"] = {f: sha256_file(out / f) for f in (ENCODER_FILE, DECODER_FILE)}
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(dumps_json(meta, indent=2) + "\n")  # valid JSON: a NaN verification error becomes null
    os.replace(tmp, out / META_FILE)
    return meta


def _check_request(model, out_dir, adapter: str | None, opset: int) -> Path:
    """Refuse what cannot be exported before any work; returns the (created) output folder."""
    backbone = model.backbone
    if not hasattr(backbone, "prompt_encoder") or not hasattr(backbone, "mask_decoder") or hasattr(backbone, "model"):
        raise UsamError(f"ONNX export supports segment-anything style backbones (litemedsam, sam_vit_*), not {backbone.name!r}")
    check_opset(opset)
    if adapter is not None and adapter not in model.adapters:
        raise AdapterError(f"no adapter named {adapter!r} is loaded (loaded: {sorted(model.adapters) or 'none'})")
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_opset(opset: int) -> None:
    if int(opset) < 17:
        raise ConfigError(f"opset must be >= 17 (segment-anything's decoder needs it), got {opset}")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a folder the export may write: new, empty, or an earlier export (only its own files, replaced);
    never a file or another folder's content, and a file can be created there. Creates nothing. Raises OutputError."""
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"output {str(out)!r} exists and is not a folder: give a new folder")
    if out.is_dir():
        own = (ENCODER_FILE, DECODER_FILE, META_FILE, f".{META_FILE}.tmp")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in own)
        if foreign:
            raise OutputError(f"output {str(out)!r} holds files usam export did not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}): give a new or empty folder (an earlier "
                              "export there is replaced)")
    problem = write_problem(out)
    if problem:
        raise OutputError(f"output {str(out)!r} cannot be written: {problem}")
    return out


def _export_encoder(backbone, adapter, path: Path, opset: int) -> None:
    """``image (1, 3, S, S) -> image_embeddings (1, C, h, w)``, the adapter's encoder LoRA merged."""
    encoder = merged_copy(backbone.image_encoder, [adapter.lora_name] if adapter is not None and adapter.lora_name else [])
    s = int(backbone.input_size)
    export_onnx_file(encoder.cpu().float(), (torch.zeros(1, 3, s, s),), path, ["image"], ["image_embeddings"], None, opset)


def _export_decoder(backbone, adapter, path: Path, opset: int) -> None:
    """:class:`~usam.runtime.decoder.PromptGraph` of the decoder that answers the adapter's clicks (its click decoder,
    else its tuned decoder, LoRA merged), else of the backbone's."""
    if adapter is not None and adapter.decoder is not None:
        pe, md = adapter.decoder.answering(points=True)
        md = merged_copy(md)
    else:
        pe, md = backbone.prompt_encoder, merged_copy(backbone.mask_decoder)
    s = int(backbone.input_size)
    decoder = PromptGraph(copy.deepcopy(pe), md, s).cpu().float().eval()
    feeds = decoder_inputs(np.array([[s / 2, s / 2]]), np.array([1]))
    args = (torch.zeros(1, *backbone.embedding_shape), *(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS[1:]))
    export_onnx_file(decoder, args, path, DECODER_INPUTS, ["masks", "iou_predictions"],
                     {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}, opset)


def _metadata(model, adapter: str | None, source: str | None, opset: int) -> dict:
    """``usam_onnx.json`` without the verification and file hashes."""
    backbone = model.backbone
    a = model.adapters[adapter] if adapter is not None else None
    s = int(backbone.input_size)
    c, h, w = backbone.embedding_shape
    return {
        "format": "usam-onnx",
        "format_version": 1,
        "usam_version": __version__,
        "torch_version": torch.__version__,
        "opset": int(opset),
        "precision": "fp32",
        "backbone": {"name": backbone.name, "checksum": backbone.checksum, "source": backbone.source,
                     "input_size": s, "embedding_shape": [c, h, w]},
        "adapter": _model_fingerprint(model, adapter),
        "adapter_source": source,
        # "base": in PyTorch, box-only prompts go to the backbone's own decoder; decoder.onnx is the tuned one
        "box_prompts": getattr(a.decoder, "box_prompts", None) if a is not None and a.decoder is not None else None,
        "preprocessing": preprocessing_spec(backbone),
        "encoder": {
            "file": ENCODER_FILE,
            "inputs": [_io("image", [1, 3, s, s], doc="preprocessed image (see preprocessing); batch size 1")],
            "outputs": [_io("image_embeddings", [1, c, h, w])],
        },
        "decoder": _decoder_spec(s, [1, c, h, w]),
    }


def _decoder_spec(input_size: int, embedding: list) -> dict:
    return {
        "file": DECODER_FILE,
        "inputs": [
            _io("image_embeddings", embedding, doc="encoder output"),
            _io("point_coords", [1, "num_points", 2], doc="(x, y) model-input pixels; box = 2 corner points"),
            _io("point_labels", [1, "num_points"], doc="-1 pad, 0 negative, 1 positive, 2 box top-left, 3 box bottom-right"),
            _io("mask_input", [1, 1, LOW_RES, LOW_RES], doc="previous low-res logits, or zeros"),
            _io("has_mask_input", [1], doc="1 when mask_input is given, else 0"),
        ],
        "outputs": [_io("masks", [1, 4, LOW_RES, LOW_RES], doc="low-res logits: [0] single mask, [1:] multimask"),
                    _io("iou_predictions", [1, 4], doc="predicted IoU of each mask")],
        "prompts": _prompt_spec(input_size),
    }


@torch.no_grad()
def _verify(model, adapter: str | None, out: Path) -> dict:
    """onnxruntime vs PyTorch (fp32) on a synthetic image, a click and a box; ``{}`` without onnxruntime."""
    try:
        import onnxruntime as ort  # optional package, imported only to verify
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install onnxruntime)"}
    s = int(model.backbone.input_size)
    yy, xx = np.mgrid[0:300, 0:400]
    image = np.stack([(xx + yy) % 256, (2 * xx) % 256, np.abs(yy - 150) % 256], -1).astype(np.uint8)
    active, precision = model.active_adapter, model.precision
    try:
        model.set_adapter(adapter)
        model.precision = "fp32"
        x, geo = model.backbone.preprocess(image)
        emb = model.backbone.encode(x.to(model.device)).float().cpu()
        enc = ort.InferenceSession(str(out / ENCODER_FILE), providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(out / DECODER_FILE), providers=["CPUExecutionProvider"])
        onnx_emb = enc.run(None, {"image": x.numpy()})[0]
        res = {"embedding_max_abs_diff": float(np.abs(onnx_emb - emb.numpy()).max())}
        box = np.array([[s * 0.2, s * 0.2, s * 0.6, s * 0.5]], np.float32)
        click = np.array([[s * 0.4, s * 0.35]], np.float32)
        dev = model.device
        tl, _ = model.decode(emb.to(dev), boxes=torch.from_numpy(box).to(dev), multimask_output=False)
        ol = dec.run(None, {"image_embeddings": emb.numpy(), **decoder_inputs(None, None, box=box)})[0][:, :1]
        tc, _ = model.decode(emb.to(dev), points=(torch.from_numpy(click[None]).to(dev), torch.ones(1, 1, device=dev)))
        oc = dec.run(None, {"image_embeddings": emb.numpy(), **decoder_inputs(click, [1])})[0][:, 1:]
        res["box_logits_max_abs_diff"] = float(np.abs(ol - tl.float().cpu().numpy()).max())
        res["click_logits_max_abs_diff"] = float(np.abs(oc - tc.float().cpu().numpy()).max())
        res["box_mask_agreement"] = float(((ol > 0) == (tl.cpu().numpy() > 0)).mean())
        return res
    finally:
        model.precision = precision
        model.set_adapter(active)


def _cpu_model(adapter: str | None, backbone: str | None, checkpoint: str | None) -> tuple[UsamModel, str | None]:
    """The model (CPU, fp32) with ``adapter`` (directory or Hub id; ``None`` / ``"none"``: bare backbone) active;
    ``backbone`` defaults to the adapter's, else the default backbone."""
    if adapter is not None and str(adapter).lower() in ("", "none"):
        adapter = None
    if backbone is None:
        backbone = read_config(resolve_adapter(adapter)).backbone if adapter else DEFAULT_BACKBONE
    model = UsamModel.from_pretrained(backbone=backbone, checkpoint=checkpoint, precision="fp32", device="cpu", cache_size=0)
    name = model.load_adapter(adapter) if adapter else None
    model.set_adapter(name)
    return model, name


def export_onnx(out_dir: str | os.PathLike, adapter: str | None = None, backbone: str | None = None,
                checkpoint: str | None = None, opset: int = OPSET, verify: bool = True, log=None) -> dict:
    """Build the model (:func:`_cpu_model`) and export it with :func:`export_model`; the output folder and opset
    are checked first."""
    check_opset(opset)
    check_out_dir(out_dir)
    model, name = _cpu_model(adapter, backbone, checkpoint)
    return export_model(model, out_dir, adapter=name, opset=opset, verify=verify, source=adapter, log=log)


def export_int8(data: str | os.PathLike, adapter: str | None = None, backbone: str | None = None,
                checkpoint: str | None = None, tasks: list[str] | None = None, calibration: int = 64, check: int = 20,
                log=print) -> dict:
    """Quantise the encoder of ``adapter`` (LoRA merged; bare backbone by default) to int8 into the runtime cache
    (:func:`usam.runtime.quantize.quantize_encoder`): calibrated on ``calibration`` training images of ``data`` (an
    FMC_UIA root, a split folder or an images/ + masks/ folder; evenly spread over its images), checked on the GT
    boxes of ``check`` validation images of its segmentation tasks (never calibration images). Returns the record."""
    from .io import read_image, read_mask
    from .runtime.quantize import quantize_encoder
    from .train.rows import read_rows

    if calibration < 1 or check < 0:
        raise UsamError(f"--calibration must be >= 1 and --check >= 0 (got {calibration}, {check})")
    train, val = read_rows(data, tasks)
    images = sorted({str(s.image_path) for rows in train.values() for s in rows})
    picked = [images[i] for i in np.linspace(0, len(images) - 1, min(calibration, len(images))).round().astype(int)]
    cases = []
    for s in (s for rows in val.values() for s in rows if s.kind == "segmentation"):
        if len(cases) == check:
            break
        if str(s.image_path) in picked:
            continue
        labels = read_mask(s.mask_path)
        present, counts = np.unique(labels[labels > 0], return_counts=True)
        if len(present):  # the largest object of the image
            cases.append((read_image(s.image_path), labels == present[counts.argmax()]))
    model, _ = _cpu_model(adapter, backbone, checkpoint)
    return quantize_encoder(model, picked, lambda m: check_int8(m, cases), log=log)


def check_int8(model, cases: list) -> dict:
    """Mean GT-box Dice of eager fp32 and of the int8 encoder (both with the active adapter's decoder) on ``cases``."""
    from .ops.masks import dice, mask_box
    from .predictor import Predictor

    dices = {}
    for precision, runtime in (("fp32", "torch"), ("int8", "openvino")):
        m = UsamModel(model.backbone, cache_size=1, precision=precision, runtime=runtime)
        m.adapters, m.active_adapter = model.adapters, model.active_adapter  # the same adapter objects, not copies
        predictor = Predictor(m)
        out = []
        for image, truth in cases:
            predictor.set_image(image)
            masks, _, _ = predictor.predict(box=mask_box(truth).astype(float), multimask_output=False)
            out.append(dice(masks[0], truth))
        dices[precision] = float(np.mean(out)) if out else float("nan")
    return {"n": len(cases), "dice_fp32": dices["fp32"], "dice_int8": dices["int8"],
            "dice_drop": dices["fp32"] - dices["int8"]}
