"""On-disk cache of image embeddings for training on the CPU.

Embeddings are computed once (progress bar), stored as fp16 safetensors under
``$USAM_CACHE`` (default ``~/.cache/usam``) / ``embeddings/<encoder key hash>/<image hash>.safetensors``,
outside the repository, and reused by every later run that uses the same frozen encoder.
Writes are atomic (temp file + rename): an interrupted run leaves no broken entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..embedding import Embedded, image_digest
from ..geometry import Geometry
from ..io import read_image


def cache_root() -> Path:
    return Path(os.environ.get("USAM_CACHE", Path.home() / ".cache" / "usam"))


class EmbeddingStore:
    """Embeddings of the bare (LoRA-free) encoder of ``model``, by image content."""

    def __init__(self, model, root: str | os.PathLike | None = None):
        self.model = model
        # fp32 runtimes agree with eager fp32 far below the fp16 the embeddings are stored in: one cache for all;
        # bf16 kernels differ between runtimes (and CPUs): keyed by runtime
        key = f"{model.backbone.name}|{model.backbone.checksum}|{model.precision}"
        if model.precision != "fp32" and model.runtime != "torch":
            key += f"|{model.runtime}"
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

    def path_for(self, digest: str) -> Path:
        return self.dir / f"{digest}.safetensors"

    def get(self, path: str | os.PathLike) -> Embedded:
        """Embedding of the image file at ``path``: from disk, or computed now and stored."""
        digest, image = self._digest(path)
        f = self.path_for(digest)
        if f.exists():
            t = load_file(str(f))
            g = t["geometry"].tolist()
            return Embedded(t["embedding"].float()[None], Geometry((g[0], g[1]), (g[2], g[3]), g[4]), digest)
        if image is None:
            image = read_image(path)
        adapter = self.model.active_adapter
        if adapter is not None and self.model.adapter.lora_name:
            self.model.set_adapter(None)
        try:
            emb = self.model.embed(image)
        finally:
            if adapter is not None and self.model.active_adapter != adapter:
                self.model.set_adapter(adapter)
        geo = emb.geometry
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        save_file(
            {
                "embedding": emb.embedding[0].to(torch.float16).contiguous().cpu(),
                "geometry": torch.tensor([*geo.original_hw, *geo.resized_hw, geo.input_size], dtype=torch.int64),
            },
            str(tmp),
        )
        os.replace(tmp, f)
        return Embedded(emb.embedding[0].to(torch.float16).float()[None].cpu(), geo, digest)

    def build(self, paths, desc: str = "embedding cache") -> None:
        """Compute every missing embedding of ``paths`` with a progress bar."""
        unique = list(dict.fromkeys(str(p) for p in paths))
        missing = [p for p in unique if not self.path_for(self._digest(p)[0]).exists()]
        for p in tqdm(missing, desc=desc, unit="img", disable=not missing):
            self.get(p)
