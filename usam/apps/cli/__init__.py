"""``usam`` command line. Every command has ``--help``; errors print one line and exit non-zero.

Exit codes: 0 ok, 2 usage (bad arguments, or an output path that cannot or must not be written), 3 bad image,
4 bad prompt, 5 checkpoint, 6 config, 7 data, 8 adapter, 9 hub, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ...errors import UsamError, one_line
from ...version import __version__
from . import challenge, demo, export, hub, segment, track, train
from .common import log

#: Sub-command modules, each with ``register(subparsers)``, in ``usam --help`` order.
COMMANDS = (segment, track, train, challenge, hub, demo, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usam", description="Ultrasound segmentation and analysis on Segment Anything.")
    parser.add_argument("--version", action="version", version=f"usam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsamError as exc:
        log(f"usam {args.command}: error: {one_line(exc)}")
        return exc.exit_code
    except KeyboardInterrupt:
        log(f"usam {args.command}: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
