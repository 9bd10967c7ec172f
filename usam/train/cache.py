"""On-disk caches for training on the CPU: image embeddings (``mode: cache``) and encoder-stage inputs (``mode: tail``).

Entries are computed once (progress bar), stored as fp16 safetensors under ``$USAM_CACHE`` (default
``~/.cache/usam``), outside the repository, and reused by every later run with the same frozen encoder:

- :class:`EmbeddingStore`: ``embeddings/<encoder key hash>/<image hash>.safetensors``, the encoder's embedding
  ``(256, 64, 64)`` (2 MB in fp16; the bare encoder's, or through an adapter's encoder LoRA, whose weights are part
  of the key), and ``<image hash>.<view hash>.safetensors`` for augmented views;
- :class:`ActivationStore`: ``activations/<encoder key + stage hash>/<image hash + view hash>.safetensors``, what
  enters encoder stage ``start`` for one augmented view of an image, e.g. LiteMedSAM's stage 3 input
  ``(4096, 320)`` (2.6 MB in fp16, 5.2 MB in fp32; fp16 changes the embedding by at most ~1e-4).

Writes are atomic (temp file + rename): an interrupted run leaves no broken entry.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..adapters.lora import lora_digest
from ..data.augment import AugmentParams, apply_augment
from ..embedding import Embedded, image_digest
from ..geometry import Geometry
from ..io import read_image


def cache_root() -> Path:
    return Path(os.environ.get("USAM_CACHE", Path.home() / ".cache" / "usam"))


class EmbeddingStore:
    """Embeddings of ``model``'s encoder as its active adapter sees them, by image content: the bare encoder's, or
    through the active adapter's encoder LoRA when it has one (keyed by those LoRA weights: retrained weights get
    entries of their own). The adapter active when the store is made is the one whose embeddings it holds."""

    def __init__(self, model, root: str | os.PathLike | None = None):
        self.model = model
        adapter = model.adapter
        #: the adapter whose encoder LoRA the entries pass through (``None``: the bare encoder)
        self.lora_adapter = model.active_adapter if adapter is not None and adapter.lora_name else None
        # fp32 runtimes agree with eager fp32 far below the fp16 the embeddings are stored in: one cache for all;
        # bf16 kernels differ between runtimes (and CPUs): keyed by runtime
        key = f"{model.backbone.name}|{model.backbone.checksum}|{model.precision}"
        if model.precision != "fp32" and model.runtime != "torch":
            key += f"|{model.runtime}"
        if self.lora_adapter is not None:
            key += f"|lora:{lora_digest(model.backbone.image_encoder, adapter.lora_name)}"
        self.dir = Path(root or cache_root()) / "embeddings" / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        self._digests: dict[str, str] = {}

    def _digest(self, path: str | os.PathLike) -> tuple[str, np.ndarray | None]:
        p = str(path)
        if p in self._digests:
            return self._digests[p], None
        image = read_image(p)
        d = image_digest(image)
        self._digests[p] = d
        return d, image

    def path_for(self, digest: str, params: AugmentParams | None = None) -> Path:
        """The entry of the image with content hash ``digest``, or of its view augmented by ``params``."""
        if params is None or params == AugmentParams.identity():
            return self.dir / f"{digest}.safetensors"
        return self.dir / f"{digest}.{hashlib.sha1(repr(params).encode()).hexdigest()[:16]}.safetensors"

    def has(self, digest: str, params: AugmentParams | None = None) -> bool:
        return self.path_for(digest, params).exists()

    def get(self, path: str | os.PathLike, params: AugmentParams | None = None) -> Embedded:
        """Embedding of the image file at ``path`` (augmented by ``params`` first, if given): from disk, or computed
        now and stored."""
        digest, image = self._digest(path)
        f = self.path_for(digest, params)
        if f.exists():
            t = load_file(str(f))
            g = t["geometry"].tolist()
            return Embedded(t["embedding"].float()[None], Geometry((g[0], g[1]), (g[2], g[3]), g[4]), f.stem)
        if image is None:
            image = read_image(path)
        if params is not None:
            image = apply_augment(image, params=params)[0]
        with self.model.using_adapter(self.lora_adapter):  # the store's encoder, whichever adapter is active now
            emb = self.model.embed(image)
        geo = emb.geometry
        _save_atomic({"embedding": emb.embedding[0].to(torch.float16).contiguous().cpu(), "geometry": _geometry_tensor(geo)}, f)
        return Embedded(emb.embedding[0].to(torch.float16).float()[None].cpu(), geo, f.stem)

    def build(self, paths, desc: str = "embedding cache") -> None:
        """Compute every missing embedding of ``paths`` with a progress bar."""
        unique = list(dict.fromkeys(str(p) for p in paths))
        missing = [p for p in unique if not self.path_for(self._digest(p)[0]).exists()]
        for p in tqdm(missing, desc=desc, unit="img", disable=not missing):
            self.get(p)


def _geometry_tensor(geo: Geometry) -> torch.Tensor:
    return torch.tensor([*geo.original_hw, *geo.resized_hw, geo.input_size], dtype=torch.int64)


def _geometry(t: torch.Tensor) -> Geometry:
    g = t.tolist()
    return Geometry((g[0], g[1]), (g[2], g[3]), g[4])


def _save_atomic(tensors: dict[str, torch.Tensor], f: Path) -> None:
    tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, f)


def geometric_part(params: AugmentParams) -> AugmentParams:
    """``params`` without its intensity transforms (labels only move with the geometry)."""
    return replace(params, brightness=0.0, contrast=1.0, gamma=1.0, speckle=0.0, blur_sigma=0.0, noise_seed=0)


def augment_labels(params: AugmentParams, hw: tuple[int, int], mask=None, box=None, points=None):
    """Labels of an ``(H, W)`` image moved as :func:`~usam.data.augment.apply_augment` moves them; ``(mask, box, points)``."""
    blank = np.zeros(hw, dtype=np.uint8)
    _, mask, box, points = apply_augment(blank, mask, box, points, geometric_part(params))
    return mask, box, points


class ActivationStore:
    """What enters encoder stage ``start`` of ``model``'s bare backbone, per image and augmented view.

    The backbone must run in stages (``stage_input(x, start)`` / ``encode_from(h, start)``, e.g. LiteMedSAM). An entry
    is keyed by the image content, the view's :class:`~usam.data.augment.AugmentParams` and (in the folder name)
    the backbone name + checksum and ``start``; it holds ``activation`` ``(N, C)`` fp16 and the geometry.
    """

    def __init__(self, model, start: int, root: str | os.PathLike | None = None):
        self.model, self.start = model, int(start)
        key = f"{model.backbone.name}|{model.backbone.checksum}|stage{self.start}|fp32"
        self.dir = Path(root or cache_root()) / "activations" / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str, params: AugmentParams) -> Path:
        view = hashlib.sha1(f"{digest}|{params!r}".encode()).hexdigest()
        return self.dir / f"{view}.safetensors"

    def get(self, path: str | os.PathLike, digest: str, params: AugmentParams) -> tuple[torch.Tensor, Geometry]:
        """``(N, C)`` float32 stage input of the image at ``path`` (content hash ``digest``) augmented by ``params``,
        and its geometry: from disk, or computed now (fp32, stored fp16)."""
        f = self.path_for(digest, params)
        if f.exists():
            t = load_file(str(f))
            return t["activation"].float(), _geometry(t["geometry"])
        view = apply_augment(read_image(path), params=params)[0]
        x, geo = self.model.backbone.preprocess(view)
        with torch.no_grad():
            h = self.model.backbone.stage_input(x.to(self.model.device), self.start)[0]
        h16 = h.to(torch.float16).contiguous().cpu()
        _save_atomic({"activation": h16, "geometry": _geometry_tensor(geo)}, f)
        return h16.float(), geo

    def has(self, digest: str, params: AugmentParams) -> bool:
        return self.path_for(digest, params).exists()
