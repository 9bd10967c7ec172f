"""Registration of the ``usam`` sub-commands beyond ``segment`` / ``backbones`` (one function each)."""

from __future__ import annotations

REGISTRY: list = []
