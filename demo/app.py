"""Launch the usam Gradio demo: the same as ``usam demo`` (same options, messages and exit codes).

    .venv/bin/python demo/app.py [--adapters DIR_OR_HUB_ID ...] [--host 127.0.0.1] [--port 7860]

Runs offline: no share link, analytics off. Example images: demo/examples (see CREDITS.md there).
The organ adapter selector starts on the first ``--adapters`` argument (e.g. ``--adapters adapters/fetal_head
adapters/breast adapters/intrapartum`` starts on ``fetal_head``); point prompts need an adapter (the bare
LiteMedSAM backbone answers boxes only).
"""

from __future__ import annotations

import sys

from usam.apps.cli import main as usam_main


def main(argv: list[str] | None = None) -> int:
    return usam_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
