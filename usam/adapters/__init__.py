"""Adapters: what one organ / task set adds to the frozen backbone.

- :mod:`usam.adapters.lora`: peft LoRA injection, switching, state dicts, merging.
- :mod:`usam.adapters.adapter`: :class:`Adapter` (heads + tuned prompt decoder + encoder LoRA), its config, save / load.
- :mod:`usam.adapters.resolve`: an adapter reference (directory or Hub id in the local cache) to a directory, offline.
- :mod:`usam.adapters.card`: the model card (README.md with Hub metadata) written beside the weights.
"""

from __future__ import annotations

from .adapter import Adapter, AdapterConfig, load_adapter, read_adapter_dir
from .lora import LoraSettings
from .resolve import resolve_adapter

__all__ = ["Adapter", "AdapterConfig", "LoraSettings", "load_adapter", "read_adapter_dir", "resolve_adapter"]
