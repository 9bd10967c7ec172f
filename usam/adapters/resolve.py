"""Where an adapter reference points: a local directory, or a Hub id resolved from the local HF cache (offline).

Nothing here touches the network: a Hub id missing from the cache raises :class:`~usam.errors.HubError` naming the
``usam pull`` command that fetches it (see :mod:`usam.hub` for push / pull).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

from ..errors import AdapterError, HubError
from .layout import ADAPTER_FILES

_REPO_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (else ``TRANSFORMERS_OFFLINE``) as set now, else huggingface_hub's import-time value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None and value.strip():
        return value.strip().upper() in _TRUE
    return bool(constants.HF_HUB_OFFLINE)


def looks_like_repo_id(ref: str) -> bool:
    """``org/name`` with Hub-legal characters (no path prefix such as ``./``, ``/``, ``~``)."""
    return bool(_REPO_ID.match(ref)) and ".." not in ref and "--" not in ref


def check_repo_id(repo_id: str) -> str:
    if not looks_like_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub model id: use ORG/NAME (letters, digits, '-', '_', '.')")
    return repo_id


def hub_cache_dir() -> str:
    return str(constants.HF_HUB_CACHE)


def pull_command(ref: str, revision: str | None) -> str:
    return f"usam pull {ref}" + (f" --revision {revision}" if revision else "")


# --------------------------------------------------------------------------------------------- resolve
def resolve_adapter(ref: str, revision: str | None = None) -> Path:
    """Local directory of an adapter given as a path or a Hub id present in the local HF cache.

    Never touches the network. A Hub id missing from the cache raises :class:`HubError` naming the
    ``usam pull`` command that fetches it.
    """
    ref = str(ref)
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise AdapterError(f"adapter {ref!r} is a file, not an adapter directory: give the folder that holds "
                           "config.json (or a Hub id org/name)")
    if not looks_like_repo_id(ref):
        raise AdapterError(f"adapter folder {ref!r} does not exist (and it is not a Hub id of the form org/name): "
                           "check the path")
    try:
        # allow_patterns = what `usam pull` fetches: a repo's other files (.gitattributes, ...) are not expected.
        return Path(huggingface_hub.snapshot_download(repo_id=ref, revision=revision, local_files_only=True,
                                      allow_patterns=list(ADAPTER_FILES)))
    except IncompleteSnapshotError as exc:
        raise HubError(
            f"the cached copy of adapter {ref!r} is incomplete (an interrupted download?): "
            f"fetch it again with `{pull_command(ref, revision)}` (needs network)"
        ) from exc
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        rev = f" at revision {revision!r}" if revision else ""
        raise HubError(
            f"adapter {ref!r}{rev} is not a local folder (check the path) and, as a Hub id, not in the local Hugging Face cache "
            f"({hub_cache_dir()}): fetch it once with `{pull_command(ref, revision)}` (needs network), "
            "then it loads offline; or pass a local adapter directory"
        ) from exc
