"""Training examples: dataset rows turned into (target, encoder input) pairs for the three training modes.

- ``cache``: the bare encoder's embedding of each image, from :class:`~usam.train.cache.EmbeddingStore`, memoised;
  no encoder input (the embedding is on the example). With ``views > 1`` training draws one of ``views`` views per
  row (view 0 as read and memoised, the others augmented once, deterministically, read from the store each time).
- ``lora``: the image, read (and augmented in training) every time; input ``(B, 3, S, S)``.
- ``tail``: what enters encoder stage ``start`` for one of ``views`` views of the image (view 0 as read, the
  others augmented once, deterministically), from :class:`~usam.train.cache.ActivationStore`; input ``(B, N, C)``.
  Training draws a view per row; validation and the probe use view 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.augment import DEFAULT_SCALE, Augment, AugmentParams
from ..data.fmc import Sample
from ..embedding import image_digest
from ..geometry import Geometry
from ..io import read_image, read_mask
from ..tasks import KINDS, Target
from .cache import ActivationStore, EmbeddingStore, augment_labels


@dataclass
class Example:
    sample: Sample
    target: Target
    embedding: torch.Tensor | None  # (C, h, w) fp16, cache mode
    geometry: Geometry


def _labels(sample: Sample) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The row's ``(mask (H, W), box (4,), points (N, 2))``, ``None`` where its kind has none."""
    mask = read_mask(sample.mask_path) if sample.kind == "segmentation" else None
    box = np.asarray(sample.box, dtype=np.float64) if sample.box is not None else None
    return mask, box, sample.points


class ExampleSource:
    """Rows -> examples and encoder inputs (see the module docstring).

    Args:
      model: the :class:`~usam.model.UsamModel` being trained (its backbone preprocesses and encodes).
      mode: ``cache``, ``lora`` or ``tail``.
      store: an :class:`EmbeddingStore` (cache) or :class:`ActivationStore` (tail); ``None`` for lora.
      augment: augment images (lora) / views after the first (tail, cache).
      seed: seed of the augmentation and view draws.
      views: tail / cache mode: views per training image (view 0 un-augmented).
      no_flip: tail / cache mode: image paths whose views must not be mirrored (an ordered-keypoint row uses them).
      scale: the augmentation's ``(min, max)`` zoom (``train.augment_scale``).
    """

    def __init__(self, model, mode: str, store: EmbeddingStore | ActivationStore | None, augment: bool, seed: int,
                 views: int = 1, no_flip: set[str] | frozenset = frozenset(), scale: tuple[float, float] = DEFAULT_SCALE):
        self.model, self.mode, self.store = model, mode, store
        self.augment, self.seed, self.scale = augment, int(seed), tuple(scale)
        self.views = int(views) if augment else 1
        self.no_flip = set(no_flip)
        self.rng = np.random.default_rng(seed)
        self._memo: dict[tuple[int, int], Example] = {}
        self._meta_memo: dict[str, tuple[str, tuple[int, int]]] = {}

    # ------------------------------------------------------------------ batches
    def batch(self, rows: list[Sample], train: bool) -> tuple[list[Example], torch.Tensor | None]:
        """Examples of ``rows`` and their stacked encoder input (``None`` in cache mode); ``train``: augmented /
        random views, else the images as read."""
        if self.mode == "cache":
            return [self.cached(r, self._draw_view() if train else 0) for r in rows], None
        if self.mode == "tail":
            pairs = [self.view(r, self._draw_view() if train else 0) for r in rows]
        else:
            pairs = [self.fresh(r, augment=train and self.augment) for r in rows]
        inputs = torch.cat([p[0] for p in pairs]).to(self.model.device)
        return [p[1] for p in pairs], inputs

    def _draw_view(self) -> int:
        return int(self.rng.integers(self.views)) if self.views > 1 else 0

    def cached(self, sample: Sample, k: int = 0) -> Example:
        """Cache mode: the example of view ``k`` of the row's image with its embedding ``(C, h, w)`` fp16 (view 0
        memoised with it; an augmented view's labels are memoised and its embedding read from the store)."""
        key = (id(sample), k)
        if k == 0:
            if key not in self._memo:
                emb = self.store.get(sample.image_path)
                self._memo[key] = Example(sample, KINDS[sample.kind].target(sample, emb.geometry), emb.embedding[0].to(torch.float16), emb.geometry)
            return self._memo[key]
        digest, hw = self.meta(sample.image_path)
        emb = self.store.get(sample.image_path, self.view_params(sample.image_path, digest, hw, k))
        if key not in self._memo:
            self._memo[key] = self._moved(sample, digest, hw, k, emb.geometry)
        return replace(self._memo[key], embedding=emb.embedding[0].to(torch.float16))

    def _moved(self, sample: Sample, digest: str, hw: tuple[int, int], k: int, geo: Geometry) -> Example:
        """The example of view ``k`` without an embedding: the row's labels moved as the view moves the image."""
        mask, box, points = augment_labels(self.view_params(sample.image_path, digest, hw, k), hw, *_labels(sample))
        return Example(sample, KINDS[sample.kind].target(sample, geo, mask=mask, box=box, points=points), None, geo)

    def fresh(self, sample: Sample, augment: bool) -> tuple[torch.Tensor, Example]:
        """Read (and augment) the image; returns the model input ``(1, 3, S, S)`` and the example."""
        image = read_image(sample.image_path)
        mask, box, points = _labels(sample)
        if augment:
            flip = sample.kind not in ("regression", "detection")
            image, mask, box, points = Augment(p=0.5, flip=flip, scale=self.scale, rng=self.rng)(image, mask=mask, box=box, points=points)
        x, geo = self.model.backbone.preprocess(image)
        return x, Example(sample, KINDS[sample.kind].target(sample, geo, mask=mask, box=box, points=points), None, geo)

    # ------------------------------------------------------------------ tail mode
    def view(self, sample: Sample, k: int) -> tuple[torch.Tensor, Example]:
        """Stage input ``(1, N, C)`` of view ``k`` of the row's image and the example with its labels moved alike."""
        digest, hw = self.meta(sample.image_path)
        params = self.view_params(sample.image_path, digest, hw, k)
        h, geo = self.store.get(sample.image_path, digest, params)
        key = (id(sample), k)
        if key not in self._memo:
            self._memo[key] = self._moved(sample, digest, hw, k, geo)
        return h[None], self._memo[key]

    def view_params(self, path, digest: str, hw: tuple[int, int], k: int) -> AugmentParams:
        """View ``k`` of an image: identity for ``k = 0``, else the first draw that changes something, seeded by
        (seed, k, image content)."""
        if k == 0:
            return AugmentParams.identity()
        aug = Augment(p=0.5, flip=str(path) not in self.no_flip, scale=self.scale,
                      rng=np.random.default_rng([self.seed, k, int(digest[:15], 16)]))
        params = aug.sample(*hw)
        while params == AugmentParams.identity():  # each transform group is drawn with p = 0.5: 1 in 32 draws nothing
            params = aug.sample(*hw)
        return params

    def meta(self, path) -> tuple[str, tuple[int, int]]:
        """Content hash and ``(H, W)`` of an image file (read once)."""
        p = str(path)
        if p not in self._meta_memo:
            image = read_image(p)
            self._meta_memo[p] = (image_digest(image), tuple(image.shape[:2]))
        return self._meta_memo[p]

    def build_views(self, items: list[tuple[str, int]], desc: str) -> None:
        """Compute every missing stage input (tail) / embedding (cache) of views ``0..n-1`` of each ``(path, n)``
        (progress bar)."""
        for p, views in tqdm(items, desc=desc, unit="img", disable=not items):
            digest, hw = self.meta(p)
            for k in range(views):
                params = self.view_params(p, digest, hw, k)
                if not self.store.has(digest, params):
                    self.store.get(p, digest, params) if self.mode == "tail" else self.store.get(p, params)


def mask_views(store: EmbeddingStore, samples: list[Sample], views: int = 1, seed: int = 0, desc: str = "views"):
    """Yield ``(sample, embedded, mask)`` for views ``0..views-1`` of each segmentation row: view 0 as read, the
    others augmented as cache-mode training augments them (:meth:`ExampleSource.view_params`, seeded by ``seed``: the
    views a ``train.views`` run with that seed cached are reused), ``embedded`` from ``store``
    (:class:`~usam.embedding.Embedded`) and ``mask`` the ``(H, W)`` class-id mask moved with the image."""
    source = ExampleSource(store.model, "cache", store, augment=True, seed=seed, views=views)
    for s in tqdm(samples, desc=desc, unit="img"):
        gt0 = read_mask(s.mask_path)
        digest, hw = source.meta(s.image_path) if views > 1 else (None, gt0.shape)
        for k in range(views):
            params = source.view_params(s.image_path, digest, hw, k) if k else None
            yield s, store.get(s.image_path, params), gt0 if params is None else augment_labels(params, hw, mask=gt0)[0]
