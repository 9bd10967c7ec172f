"""``usam pull``: download an adapter's files (only those) into the HF cache or a folder, and validate them."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..adapters.layout import ADAPTER_FILES
from ..adapters.resolve import check_repo_id, is_offline, resolve_adapter
from ..adapters.validate import validate_adapter_dir
from ..errors import AdapterError, HubError
from ..version import __version__
from .errors import network_errors, short


def pull_adapter(repo_id: str, revision: str | None = None, local_dir: str | os.PathLike | None = None,
                 token: str | None = None, log=None) -> Path:
    """Download an adapter's files (only :data:`ADAPTER_FILES`) into the HF cache or ``local_dir``; validate them.

    Returns the local directory. Raises :class:`HubError` when offline or the Hub cannot serve the repo, and
    :class:`~usam.errors.AdapterError` when what was downloaded is not a valid usam adapter.
    """
    log = log or (lambda _msg: None)
    check_repo_id(repo_id)
    if is_offline():
        raise HubError(f"cannot pull {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it (and connect) "
                       f"to download{_cached_note(repo_id, revision) if local_dir is None else ''}")
    path = Path(_download(repo_id, revision, local_dir, token))
    try:
        validate_adapter_dir(path)
    except AdapterError as exc:
        raise AdapterError(f"downloaded {repo_id} to {path} but it is not a valid usam adapter: {exc}") from exc
    log(f"usam pull: {repo_id}" + (f"@{revision}" if revision else "") + f" -> {path}")
    return path


def _cached_note(repo_id: str, revision: str | None) -> str:
    try:
        return f"; a copy is already in the local cache at {resolve_adapter(repo_id, revision)} and loads offline"
    except (HubError, AdapterError):
        return ""


def _download(repo_id: str, revision: str | None, local_dir, token: str | None) -> str:
    """``huggingface_hub.snapshot_download`` of the adapter files, its failures as :class:`HubError`. Into a
    ``local_dir`` the Hub is asked first: offline, ``snapshot_download`` returns whatever that folder holds (its
    fallback), which would pass any adapter there for ``repo_id``."""
    try:
        if local_dir is not None:
            huggingface_hub.repo_info(repo_id, repo_type="model", revision=revision, token=token)
        return huggingface_hub.snapshot_download(
            repo_id=repo_id, repo_type="model", revision=revision,
            local_dir=str(local_dir) if local_dir is not None else None,
            allow_patterns=list(ADAPTER_FILES), library_name="usam", library_version=__version__, token=token,
        )
    except GatedRepoError as exc:
        raise HubError(f"cannot pull {repo_id}: the repository is gated: request access on the Hub and log in "
                       "(`hf auth login`)") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"cannot pull {repo_id}: no such model repository on the Hub, or it is private "
                       "(log in with `hf auth login`)") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"cannot pull {repo_id}: it has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        raise HubError(f"cannot pull {repo_id}: the Hub could not be reached and no cached copy exists "
                       f"({short(exc)})") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"cannot pull {repo_id}: the Hub refused the download: {short(exc)}") from exc
    except network_errors() as exc:
        raise HubError(f"cannot pull {repo_id}: the Hub could not be reached ({type(exc).__name__}: {exc})") from exc
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot pull {repo_id}: {type(exc).__name__}: {exc}") from exc
