"""Adapters: what one organ / task set adds to the frozen backbone.

- :mod:`usam.adapters.settings`: typed settings sections checked in one place (unknown keys named, defaults once).
- :mod:`usam.adapters.lora`: :class:`LoraSettings`; peft LoRA injection, switching, state dicts, merging.
- :mod:`usam.adapters.config`: :class:`AdapterConfig` (``config.json``) and :class:`DecoderSettings`.
- :mod:`usam.adapters.layout`: the files of an adapter directory; where one may be written.
- :mod:`usam.adapters.resolve`: an adapter reference (directory or Hub id in the local cache) to a directory, offline.
- :mod:`usam.adapters.card`: the model card (README.md with Hub metadata) written beside the weights.
- :mod:`usam.adapters.validate`: :func:`validate_adapter_dir`, the one check of an adapter directory;
  :func:`rewrite_card`, its card rebuilt from its files.
- :mod:`usam.adapters.adapter`: :class:`Adapter` (heads + tuned prompt decoder + encoder LoRA):
  ``save_pretrained`` / ``from_pretrained``; :func:`install_adapter` into a model.
"""

from __future__ import annotations

from .adapter import Adapter, install_adapter
from .config import AdapterConfig, DecoderSettings
from .lora import LoraSettings
from .resolve import resolve_adapter
from .validate import AdapterCheck, rewrite_card, validate_adapter_dir

__all__ = ["Adapter", "AdapterCheck", "AdapterConfig", "DecoderSettings", "LoraSettings", "install_adapter",
           "resolve_adapter", "rewrite_card", "validate_adapter_dir"]
