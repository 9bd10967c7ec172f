"""transformers ``SamModel`` (SAM, MedSAM and other exports) from a local directory or the local HF cache.

Nothing is downloaded: ``from_pretrained(..., local_files_only=True)``. Preprocessing follows the
directory's ``preprocessor_config.json`` (longest edge, mean / std) when present, SAM's otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..geometry import Geometry
from .base import Backbone, sha256_file, sha256_state_dict
from .sam_style import sam_preprocess
from .sam_vit import PIXEL_MEAN, PIXEL_STD


def _preprocessor_settings(model_dir: Path | None) -> tuple[int, tuple, tuple]:
    """``(longest_edge, mean, std)`` (mean / std in 0-255 units) from ``preprocessor_config.json``."""
    size, mean, std = 1024, PIXEL_MEAN, PIXEL_STD
    cfg_path = model_dir / "preprocessor_config.json" if model_dir else None
    if cfg_path and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        size = int((cfg.get("size") or {}).get("longest_edge", size))
        scale = 1.0 / float(cfg.get("rescale_factor", 1 / 255))
        if "image_mean" in cfg:
            mean = tuple(float(m) * scale for m in cfg["image_mean"])
            std = tuple(float(s) * scale for s in cfg["image_std"])
    return size, mean, std


def _model_dir(model) -> Path | None:
    path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "")
    p = Path(path)
    return p if p.is_dir() else None


class HFSam(Backbone):
    """A transformers ``SamModel`` behind usam's backbone interface.

    Args:
      ref: a local directory holding ``config.json`` + weights, or a Hub id present in the local HF cache.
    """

    def __init__(self, ref: str):
        super().__init__()
        from transformers import SamModel  # lazy: transformers is heavy and only hf: backbones need it

        local = Path(ref).expanduser()
        if local.is_dir() and not any(local.glob("*.safetensors")):
            pickles = sorted(p.name for p in local.iterdir() if p.suffix.lower() in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
            if pickles:
                raise CheckpointError(
                    f"transformers model directory {ref!r} holds only pickled weights ({', '.join(pickles[:3])}): usam loads "
                    "transformers models from safetensors only (a pickle can run code). Convert it once where you trust it: "
                    "SamModel.from_pretrained(DIR).save_pretrained(NEW_DIR)"
                )
        try:
            model = SamModel.from_pretrained(ref, local_files_only=True, use_safetensors=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types (OSError, ValueError, pickle, safetensors)
            if not isinstance(exc, (OSError, ValueError)):
                raise CheckpointError(
                    f"transformers SamModel {ref!r} could not be loaded ({type(exc).__name__}: "
                    f"{(str(exc).splitlines() or [''])[0][:200]}): check its config.json and model.safetensors"
                ) from exc
            raise CheckpointError(
                f"transformers SamModel {ref!r} is not available offline: pass a local directory with config.json and "
                f"model.safetensors, or fetch it on a connected machine with `hf download {ref}` and copy the HF cache here. "
                f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})"
            ) from exc
        if model.config.model_type != "sam":
            raise CheckpointError(f"{ref!r} is a {model.config.model_type!r} model, not a SAM (`model_type: sam`)")
        model.eval()
        self.model = model
        self.image_encoder = model.vision_encoder
        self.name = f"hf:{ref}"
        model_dir = _model_dir(model) or (Path(ref) if Path(ref).is_dir() else None)
        _, self.pixel_mean, self.pixel_std = _preprocessor_settings(model_dir)
        self.input_size = int(model.config.vision_config.image_size)
        e = int(model.config.prompt_encoder_config.image_embedding_size)
        self.embedding_shape = (int(model.config.vision_config.output_channels), e, e)
        self.source = str(model_dir or ref)
        weights = sorted(model_dir.glob("*.safetensors")) if model_dir else []
        if weights:
            self.checksum = sha256_file(weights[0]) if len(weights) == 1 else sha256_state_dict(model.state_dict())
        else:
            self.checksum = sha256_state_dict(model.state_dict())

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        return sam_preprocess(image, self.input_size, self.pixel_mean, self.pixel_std)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.vision_encoder(pixel_values=x)[0]

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask_output=True, sparse_extra=None):
        p = max(t.shape[0] for t in (embeddings, *(x for x in (points[0] if points else None, boxes, mask_input, sparse_extra) if x is not None)))
        if embeddings.shape[0] != p:
            embeddings = embeddings.expand(p, -1, -1, -1)
        sparse, dense = self.model.prompt_encoder(
            input_points=points[0][:, None].float() if points else None,
            input_labels=points[1][:, None].long() if points else None,
            input_boxes=boxes[:, None].float() if boxes is not None else None,
            input_masks=mask_input,
        )
        if dense.shape[0] != p:
            dense = dense.expand(p, -1, -1, -1)
        if sparse_extra is not None:
            extra = sparse_extra[:, None].to(dense.dtype)
            sparse = extra if sparse is None else torch.cat([sparse.expand(p, -1, -1, -1), extra], dim=2)
        pe = self.model.get_image_wide_positional_embeddings().expand(p, -1, -1, -1)
        masks, iou = self.model.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )[:2]
        return masks[:, 0], iou[:, 0]
