"""``usam demo``: the command-line face of the Gradio click demo (:mod:`usam.apps.demo`)."""

from __future__ import annotations

import argparse

from .common import add_model_args, build_model, log

DESCRIPTION = ("Upload an ultrasound image (or pick an example), click / draw a box, see the mask; with an adapter "
               "also automatic segmentation, class probabilities, box, keypoints and measurements in mm. Runs offline: "
               "no share link, analytics off. The page starts on the first --adapters argument; point prompts need an "
               "adapter (the bare LiteMedSAM backbone answers boxes only).")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Options of ``usam demo`` (also ``demo/app.py``'s): the model flags, ``--host``, ``--port``, ``--examples``."""
    p = parser or argparse.ArgumentParser(prog="usam demo", description=DESCRIPTION)
    add_model_args(p, adapters=True, device=True)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--examples", default=None, help="folder of example images (default: bundled)")
    return p


def cmd_demo(args) -> int:
    # the demo (and gradio, ~2 s) is imported only when it starts: `usam --help` never imports gradio
    from ..demo import launch

    model = build_model(args)
    names = list(model.adapters)
    start = f" (starts on {names[0]})" if names else ""
    log(f"usam demo: {args.backbone}, adapters: {', '.join(names) or 'none'}{start}; open http://{args.host}:{args.port}/")
    launch(model, host=args.host, port=args.port, examples=args.examples)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="start the Gradio click demo (offline, no share links, no analytics)",
                       description=DESCRIPTION)
    build_parser(p)
    p.set_defaults(func=cmd_demo)
