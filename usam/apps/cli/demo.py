"""``usam demo``: the Gradio click demo (see :mod:`usam.apps.demo.app`)."""

from __future__ import annotations


def cmd_demo(args) -> int:
    from ..demo.app import launch

    launch(adapters=args.adapters or (), backbone=args.backbone, checkpoint=args.checkpoint, device=args.device,
           precision=args.precision, host=args.host, port=args.port, examples=args.examples)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="start the Gradio click demo (offline, no share links, no analytics)",
                       description="Upload an ultrasound image (or pick an example), click / draw a box, see the mask; "
                                   "with an adapter also automatic segmentation, class probabilities, box, keypoints "
                                   "and measurements in mm.")
    from ..demo.app import build_parser

    build_parser(p)
    p.set_defaults(func=cmd_demo)
