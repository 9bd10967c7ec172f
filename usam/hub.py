"""Hugging Face Hub I/O for adapters, offline-first.

A reference is a local directory or a Hub id (``org/name``). Hub ids resolve from the local HF cache
(``huggingface_hub.snapshot_download(..., local_files_only=True)``); nothing is downloaded unless
``usam pull`` is asked to.
"""

from __future__ import annotations

from pathlib import Path

from .errors import HubError


def resolve_adapter(ref: str, revision: str | None = None) -> Path:
    """Local directory of an adapter given as a path or a Hub id present in the local HF cache."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise HubError(f"adapter {ref!r} is a file, not an adapter directory")
    parts = ref.split("/")
    looks_like_id = len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))
    if not looks_like_id:
        raise HubError(f"adapter {ref!r} is neither a local directory nor a Hub id of the form org/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=ref, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise HubError(
            f"adapter {ref!r} is not a local directory and is not in the local Hugging Face cache: "
            f"fetch it first with `usam pull {ref}` (needs network) or pass a local path"
        ) from exc
