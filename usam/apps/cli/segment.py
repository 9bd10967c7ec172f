"""``usam backbones`` and ``usam segment``: list the backbones; segment one image from a box and/or clicks."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import add_model_args, build_model, log


def cmd_backbones(args) -> int:
    from ...backbones import BACKBONES, build_backbone

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
    from ...adapters import resolve_adapter, validate_adapter_dir

    for ref in refs or []:
        validate_adapter_dir(resolve_adapter(ref))


def cmd_segment(args) -> int:
    import numpy as np

    from ...adapters.config import QUALITY_KINDS
    from ...backbones import BOX_ONLY_BACKBONES
    from ...errors import OutputError, PromptError
    from ...io import (
        IMAGE_SUFFIXES,
        check_output_path,
        encode_image,
        read_image,
        write_files_atomic,
    )
    from ...ops.overlay import overlay_mask
    from ...predictor import MAX_POINTS, Predictor, check_boxes, check_points

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
    points = [*(args.point or []), *(args.neg or [])]
    labels = [1] * len(args.point or []) + [0] * len(args.neg or [])
    if points:  # the prompt against the image too (in range, finite, box not inverted), named by its flags
        check_points(np.array(points, dtype=float), np.array(labels), image.shape[:2], name="--point / --neg")
    if args.box:
        check_boxes(np.array(args.box, dtype=float), image.shape[:2], name="--box")
    if points and not args.box and not args.adapter and args.backbone in BOX_ONLY_BACKBONES:
        raise PromptError(f"the bare {args.backbone} backbone was trained on boxes only: clicks without a box give no "
                          "usable mask (Dice ~0.03 from one click); give --box (clicks added to it refine it), or an "
                          "organ adapter for clicks: --adapters DIR --adapter NAME")
    check_adapters(getattr(args, "adapters", None))
    model = build_model(args)
    if args.adapter:
        model.set_adapter(args.adapter)
    predictor = Predictor(model)
    t0 = time.perf_counter()
    predictor.set_image(image)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks, scores, low_res = predictor.predict(
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
    quality = float(predictor.quality(scores, low_res)[best])  # what the demo shows: the adapter's decoder.quality
    kind = getattr(model.prompt_decoder(), "quality", "predicted")
    log(f"usam: encoder {t_enc * 1000:.0f} ms, prompt {t_dec * 1000:.0f} ms; mask {int(mask.sum())} px, "
        f"estimated IoU {quality:.3f} ({QUALITY_KINDS[kind]}) -> {args.out}")
    return 0


def register(sub) -> None:
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
    add_model_args(p, device=True)
    p.set_defaults(func=cmd_segment)
