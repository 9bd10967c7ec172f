"""``argparse`` types shared by ``python -m usam`` (:mod:`usam.apps.cli`) and the module CLIs of the train layer
(``python -m usam.train.boxes``, ``python -m usam.train.locate``), which may not import the CLI layer."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """``text`` as an integer >= 1, else :class:`argparse.ArgumentTypeError` (argparse's one-line usage error)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


__all__ = ["positive_int"]
