"""Image embeddings computed once per image and cached by image content.

The cache key is the SHA-1 of the pixels (plus shape) and of everything that changes the encoder's
output: backbone checksum, active LoRA adapter, precision. A second prompt, a second head or a
second task on the same image never runs the encoder again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import Geometry


def image_digest(image: np.ndarray) -> str:
    """Content hash of an image array (pixels, shape and dtype)."""
    h = hashlib.sha1(np.ascontiguousarray(image).view(np.uint8).data)
    h.update(str((image.shape, str(image.dtype))).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Embedded:
    """One encoded image.

    Attributes:
      embedding: ``(1, C, h, w)`` image embedding, e.g. ``(1, 256, 64, 64)``.
      geometry: how the original image maps onto the model input.
      key: cache key it is stored under.
    """

    embedding: torch.Tensor
    geometry: Geometry
    key: str


class EmbeddingCache:
    """A small LRU cache of :class:`Embedded` values."""

    def __init__(self, capacity: int = 16):
        self.capacity = max(0, int(capacity))
        self._items: OrderedDict[str, Embedded] = OrderedDict()

    def get(self, key: str) -> Embedded | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, item: Embedded) -> None:
        if self.capacity == 0:
            return
        self._items[item.key] = item
        self._items.move_to_end(item.key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
