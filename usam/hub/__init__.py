"""Hugging Face Hub I/O for adapters, offline-first.

A reference is a local directory or a Hub id (``org/name``). Hub ids resolve from the local HF cache
(``huggingface_hub.snapshot_download(..., local_files_only=True)``, honouring ``HF_HUB_CACHE`` / ``HF_HOME``);
nothing is downloaded unless ``usam pull`` is asked to, and ``HF_HUB_OFFLINE=1`` forbids that too.

Only the adapter's own files travel, in both directions (:data:`~usam.adapters.layout.ADAPTER_FILES`)::

    config.json                  usam config: backbone name + sha256, tasks, classes, preprocessing
    heads.safetensors            heads (+ tuned prompt-decoder weights)
    adapter_config.json          peft LoraConfig                 (only with encoder LoRA)
    adapter_model.safetensors    encoder LoRA weights, peft format (only with encoder LoRA)
    metrics.json                 training / evaluation metrics    (optional)
    README.md                    model card, YAML metadata + body

``usam push`` (:mod:`usam.hub.push`) validates the directory with the check loading uses too
(:func:`usam.adapters.validate_adapter_dir`: no pickles, complete and self-consistent files), generates the
model card when ``README.md`` is missing (or when asked), copies the files into a temporary staging folder
and uploads it with ``HfApi.create_repo(..., exist_ok=True)`` + ``HfApi.upload_folder(allow_patterns=<those
files>)`` in one commit. Adapter files a previous push left on the Hub that this adapter no longer has (a
stale ``adapter_model.safetensors`` after retraining without LoRA, an old ``metrics.json``) are deleted in
the same commit (``delete_patterns``); nothing else on the Hub is touched. The local directory is never
modified.

``usam pull`` (:mod:`usam.hub.pull`) downloads only those files (``allow_patterns``) into the HF cache (or
``--local-dir``) and validates them; later loads by Hub id work offline.
"""

from __future__ import annotations

from ..adapters.layout import ADAPTER_FILES
from ..adapters.resolve import resolve_adapter
from ..adapters.validate import AdapterCheck, validate_adapter_dir
from .pull import pull_adapter
from .push import PushResult, push_adapter

__all__ = ["ADAPTER_FILES", "AdapterCheck", "PushResult", "pull_adapter", "push_adapter", "resolve_adapter",
           "validate_adapter_dir"]
