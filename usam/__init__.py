"""usam: ultrasound foundation models on Segment Anything.

A frozen SAM-family encoder (LiteMedSAM by default, bundled), LoRA adapters per organ, heads for
classification / detection / keypoints / automatic segmentation, and SAM's prompt decoder for clicks and boxes.
"""

from __future__ import annotations

from .backbones import BACKBONES, DEFAULT_BACKBONE, build_backbone
from .errors import UsamError
from .io import read_frames, read_image
from .model import UsamModel
from .predictor import Predictor
from .tracker import Tracker
from .version import __version__


def load(backbone: str = DEFAULT_BACKBONE, adapters=(), **kwargs) -> UsamModel:
    """Build a model on ``backbone`` with adapters given by local path or Hub id (resolved offline)."""
    return UsamModel.from_pretrained(backbone=backbone, adapters=list(adapters), **kwargs)


__all__ = ["__version__", "BACKBONES", "DEFAULT_BACKBONE", "Predictor", "Tracker", "UsamError", "UsamModel", "build_backbone", "load", "read_frames", "read_image"]
