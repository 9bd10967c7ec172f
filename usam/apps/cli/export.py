"""``usam export onnx --adapter NAME_OR_DIR OUT_DIR``: the encoder (LoRA merged) and the prompt decoder as ONNX."""

from __future__ import annotations

import json

from ...export import export_onnx
from .common import log


def cmd_export_onnx(args) -> int:
    meta = export_onnx(args.out_dir, adapter=args.adapter, backbone=args.backbone, checkpoint=args.checkpoint,
                       opset=args.opset, verify=not args.no_verify, log=log)
    v = meta.get("verification") or {}
    if "embedding_max_abs_diff" in v:
        log(f"usam export: onnxruntime vs PyTorch: embedding max |diff| {v['embedding_max_abs_diff']:.2e}, "
            f"mask logits max |diff| {max(v['box_logits_max_abs_diff'], v['click_logits_max_abs_diff']):.2e}")
    elif v.get("skipped"):
        log(f"usam export: not verified: {v['skipped']}")
    what = f"adapter {meta['adapter']['name']!r}" if meta["adapter"] else "bare backbone"
    log(f"usam export: {meta['backbone']['name']} + {what} -> {args.out_dir}")
    if args.json:
        print(json.dumps(meta, indent=1))
    else:
        print(args.out_dir)
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a backbone + adapter for other runtimes (ONNX)",
                       description="Export models for other runtimes.")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT")
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])
    o = fmt.add_parser(
        "onnx", help="encoder (adapter LoRA merged) + prompt decoder as ONNX, with a JSON of inputs and preprocessing",
        description="Write OUT_DIR/encoder.onnx (preprocessed image -> embedding; the adapter's encoder LoRA merged), "
                    "OUT_DIR/decoder.onnx (embedding + clicks / box corners + previous mask -> low-res logits, IoU; "
                    "segment-anything's ONNX conventions) and OUT_DIR/usam_onnx.json (inputs, preprocessing, "
                    "prompt conventions, backbone, adapter, file hashes). Heads are not exported.",
    )
    o.add_argument("out_dir", help="output folder")
    o.add_argument("--adapter", default=None, metavar="NAME_OR_DIR",
                   help="adapter directory or Hub id in the local HF cache; 'none' (default) exports the bare backbone")
    o.add_argument("--backbone", default=None, help="backbone name (default: the adapter's, else litemedsam)")
    o.add_argument("--checkpoint", default=None, help="weights file for sam_vit_b/l/h (or another LiteMedSAM .pth)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    o.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check after export")
    o.add_argument("--json", action="store_true", help="print the metadata JSON")
    o.set_defaults(func=cmd_export_onnx)
