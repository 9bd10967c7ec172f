"""The one check of an adapter directory, without a backbone: loading, ``usam push`` and ``usam pull`` all call it.

:func:`validate_adapter_dir` refuses pickles, reads ``config.json`` (:meth:`AdapterConfig.from_dict`), the
safetensors files, checks the head tensors against the config's tasks, the tuned-decoder tensors against its
``decoder`` block, the peft files against its ``lora``, and reads ``metrics.json`` / the card's YAML metadata.
What needs the backbone (its name, checksum and input size; tensor shapes; the LoRA tensor set) is checked by
:meth:`usam.adapters.adapter.Adapter.from_pretrained`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import AdapterError
from ..heads.locate import attach_locators
from ..io import dumps_json
from ..tasks import kind_of
from .card import adapter_card, parse_card
from .config import AdapterConfig
from .layout import (
    ADAPTER_FILES,
    CARD_NAME,
    CONFIG_NAME,
    HEADS_NAME,
    LORA_CONFIG_NAME,
    LORA_FILES,
    LORA_NAME,
    METRICS_NAME,
    PICKLE_SUFFIXES,
)


@dataclass
class AdapterCheck:
    """A validated adapter directory.

    Attributes:
      directory: where it is.
      config: its ``config.json``.
      files: the adapter files present (:data:`~usam.adapters.layout.ADAPTER_FILES` order).
      heads: ``heads.safetensors`` (``heads.<task>.*`` and ``decoder.*`` tensors).
      lora: ``adapter_model.safetensors`` (peft format) when the config declares encoder LoRA, else ``None``.
      metrics: ``metrics.json`` when present and a JSON object.
      card_meta: the model card's YAML metadata when there is a ``README.md``.
    """

    directory: Path
    config: AdapterConfig
    files: list[str]
    heads: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor] | None = None
    metrics: dict | None = None
    card_meta: dict | None = None


def validate_adapter_dir(directory: str | os.PathLike) -> AdapterCheck:
    """Read and check an adapter directory; raises :class:`~usam.errors.AdapterError` naming the file at fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterError(f"adapter directory {str(directory)!r} "
                           + ("is a file: give the adapter's folder" if directory.exists() else "does not exist"))
    _refuse_pickles(directory)
    config = read_config(directory)
    heads = _read_tensors(directory / HEADS_NAME, f"adapter {str(directory)!r} has no {HEADS_NAME}")
    lora = None
    if config.lora:
        lora = _read_tensors(directory / LORA_NAME, f"adapter {str(directory)!r} declares encoder LoRA but has no {LORA_NAME}")
    _check_head_tensors(directory, config, heads)
    if config.lora:
        _check_peft_files(directory, lora)
    files = [n for n in ADAPTER_FILES if (directory / n).is_file() and (config.lora or n not in LORA_FILES)]
    metrics = _read_json(directory / METRICS_NAME) if (directory / METRICS_NAME).is_file() else None
    return AdapterCheck(directory, config, files, heads, lora, metrics if isinstance(metrics, dict) else None,
                        _read_card_meta(directory / CARD_NAME))


def _refuse_pickles(directory: Path) -> None:
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {str(directory)!r} contains pickled files {pickles}: usam loads only safetensors weights "
            "(pickles can run code). Remove them or re-save the adapter with usam."
        )


def read_config(directory: Path) -> AdapterConfig:
    """``directory/config.json`` as an :class:`AdapterConfig` (checked)."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{str(directory)!r} is not a usam adapter: it has no {CONFIG_NAME}")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AdapterError(f"{path} is not UTF-8 text (byte {exc.start}): re-save the adapter with usam") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}") from exc
    return AdapterConfig.from_dict(raw, str(path))


def _read_tensors(path: Path, missing: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AdapterError(missing)
    try:
        return load_file(str(path))
    except Exception as exc:
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc


def _check_head_tensors(directory: Path, config: AdapterConfig, heads: dict) -> None:
    """The names in ``heads.safetensors`` are those of the config's heads (+ decoder tensors iff it declares one)."""
    where = directory / HEADS_NAME
    expected = set()
    for tid, task in config.tasks.items():
        try:
            with torch.device("meta"):
                head = kind_of(task).build_head(task, config.input_size)
                attach_locators({tid: head}, config.head_options)
        except (ValueError, TypeError) as exc:
            raise AdapterError(f"{directory / CONFIG_NAME}: task {tid!r} is invalid: {exc}") from exc
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


def _check_peft_files(directory: Path, lora: dict) -> None:
    path = directory / LORA_CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"adapter {str(directory)!r} declares encoder LoRA but has no {LORA_CONFIG_NAME}")
    peft_cfg = _read_json(path)
    if not isinstance(peft_cfg, dict) or str(peft_cfg.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{path} is not a peft LoRA config (peft_type must be LORA)")
    if not lora or any("lora_" not in k for k in lora):
        raise AdapterError(f"{directory / LORA_NAME} does not hold peft LoRA weights")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}") from exc


def _read_card_meta(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return parse_card(path.read_text(encoding="utf-8"))[0]
    except ValueError as exc:
        raise AdapterError(f"{path}: {exc}") from exc


def local_adapter_dir(directory: str | os.PathLike, why: str) -> Path:
    """``directory`` as a :class:`~pathlib.Path` if it is a local folder holding an adapter's ``config.json``, else
    :class:`~usam.errors.AdapterError`: commands that write into an adapter (``why`` says so) take no Hub id (pull
    it into a folder first, ``usam hub pull ORG/NAME --local-dir DIR``)."""
    path = Path(directory)
    if not (path / CONFIG_NAME).is_file():
        raise AdapterError(f"{str(directory)!r} is not a local adapter folder (no {CONFIG_NAME} there): {why}; "
                           "pull a Hub adapter into a folder first (usam hub pull ORG/NAME --local-dir DIR)")
    return path


def write_config(directory: str | os.PathLike, config: AdapterConfig) -> None:
    """Replace an adapter folder's ``config.json`` alone, atomically (temp file + rename), as
    :meth:`~usam.adapters.adapter.Adapter.save_pretrained` writes it (a record changed, the weights did not)."""
    path = Path(directory) / CONFIG_NAME
    tmp = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
    tmp.write_text(dumps_json(config.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def rewrite_card(directory: str | os.PathLike, metrics: dict | None = None) -> None:
    """Rewrite an adapter folder's card (``README.md``) from its ``config.json`` (checked by
    :func:`validate_adapter_dir`) and ``metrics`` (default: its ``metrics.json``): after a script changed either."""
    check = validate_adapter_dir(Path(directory))
    (Path(directory) / "README.md").write_text(adapter_card(check.config, check.metrics if metrics is None else metrics))
