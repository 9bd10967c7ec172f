"""Registration of the ``usam`` sub-commands beyond ``segment`` / ``backbones``.

Each feature keeps its command next to it in :mod:`usam.commands` and exposes ``register(subparsers)``.
"""

from __future__ import annotations

from .commands.challenge import register as _challenge
from .commands.demo import register as _demo
from .commands.export import register as _export
from .commands.hub import register as _hub
from .commands.train import register as _train

REGISTRY: list = [_train, _challenge, _hub, _demo, _export]
