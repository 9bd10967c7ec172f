"""``usam export onnx --adapter NAME_OR_DIR OUT_DIR``: the encoder (LoRA merged) and the prompt decoder as ONNX;
``usam export int8 --data ROOT``: the encoder quantised to int8 for the OpenVINO runtime, checked on real images."""

from __future__ import annotations

import json

from ...export import export_int8, export_onnx
from .common import log, positive_int


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


def cmd_export_int8(args) -> int:
    record = export_int8(args.data, adapter=args.adapter, backbone=args.backbone, checkpoint=args.checkpoint,
                         tasks=args.tasks, calibration=args.calibration, check=args.check, log=log)
    print(json.dumps(record, indent=1) if args.json else ("passed" if record["passed"] else "failed"))
    return 0 if record["passed"] else 1


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
    q = fmt.add_parser(
        "int8", help="quantise the encoder (adapter LoRA merged) to int8 for the OpenVINO runtime, checked on real images",
        description="Quantise the encoder with NNCF (post-training, transformer recipe) on training images of DATA and "
                    "check the GT-box Dice of prompted masks on its validation images against eager fp32. The int8 model "
                    "is kept in the runtime cache ($USAM_CACHE/runtime) beside the encoder's ONNX file: --precision int8 "
                    "runs it, and --precision auto (the default) does too on the OpenVINO runtime where the CPU has "
                    "int8 dot-product instructions (VNNI / AMX) and the check passed (Dice drop <= 0.005). "
                    "Exit 0 when the check passed, 1 when it did not. Needs pip install 'usam[int8]'.",
    )
    q.add_argument("--data", required=True, metavar="ROOT",
                   help="FMC_UIA root (train/ + val/), a split folder, or an images/ + masks/ folder")
    q.add_argument("--adapter", default=None, metavar="NAME_OR_DIR", help="adapter whose encoder LoRA is merged first "
                   "(default: the bare backbone, which serves every adapter without encoder LoRA)")
    q.add_argument("--backbone", default=None, help="backbone name (default: the adapter's, else litemedsam)")
    q.add_argument("--checkpoint", default=None, help="weights file for sam_vit_b/l/h (or another LiteMedSAM .pth)")
    q.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task ids of DATA to use (default: all)")
    q.add_argument("--calibration", type=positive_int, default=64, metavar="N", help="calibration images (default 64)")
    q.add_argument("--check", type=positive_int, default=20, metavar="N", help="validation images of the Dice check (default 20)")
    q.add_argument("--json", action="store_true", help="print the int8.json record")
    q.set_defaults(func=cmd_export_int8)
