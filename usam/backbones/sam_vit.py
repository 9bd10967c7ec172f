"""SAM ViT-B / ViT-L / ViT-H from ``segment_anything``, with a checkpoint the user provides.

Input: longest side 1024 (segment-anything's ``ResizeLongestSide``), normalised by SAM's pixel
mean / std, zero-padded to 1024 x 1024. Embedding ``(B, 256, 64, 64)``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT

from ..errors import CheckpointError
from ..geometry import Geometry
from .base import sha256_file, sha256_state_dict
from .sam_style import SamStyleBackbone, build_prompt_decoder, load_state_checked, load_torch_checkpoint, sam_preprocess

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

#: segment-anything's three image-encoder sizes: (embed_dim, depth, num_heads, global_attn_indexes).
VIT_CONFIGS = {
    "sam_vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


class SamViT(SamStyleBackbone):
    """A segment-anything ViT backbone.

    Args:
      variant: ``"sam_vit_b"``, ``"sam_vit_l"`` or ``"sam_vit_h"``.
      checkpoint: path to segment-anything's ``sam_vit_*.pth``; ``None`` only with ``pretrained=False``.
      pretrained: load the checkpoint (True) or keep random weights (benchmarks, tests).
      tiny: a small random config with the same interface (img 256, patch 4, width 32, 2 blocks) for fast tests.
    """

    pixel_mean = PIXEL_MEAN
    pixel_std = PIXEL_STD

    def __init__(self, variant: str = "sam_vit_b", checkpoint: str | None = None, pretrained: bool = True, tiny: bool = False):
        if variant not in VIT_CONFIGS:
            raise CheckpointError(f"unknown SAM ViT variant {variant!r}: choose one of {sorted(VIT_CONFIGS)}")
        dim, depth, heads, global_idx = VIT_CONFIGS[variant]
        img, patch = 1024, 16
        if tiny:
            dim, depth, heads, global_idx, img, patch = 32, 2, 2, (1,), 256, 4
        encoder = ImageEncoderViT(
            depth=depth,
            embed_dim=dim,
            img_size=img,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=heads,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_idx,
            window_size=14,
            out_chans=256,
        )
        pe, md = build_prompt_decoder(img, (img // patch, img // patch))
        super().__init__(encoder, pe, md, img)
        self.name = variant + ("_tiny" if tiny else "")
        if not pretrained:
            self.source = "random init"
            self.checksum = sha256_state_dict(self.state_dict()) if tiny else ""
            return
        if checkpoint is None:
            raise CheckpointError(
                f"{variant} needs its segment-anything checkpoint: pass --checkpoint /path/to/{variant}.pth "
                "(usam downloads nothing)"
            )
        state = load_torch_checkpoint(checkpoint, variant)
        load_state_checked(self, state, f"{variant} checkpoint {str(checkpoint)!r}")
        self.source = str(checkpoint)
        self.checksum = sha256_file(checkpoint)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        return sam_preprocess(image, self.input_size, self.pixel_mean, self.pixel_std)
