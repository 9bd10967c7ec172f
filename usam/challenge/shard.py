"""Which share of the work this process does when ``usam predict`` runs under ``torchrun`` / ``accelerate launch``.

A launcher starts N processes and gives each its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`current_shard` joins them into one process group the way ``accelerate``
does (:class:`accelerate.PartialState`: NCCL on GPUs, gloo on CPUs). Without a launcher it returns the
single-process :class:`Shard`: no process group, nothing imported, no cost.

The two collectives, :func:`agree` (rank 0 works, every rank gets its answer) and :func:`each` (every rank works,
every rank gets every answer), are reached by every rank exactly once whether its work succeeded or raised: an
error travels with the collective and is raised on every rank, so a rank that fails never leaves the others
waiting. (A process that dies outright is the launcher's to handle: torchrun stops the other workers.)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from ..errors import UsamError

__all__ = ["Shard", "agree", "current_shard", "each", "launched"]

T = TypeVar("T")

#: How long a rank waits at a collective for the others (rank 0 checking a large folder's earlier outputs, a
#: slower shard): longer than NCCL's 10-minute default; errors do not wait for it, they travel with the collective.
WAIT_S = 4 * 3600


@dataclass(frozen=True)
class Shard:
    """This process's place among the launched ones: ``rank`` of ``world_size``; ``device`` it should use
    (``None``: as asked)."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def take(self, items: list[T]) -> list[T]:
        """This rank's items: every ``world_size``-th one from ``rank`` on (disjoint across ranks, sizes within 1)."""
        return items[self.rank :: self.world_size]


def launched() -> bool:
    """Whether a launcher started several processes (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def current_shard(device: str | None = "auto") -> Shard:
    """This process's :class:`Shard`; under a launcher the process group is created (once) first.

    ``device``: what the user asked for (``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...). The group runs over gloo
    when that is the CPU or no GPU is present (as ``usam train`` does), else NCCL; ``auto`` / ``cuda`` become this
    rank's own GPU (``cuda:LOCAL_RANK``).
    """
    if not launched():
        return Shard()
    import torch
    from accelerate import PartialState

    device = device or "auto"
    no_gpu = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    state = PartialState(cpu=device == "cpu" or no_gpu, timeout=timedelta(seconds=WAIT_S))
    mine = str(state.device) if device in ("auto", "cuda") else device
    return Shard(int(state.process_index), int(state.num_processes), mine)


# --------------------------------------------------------------------------------------------- collectives
def _outcome(fn: Callable[[], T]) -> tuple[bool, object]:
    """``(True, fn())`` or ``(False, the exception it raised)``."""
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - every error must reach the other ranks
        return False, exc


def _portable(outcome: tuple[bool, object]) -> tuple[bool, object]:
    """An outcome that pickles: an exception that does not travels as a :class:`UsamError` with its message."""
    ok, value = outcome
    if ok:
        return outcome
    try:
        pickle.loads(pickle.dumps(value))
        return outcome
    except Exception:  # noqa: BLE001
        return False, UsamError(f"{type(value).__name__}: {value}")


def agree(shard: Shard, fn: Callable[[], T]) -> T:
    """Rank 0 runs ``fn``; every rank returns its result or raises its error (single process: ``fn()``)."""
    if not shard.sharded:
        return fn()
    import torch.distributed as dist

    box = [_portable(_outcome(fn)) if shard.main else None]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def each(shard: Shard, fn: Callable[[], T]) -> list[T]:
    """Every rank runs ``fn``; every rank gets the results of all, in rank order (single process: ``[fn()]``).

    Raises:
      This rank's own error, else the error of the lowest rank that raised one.
    """
    if not shard.sharded:
        return [fn()]
    import torch.distributed as dist

    mine = _outcome(fn)
    outcomes: list = [None] * shard.world_size
    dist.all_gather_object(outcomes, _portable(mine))
    for ok, value in [mine, *outcomes]:
        if not ok:
            raise value
    return [value for _, value in outcomes]
