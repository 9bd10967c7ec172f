"""Launch the usam Gradio demo (same as ``usam demo``).

    .venv/bin/python demo/app.py [--adapters DIR_OR_HUB_ID ...] [--host 127.0.0.1] [--port 7860]

Runs offline: no share link, analytics off. Example images: demo/examples (see CREDITS.md there).
The organ adapter selector starts on the first ``--adapters`` argument (e.g. ``--adapters adapters/fetal_head
adapters/breast adapters/intrapartum`` starts on ``fetal_head``); point prompts need an adapter (the bare
LiteMedSAM backbone answers boxes only).
"""

from __future__ import annotations

import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported


def main(argv=None) -> int:
    from usam.apps.demo.app import build_parser, launch
    from usam.errors import UsamError
    from usam.model import UsamModel

    args = build_parser().parse_args(argv)
    try:
        model = UsamModel.from_pretrained(backbone=args.backbone, checkpoint=args.checkpoint, adapters=args.adapters,
                                          precision=args.precision, device=args.device)
    except UsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    names = list(model.adapters)
    start = f" (starts on {names[0]})" if names else ""
    print(f"usam demo: {args.backbone}, adapters: {', '.join(names) or 'none'}{start}; open http://{args.host}:{args.port}/")
    launch(model, host=args.host, port=args.port, examples=args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
