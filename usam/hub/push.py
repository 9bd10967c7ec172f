"""``usam push``: validate an adapter directory and upload its files to a Hub model repo in one commit."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError

from ..adapters.card import adapter_card
from ..adapters.config import AdapterConfig
from ..adapters.layout import CARD_NAME, OPTIONAL_FILES
from ..adapters.resolve import check_repo_id, is_offline
from ..adapters.validate import AdapterCheck, validate_adapter_dir
from ..errors import HubError
from .errors import network_errors, short


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    files: list[str]
    commit_message: str
    card_generated: bool
    card: str
    url: str | None = None
    deleted_patterns: list[str] = field(default_factory=list)


def default_commit_message(config: AdapterConfig) -> str:
    return f"Upload usam adapter {config.name} ({', '.join(config.tasks)})"


def push_adapter(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    regenerate_card: bool = False,
    evaluation: dict | None = None,
    base_model: str | None = None,
    license: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    log=None,
) -> PushResult:
    """Validate an adapter directory and upload its files to the Hub model repo ``repo_id`` in one commit.

    The model card is generated when the directory has no ``README.md``, or when ``regenerate_card`` or
    ``evaluation`` (results of :func:`usam.challenge.evaluate.evaluate`) is given; the local directory is
    not modified. ``dry_run`` validates and builds everything but uploads nothing.
    """
    log = log or (lambda _msg: None)
    check_repo_id(repo_id)
    check = validate_adapter_dir(Path(directory).expanduser())
    generate = regenerate_card or evaluation is not None or CARD_NAME not in check.files
    card = (adapter_card(check.config, check.metrics, repo_id=repo_id, base_model=base_model,
                         license=license or "apache-2.0", evaluation=evaluation) if generate
            else (check.directory / CARD_NAME).read_text(encoding="utf-8"))
    files = sorted({*check.files, CARD_NAME})
    result = PushResult(repo_id, revision, files, commit_message or default_commit_message(check.config), generate,
                        card, deleted_patterns=[n for n in OPTIONAL_FILES if n not in files])
    where = repo_id + (f"@{revision}" if revision else "")
    if dry_run:
        log(f"usam push: dry run: would upload {', '.join(result.files)} to {where} ({result.commit_message!r})")
        return result
    if is_offline():
        raise HubError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")
    staging = Path(tempfile.mkdtemp(prefix="usam-push-"))
    try:
        _stage(check, result, staging)
        result.url = _upload(staging, result, private=private, token=token, create_pr=create_pr)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"usam push: uploaded {', '.join(result.files)} to {where}" + (" (model card generated)" if generate else ""))
    return result


def _stage(check: AdapterCheck, result: PushResult, staging: Path) -> None:
    """Copy the files to upload into ``staging`` (the generated card written in place of ``README.md``)."""
    for name in result.files:
        if name == CARD_NAME and result.card_generated:
            (staging / name).write_text(result.card, encoding="utf-8")
        else:
            shutil.copy2(check.directory / name, staging / name)


def _upload(staging: Path, result: PushResult, *, private: bool, token: str | None, create_pr: bool) -> str:
    """Create the repo (and branch) if missing and upload ``staging`` in one commit; returns the commit's URL."""
    repo_id, revision = result.repo_id, result.revision
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            folder_path=str(staging), repo_id=repo_id, repo_type="model", revision=revision,
            commit_message=result.commit_message, allow_patterns=list(result.files),
            delete_patterns=result.deleted_patterns or None, create_pr=create_pr or None,
        )
    except LocalTokenNotFoundError as exc:
        raise HubError(f"cannot push to {repo_id}: not logged in to the Hub: run `hf auth login` or set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"cannot push to {repo_id}: the repository is not reachable with this token "
                       f"(wrong organisation or no write access?): {short(exc)}") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"cannot push to {repo_id}: the Hub refused the upload: {short(exc)}") from exc
    except network_errors() as exc:
        raise HubError(f"cannot push to {repo_id}: the Hub could not be reached ({type(exc).__name__}: {exc})") from exc
    return getattr(info, "commit_url", None) or getattr(info, "pr_url", None) or f"https://huggingface.co/{repo_id}"
