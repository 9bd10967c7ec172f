"""Shared pieces of backbones built from ``segment_anything`` modules (LiteMedSAM, SAM ViT-B/L/H)."""

from __future__ import annotations

import weakref
from pathlib import Path

import cv2
import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from ..errors import CheckpointError
from ..geometry import Geometry
from .base import Backbone


def build_prompt_decoder(input_size: int, embedding_hw: tuple[int, int], embed_dim: int = 256):
    """SAM's prompt encoder and mask decoder (identical in SAM ViT-B/L/H and LiteMedSAM)."""
    prompt_encoder = PromptEncoder(
        embed_dim=embed_dim,
        image_embedding_size=embedding_hw,
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
        transformer_dim=embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def load_state_checked(module: torch.nn.Module, state: dict, what: str) -> None:
    """``load_state_dict(strict=True)`` that turns a shape / key mismatch into a :class:`CheckpointError`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            detail.append(f"{len(wrong)} tensors of the wrong shape (first: {wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise CheckpointError(
            f"{what} does not fit this architecture: " + "; ".join(detail)
            + ". Check that the checkpoint matches the backbone you chose (see `usam backbones`)."
        )
    module.load_state_dict(state, strict=True)


def load_torch_checkpoint(path, what: str) -> dict:
    """Load a ``.pth`` state dict safely (``weights_only=True``, on the CPU)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what}: checkpoint {str(p)!r} does not exist. Pass --checkpoint with the path to the weights file.")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{what}: {str(p)!r} is not a readable PyTorch state dict ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: {str(p)!r} does not hold a state dict of tensors")
    # segment-anything's Sam keeps its normalisation constants as buffers; usam applies them in preprocess.
    return {k: v for k, v in state.items() if k not in ("pixel_mean", "pixel_std")}


class SamStyleBackbone(Backbone):
    """Backbone made of an image encoder plus ``segment_anything``'s ``PromptEncoder`` / ``MaskDecoder``."""

    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None

    def __init__(self, image_encoder, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, input_size: int):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.input_size = input_size
        h, w = prompt_encoder.image_embedding_size
        self.embedding_shape = (prompt_encoder.embed_dim, h, w)

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask_output=True, sparse_extra=None):
        return sam_decode(self.prompt_encoder, self.mask_decoder, embeddings, points, boxes, mask_input, multimask_output, sparse_extra)


def sam_decode(prompt_encoder, mask_decoder, embeddings, points=None, boxes=None, mask_input=None,
               multimask_output=True, sparse_extra=None):
    """Prompt encoder + mask decoder of segment-anything; arguments as :meth:`Backbone.decode`."""
    sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    if sparse_extra is not None:
        if sparse.shape[0] != sparse_extra.shape[0]:
            sparse = sparse.expand(sparse_extra.shape[0], -1, -1)
        sparse = torch.cat([sparse, sparse_extra.to(sparse.dtype)], dim=1)
        if dense.shape[0] != sparse.shape[0]:
            dense = dense.expand(sparse.shape[0], -1, -1, -1)
    return run_mask_decoder(mask_decoder, embeddings, dense_pe(prompt_encoder), sparse, dense, multimask_output)


_DENSE_PE: weakref.WeakKeyDictionary[PromptEncoder, tuple[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def dense_pe(prompt_encoder: PromptEncoder) -> torch.Tensor:
    """``prompt_encoder.get_dense_pe()`` ``(1, C, h, w)``, computed once per positional-encoding matrix.

    It depends only on that (frozen) buffer, yet costs a ``(h * w, 2) @ (2, C / 2)`` matmul + sin / cos per call
    (8 ms on one busy core, a tenth of a click); recomputed when the buffer is replaced or written in place
    (its version), or the grad / inference / autocast mode differs.
    """
    g = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    key = (g.data_ptr(), g._version, g.device, torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
           torch.is_autocast_enabled(g.device.type))
    hit = _DENSE_PE.get(prompt_encoder)
    if hit is None or hit[0] != key:
        hit = (key, prompt_encoder.get_dense_pe())
        _DENSE_PE[prompt_encoder] = hit
    return hit[1]


def run_mask_decoder(decoder: MaskDecoder, image_embeddings, image_pe, sparse, dense, multimask_output: bool):
    """``segment_anything``'s ``MaskDecoder.forward`` with a batch of images as well as a batch of prompts.

    ``image_embeddings`` is ``(1, C, h, w)`` (shared by all ``P`` prompt sets, as in segment-anything)
    or ``(P, C, h, w)`` (one image per prompt set, for training on batches).
    Returns low-res logits ``(P, M, 4h, 4w)`` and IoU predictions ``(P, M)``: the 3 multimask candidates,
    or the single-mask output.
    """
    masks, iou_pred = predict_masks(decoder, image_embeddings, image_pe, sparse, dense)
    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, sl], iou_pred[:, sl]


def predict_masks(decoder: MaskDecoder, image_embeddings, image_pe, sparse, dense):
    """``segment_anything``'s ``MaskDecoder.predict_masks`` (batched images allowed, see :func:`run_mask_decoder`):
    every output token's mask ``(P, 1 + 3, 4h, 4w)`` and IoU ``(P, 1 + 3)``, single-mask output first."""
    p = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(p, -1, -1)
    tokens = torch.cat((output_tokens, sparse.to(output_tokens.dtype)), dim=1)
    src = image_embeddings if image_embeddings.shape[0] == p else image_embeddings.expand(p, -1, -1, -1)
    src = src + dense
    pos_src = image_pe.expand(p, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(decoder.num_mask_tokens)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)


def resize_longest_side_area(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize so the longest side is ``long_side`` with area interpolation (as LiteMedSAM was trained)."""
    h, w = image.shape[:2]
    geo = Geometry.for_image(h, w, long_side)
    nh, nw = geo.resized_hw
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)


def pad_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(..., h, w)`` -> ``(..., size, size)``, zero padding at the bottom / right."""
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, size - w, 0, size - h))


def sam_preprocess(image: np.ndarray, size: int, mean, std) -> tuple[torch.Tensor, Geometry]:
    """segment-anything's preprocessing: ResizeLongestSide, normalise by pixel mean / std, pad."""
    geo = Geometry.for_image(image.shape[0], image.shape[1], size)
    resized = ResizeLongestSide(size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).float()
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return pad_to_square(x, size).unsqueeze(0), geo
