"""Exception types raised by usam.

Every error a user can cause (a bad file, a bad prompt, a missing checkpoint, a bad config)
raises a subclass of :class:`UsamError` whose message names the input and says what to do.
The CLI turns them into one line on stderr and a non-zero exit code (:attr:`UsamError.exit_code`).
"""

from __future__ import annotations


class UsamError(Exception):
    """Base class of every error usam raises on purpose."""

    exit_code = 1


class OutputError(UsamError, ValueError):
    """An output path that cannot or must not be written (a directory, an unwritable folder, a lossy format for a
    mask, a folder holding other files). Checked before any work is done; a usage error for the CLI."""

    exit_code = 2


class InputImageError(UsamError, ValueError):
    """An image that cannot be read or used (missing, corrupt, empty, wrong shape, NaN, too large...)."""

    exit_code = 3


class PromptError(UsamError, ValueError):
    """A point / box / mask prompt that is malformed or outside the image."""

    exit_code = 4


class CheckpointError(UsamError):
    """A weights file that is missing, fails its checksum, or does not fit the architecture."""

    exit_code = 5


class ConfigError(UsamError, ValueError):
    """A training / task / adapter configuration that is invalid."""

    exit_code = 6


class DataError(UsamError, ValueError):
    """A dataset (CSV or folder layout) with missing or inconsistent rows."""

    exit_code = 7


class AdapterError(UsamError):
    """An adapter that is missing, tampered with, or built for another backbone."""

    exit_code = 8


class HubError(UsamError):
    """A Hugging Face Hub repository that cannot be resolved offline or pushed."""

    exit_code = 9


#: Longest error message the CLI prints (one line); longer ones are cut.
MAX_MESSAGE = 1000


def short_repr(value, limit: int = 120) -> str:
    """A short, one-line description of a value for an error message: small arrays in full, large ones by shape."""
    import numpy as np

    if isinstance(value, np.ndarray) and value.size > 8:
        return f"an array of shape {value.shape} ({value.dtype})"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return one_line(text, limit)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (line breaks become spaces), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
