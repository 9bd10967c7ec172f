"""Registration of the ``usam`` sub-commands beyond ``segment`` / ``backbones`` (one function each)."""

from __future__ import annotations

from .commands.train import register as _train

REGISTRY: list = [_train]

from .commands.challenge import register as _challenge  # noqa: E402

REGISTRY.append(_challenge)

from .commands.hub import register as _hub  # noqa: E402

REGISTRY.append(_hub)
from .commands.demo import register as _demo  # noqa: E402

REGISTRY.append(_demo)
