"""Hugging Face Hub I/O for adapters, offline-first.

A reference is a local directory or a Hub id (``org/name``). Hub ids resolve from the local HF cache
(``huggingface_hub.snapshot_download(..., local_files_only=True)``, honouring ``HF_HUB_CACHE`` / ``HF_HOME``);
nothing is downloaded unless ``usam pull`` is asked to, and ``HF_HUB_OFFLINE=1`` forbids that too.

Only the adapter's own files travel, in both directions (:data:`ADAPTER_FILES`)::

    config.json                  usam config: backbone name + sha256, tasks, classes, preprocessing
    heads.safetensors            heads (+ tuned prompt-decoder weights)
    adapter_config.json          peft LoraConfig                 (only with encoder LoRA)
    adapter_model.safetensors    encoder LoRA weights, peft format (only with encoder LoRA)
    metrics.json                 training / evaluation metrics    (optional)
    README.md                    model card, YAML metadata + body

``usam push`` validates the directory (no pickles, complete and self-consistent files), generates the
model card when ``README.md`` is missing (or when asked), copies the files into a temporary staging folder
and uploads it with ``HfApi.create_repo(..., exist_ok=True)`` + ``HfApi.upload_folder(allow_patterns=<those
files>)`` in one commit. Adapter files a previous push left on the Hub that this adapter no longer has (a
stale ``adapter_model.safetensors`` after retraining without LoRA, an old ``metrics.json``) are deleted in
the same commit (``delete_patterns``); nothing else on the Hub is touched. The local directory is never
modified.

``usam pull`` downloads only those files (``allow_patterns``) into the HF cache (or ``--local-dir``) and
validates them; later loads by Hub id work offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters.resolve import (
    ADAPTER_FILES,
    LORA_FILES,
    OPTIONAL_FILES,
    check_repo_id,
    hub_cache_dir,
    is_offline,
    looks_like_repo_id,
    pull_command,
    resolve_adapter,
)
from ..errors import AdapterError, HubError


# --------------------------------------------------------------------------------------------- helpers
def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx", "requests"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        for name in ("HTTPError", "TransportError", "RequestException"):
            cls = getattr(m, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)


# --------------------------------------------------------------------------------------------- validate
@dataclass
class AdapterCheck:
    """A validated adapter directory: its config, the files to upload and its metrics (if any)."""

    directory: Path
    config: object
    files: list[str]
    metrics: dict | None = None
    card_meta: dict | None = None


def validate_adapter_dir(directory: str | os.PathLike) -> AdapterCheck:
    """Check an adapter directory without a backbone: no pickles, readable safetensors, a usam config.json,
    a head tensor set matching the config's tasks, peft files when the config declares encoder LoRA,
    valid metrics.json / README.md front matter. Raises :class:`~usam.errors.AdapterError`."""
    import torch

    from ..adapters.adapter import (
        HEADS_NAME,
        LORA_CONFIG_NAME,
        build_head,
        read_adapter_dir,
    )
    from ..adapters.card import parse_card

    directory = Path(directory)
    config, heads, lora = read_adapter_dir(directory)
    where = str(directory / HEADS_NAME)
    expected = set()
    for tid, task in config.tasks.items():
        try:
            with torch.device("meta"):
                head = build_head(task, config.input_size)
        except (ValueError, TypeError) as exc:
            raise AdapterError(f"{directory / 'config.json'}: task {tid!r} is invalid: {exc}") from exc
        expected |= {f"heads.{tid}.{k}" for k in head.state_dict()}
    have = {k for k in heads if k.startswith("heads.")}
    decoder_keys = [k for k in heads if k.startswith("decoder.")]
    other = sorted(set(heads) - have - set(decoder_keys))
    missing, unexpected = sorted(expected - have), sorted(have - expected)
    if missing or unexpected or other:
        what = "; ".join(s for s in (
            f"missing {len(missing)} tensors (first: {missing[0]})" if missing else "",
            f"{len(unexpected)} tensors of no configured task (first: {unexpected[0]})" if unexpected else "",
            f"{len(other)} unknown tensors (first: {other[0]})" if other else "",
        ) if s)
        raise AdapterError(f"{where} does not match config.json: {what}. The adapter files are damaged or mixed up.")
    if config.decoder and not decoder_keys:
        raise AdapterError(f"{where} has no tuned-decoder tensors but config.json declares a tuned decoder")
    if decoder_keys and not config.decoder:
        raise AdapterError(f"{where} holds tuned-decoder tensors but config.json declares no tuned decoder")
    if config.lora:
        lc = directory / LORA_CONFIG_NAME
        if not lc.is_file():
            raise AdapterError(f"adapter {str(directory)!r} declares encoder LoRA but has no {LORA_CONFIG_NAME}")
        try:
            peft_cfg = json.loads(lc.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterError(f"{lc} is not valid JSON: {exc}") from exc
        if not isinstance(peft_cfg, dict) or str(peft_cfg.get("peft_type", "")).upper() != "LORA":
            raise AdapterError(f"{lc} is not a peft LoRA config (peft_type must be LORA)")
        if not lora or any("lora_" not in k for k in lora):
            raise AdapterError(f"{directory / 'adapter_model.safetensors'} does not hold peft LoRA weights")
    metrics = None
    mp = directory / "metrics.json"
    if mp.is_file():
        try:
            metrics = json.loads(mp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterError(f"{mp} is not valid JSON: {exc}") from exc
    card_meta = None
    rp = directory / "README.md"
    if rp.is_file():
        try:
            card_meta, _ = parse_card(rp.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise AdapterError(f"{rp}: {exc}") from exc
    files = [n for n in ADAPTER_FILES if (directory / n).is_file() and (config.lora or n not in LORA_FILES)]
    return AdapterCheck(directory, config, files, metrics if isinstance(metrics, dict) else None, card_meta)


# --------------------------------------------------------------------------------------------- push
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


def default_commit_message(config) -> str:
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
    from ..adapters.card import adapter_card

    log = log or (lambda _msg: None)
    check_repo_id(repo_id)
    directory = Path(directory).expanduser()
    check = validate_adapter_dir(directory)
    config = check.config
    files = list(check.files)
    card_generated = regenerate_card or evaluation is not None or "README.md" not in files
    if card_generated:
        card = adapter_card(config, check.metrics, repo_id=repo_id, base_model=base_model,
                            license=license or "apache-2.0", evaluation=evaluation)
        if "README.md" not in files:
            files.append("README.md")
    else:
        card = (directory / "README.md").read_text(encoding="utf-8")
    message = commit_message or default_commit_message(config)
    stale = [n for n in OPTIONAL_FILES if n not in files]
    result = PushResult(repo_id, revision, sorted(files), message, card_generated, card, deleted_patterns=stale)
    if dry_run:
        log(f"usam push: dry run: would upload {', '.join(result.files)} to {repo_id}"
            + (f"@{revision}" if revision else "") + f" ({message!r})")
        return result
    if is_offline():
        raise HubError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")

    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalTokenNotFoundError,
        RepositoryNotFoundError,
    )

    staging = Path(tempfile.mkdtemp(prefix="usam-push-"))
    try:
        for name in files:
            if name == "README.md" and card_generated:
                (staging / name).write_text(card, encoding="utf-8")
            else:
                shutil.copy2(directory / name, staging / name)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            info = api.upload_folder(
                folder_path=str(staging), repo_id=repo_id, repo_type="model", revision=revision,
                commit_message=message, allow_patterns=list(result.files), delete_patterns=stale or None,
                create_pr=create_pr or None,
            )
        except LocalTokenNotFoundError as exc:
            raise HubError(f"cannot push to {repo_id}: not logged in to the Hub: run `hf auth login` or set HF_TOKEN") from exc
        except RepositoryNotFoundError as exc:
            raise HubError(f"cannot push to {repo_id}: the repository is not reachable with this token "
                           f"(wrong organisation or no write access?): {_short(exc)}") from exc
        except HfHubHTTPError as exc:
            raise HubError(f"cannot push to {repo_id}: the Hub refused the upload: {_short(exc)}") from exc
        except _network_errors() as exc:
            raise HubError(f"cannot push to {repo_id}: the Hub could not be reached ({type(exc).__name__}: {exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.url = getattr(info, "commit_url", None) or getattr(info, "pr_url", None) or f"https://huggingface.co/{repo_id}"
    log(f"usam push: uploaded {', '.join(result.files)} to {repo_id}" + (f"@{revision}" if revision else "")
        + (" (model card generated)" if card_generated else ""))
    return result


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --------------------------------------------------------------------------------------------- pull
def pull_adapter(repo_id: str, revision: str | None = None, local_dir: str | os.PathLike | None = None,
                 token: str | None = None, log=None) -> Path:
    """Download an adapter's files (only :data:`ADAPTER_FILES`) into the HF cache or ``local_dir``; validate them.

    Returns the local directory. Raises :class:`HubError` when offline or the Hub cannot serve the repo, and
    :class:`~usam.errors.AdapterError` when what was downloaded is not a valid usam adapter.
    """
    import huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ..version import __version__

    log = log or (lambda _msg: None)
    check_repo_id(repo_id)
    if is_offline():
        cached = ""
        if local_dir is None:
            try:
                cached = f"; a copy is already in the local cache at {resolve_adapter(repo_id, revision)} and loads offline"
            except HubError:
                pass
        raise HubError(f"cannot pull {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it (and connect) "
                       f"to download{cached}")
    try:
        path = huggingface_hub.snapshot_download(
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
                       f"({_short(exc)})") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"cannot pull {repo_id}: the Hub refused the download: {_short(exc)}") from exc
    except _network_errors() as exc:
        raise HubError(f"cannot pull {repo_id}: the Hub could not be reached ({type(exc).__name__}: {exc})") from exc
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot pull {repo_id}: {type(exc).__name__}: {exc}") from exc
    path = Path(path)
    try:
        validate_adapter_dir(path)
    except AdapterError as exc:
        raise AdapterError(f"downloaded {repo_id} to {path} but it is not a valid usam adapter: {exc}") from exc
    log(f"usam pull: {repo_id}" + (f"@{revision}" if revision else "") + f" -> {path}")
    return path
