"""Launch the usam Gradio demo (same as ``usam demo``).

    .venv/bin/python demo/app.py [--adapters DIR_OR_HUB_ID ...] [--host 127.0.0.1] [--port 7860]

Runs offline: no share link, analytics off. Example images: demo/examples (see CREDITS.md there).
"""

from __future__ import annotations

import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported


def main(argv=None) -> int:
    from usam.demo import build_parser, launch
    from usam.errors import UsamError
    from usam.model import UsamModel

    args = build_parser().parse_args(argv)
    try:
        model = UsamModel.from_pretrained(backbone=args.backbone, checkpoint=args.checkpoint, adapters=args.adapters,
                                          precision=args.precision, device=args.device)
    except UsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"usam demo: {args.backbone}, adapters: {', '.join(model.adapters) or 'none'}; open http://{args.host}:{args.port}/")
    launch(model, host=args.host, port=args.port, examples=args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
