"""``usam`` command line. Every command has ``--help``; errors print one line and exit non-zero.

Exit codes: 0 ok, 2 usage (bad arguments, or an output path that cannot or must not be written), 3 bad image,
4 bad prompt, 5 checkpoint, 6 config, 7 data, 8 adapter, 9 hub, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .version import __version__
from .errors import UsamError, one_line


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _add_model_args(p: argparse.ArgumentParser, adapters: bool = True) -> None:
    p.add_argument("--backbone", default="litemedsam", help="backbone name (see `usam backbones`; default: litemedsam)")
    p.add_argument("--checkpoint", default=None, help="weights file for sam_vit_b/l/h (or another LiteMedSAM .pth)")
    p.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"],
                   help="encoder precision: auto = bf16 autocast where the CPU/GPU has native bf16, else fp32 (default auto)")
    p.add_argument("--runtime", default=None, choices=["auto", "torch", "openvino", "onnx"],
                   help="encoder runtime: auto (default, or $USAM_RUNTIME) = OpenVINO on a CPU when installed, else "
                        "eager PyTorch; onnx = ONNX Runtime. Compiled encoders are built once and cached in $USAM_CACHE")
    if adapters:
        p.add_argument("--adapters", nargs="*", default=[], metavar="DIR_OR_HUB_ID",
                       help="adapters to load: directories or Hub ids in the local HF cache")


def _build_model(args):
    from .model import UsamModel

    t0 = time.perf_counter()
    model = UsamModel.from_pretrained(
        backbone=args.backbone, checkpoint=args.checkpoint, adapters=getattr(args, "adapters", []) or [],
        precision=args.precision, runtime=args.runtime,
    )
    _log(f"usam: loaded {model.backbone.name} in {time.perf_counter() - t0:.2f} s (precision {model.precision}, "
         f"runtime {model.runtime})")
    return model


# ---------------------------------------------------------------------------------------------- commands
def cmd_backbones(args) -> int:
    from .backbones import BACKBONES, build_backbone

    rows = []
    for name, desc in BACKBONES.items():
        row = {"name": name, "description": desc}
        if name == "litemedsam":
            b = build_backbone(name)
            row.update({k: v for k, v in b.describe().items() if k != "name"})
        elif name.startswith("sam_vit"):
            row.update({"input_size": 1024, "embedding_shape": [256, 64, 64], "source": "--checkpoint (not bundled)"})
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        size = f"{r['input_size']} px -> {tuple(r['embedding_shape'])}" if "input_size" in r else "from its config"
        params = f", {r['parameters'] / 1e6:.1f}M params" if "parameters" in r else ""
        print(f"{r['name']:<20} {size}{params}\n{'':<20} {r['description']}")
        if r.get("checksum"):
            print(f"{'':<20} weights: {r['source']} sha256 {r['checksum'][:16]}...")
    return 0


def check_adapters(refs) -> None:
    """Read every adapter directory's files (config, weights) before the backbone is built: a damaged
    adapter fails at once, naming its directory (:class:`~usam.errors.AdapterError`)."""
    from .adapter import read_adapter_dir
    from .hub import resolve_adapter

    for ref in refs or []:
        read_adapter_dir(resolve_adapter(ref))


def cmd_segment(args) -> int:
    import numpy as np

    from .errors import OutputError, PromptError
    from .io import IMAGE_SUFFIXES, check_output_path, encode_image, read_image, write_files_atomic
    from .predictor import MAX_POINTS, Predictor
    from .visualize import overlay_mask

    if args.box is None and not args.point:
        raise PromptError("give a prompt: --box X0 Y0 X1 Y1 or --point X Y (repeatable), optionally --neg X Y")
    n_points = len(args.point or []) + len(args.neg or [])
    if n_points > MAX_POINTS:
        raise PromptError(f"{n_points} clicks given (--point / --neg): at most {MAX_POINTS} per prompt")
    # every output is checked before any work: masks only as PNG (lossless), the overlay as its suffix says
    check_output_path(args.out, "--out")
    if Path(args.out).suffix.lower() != ".png":
        raise OutputError(f"--out {args.out!r} must be a .png file: masks are written lossless, as PNG "
                          "(JPEG would blur the 0/255 mask); use --overlay for a .jpg picture")
    outputs = [Path(args.out)]
    if args.overlay:
        check_output_path(args.overlay, "--overlay", IMAGE_SUFFIXES)
        outputs.append(Path(args.overlay))
    image_path = Path(args.image).resolve()
    for flag, o in zip(("--out", "--overlay"), outputs):
        if o.resolve() == image_path:
            raise OutputError(f"{flag} {str(o)!r} is the input image: write the result elsewhere")
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise OutputError(f"--out and --overlay are the same file {args.out!r}: give two names")
    image = read_image(args.image)  # validate input before loading any model
    check_adapters(getattr(args, "adapters", None))
    model = _build_model(args)
    if args.adapter:
        model.set_adapter(args.adapter)
    predictor = Predictor(model)
    t0 = time.perf_counter()
    predictor.set_image(image)
    t_enc = time.perf_counter() - t0
    points = [*(args.point or []), *(args.neg or [])]
    labels = [1] * len(args.point or []) + [0] * len(args.neg or [])
    t0 = time.perf_counter()
    masks, scores, _ = predictor.predict(
        point_coords=np.array(points, dtype=float) if points else None,
        point_labels=np.array(labels) if points else None,
        box=np.array(args.box, dtype=float) if args.box else None,
        multimask_output=args.multimask,
    )
    t_dec = time.perf_counter() - t0
    best = int(np.argmax(scores))
    mask = masks[best]
    files = [(outputs[0], encode_image(outputs[0], mask.astype(np.uint8) * 255, ".png"))]
    if args.overlay:
        drawn = overlay_mask(image, mask, points=points, labels=labels, box=args.box)
        files.append((outputs[1], encode_image(outputs[1], drawn, outputs[1].suffix.lower())))
    write_files_atomic(files)  # all or nothing
    _log(f"usam: encoder {t_enc * 1000:.0f} ms, prompt {t_dec * 1000:.0f} ms; mask {int(mask.sum())} px, "
         f"predicted IoU {float(scores[best]):.3f} -> {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usam", description="Ultrasound segmentation and analysis on Segment Anything.")
    parser.add_argument("--version", action="version", version=f"usam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("backbones", help="list the backbones, their sizes and where their weights come from")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("segment", help="segment one image from a box and/or clicks",
                       description="Segment IMAGE from a box and/or clicks; writes a binary mask PNG (0/255).")
    p.add_argument("image", help="image file (PNG/JPEG/BMP/TIFF; grey, RGB or RGBA; 8 or 16 bit)")
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="box prompt in pixels")
    p.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="positive click (repeatable)")
    p.add_argument("--neg", nargs=2, type=float, action="append", metavar=("X", "Y"), help="negative click (repeatable)")
    p.add_argument("--adapter", default=None, help="name of a loaded adapter whose decoder answers the prompts")
    p.add_argument("--multimask", action="store_true", help="predict 3 candidates and keep the best-scored one")
    p.add_argument("--out", required=True, help="output mask, a .png file (masks are written lossless only)")
    p.add_argument("--overlay", default=None,
                   help="also write an overlay image, encoded as its suffix says (.png, .jpg/.jpeg, .bmp, .tif/.tiff)")
    _add_model_args(p)
    p.set_defaults(func=cmd_segment)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Commands that live beside the features they drive (train, predict, evaluate, ...)."""
    from . import cli_commands

    return cli_commands.REGISTRY


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsamError as exc:
        _log(f"usam {args.command}: error: {one_line(exc)}")
        return exc.exit_code
    except KeyboardInterrupt:
        _log(f"usam {args.command}: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
