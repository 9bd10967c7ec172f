"""Shared fixtures: the real dev data, one real LiteMedSAM model, and two tiny random backbones.

Models are built once per test session (building LiteMedSAM and running its encoder take seconds on a
CPU); tests that count encoder calls read ``model.encoder_calls`` before and after, never absolute values.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import pytest
import torch

from usam.ops.masks import mask_box

#: ../shared/data/fmc_uia_dev seen from the repository root (CI has it; see ../shared/data/README.md).
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmc_uia_dev"

#: Non-square size (H, W) used to check coordinate maps.
ODD_HW = (300, 500)


def _require_data() -> Path:
    if not (DATA_ROOT / "test" / "csv_files" / "breast_lesion.csv").is_file():
        pytest.skip(f"real FMC_UIA dev data not found at {DATA_ROOT} (expected ../shared/data/fmc_uia_dev beside the repo)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/data/fmc_uia_dev``; skips the test when it is missing."""
    return _require_data()


def breast_lesion_rows(root: Path, n: int = 20, split: str = "test") -> list[tuple[Path, Path]]:
    """First ``n`` (image, mask) paths of ``<split>/csv_files/breast_lesion.csv`` (paths relative to csv_files/)."""
    csv_dir = root / split / "csv_files"
    with open(csv_dir / "breast_lesion.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [((csv_dir / r["image_path"]).resolve(), (csv_dir / r["mask_path"]).resolve()) for r in rows]


@pytest.fixture(scope="session")
def real_case(data_root):
    """The first breast_lesion test image: ``(image_path, image (H, W, 3) uint8, lesion mask (H, W) bool, box)``."""
    from usam.io import read_image, read_mask

    image_path, mask_path = breast_lesion_rows(data_root, 1)[0]
    image = read_image(image_path)
    gt = read_mask(mask_path) > 0
    return image_path, image, gt, mask_box(gt)


@pytest.fixture(scope="session")
def litemedsam_model():
    """A ``UsamModel`` on the real, bundled LiteMedSAM weights (built once per session)."""
    from usam import UsamModel, build_backbone

    return UsamModel(build_backbone("litemedsam"))


@pytest.fixture(scope="session")
def tiny_vit():
    """A tiny random SAM ViT backbone (256 px input, 64 x 64 embedding); seeded, so reproducible."""
    from usam import build_backbone

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_backbone("sam_vit_b", pretrained=False, tiny=True)


def tiny_sam_config():
    """A small ``transformers.SamConfig``: 256 px input, patch 4 -> 64 x 64 x 256 embedding, default mask decoder."""
    from transformers import SamConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=256,
        patch_size=4,
        output_channels=256,
        global_attn_indexes=[1],
        window_size=8,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(image_size=256, patch_size=4, image_embedding_size=64)
    return SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict())


@pytest.fixture(scope="session")
def hf_sam_dir(tmp_path_factory) -> Path:
    """A directory holding a tiny random ``transformers.SamModel`` (``config.json`` + ``model.safetensors``)."""
    from transformers import SamModel

    out = tmp_path_factory.mktemp("hf_tiny_sam")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        SamModel(tiny_sam_config()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def hf_backbone(hf_sam_dir):
    """``build_backbone("hf:<dir>")`` on :func:`hf_sam_dir`."""
    from usam import build_backbone

    return build_backbone(f"hf:{hf_sam_dir}")


@contextlib.contextmanager
def capture_prompts(backbone):
    """Record what reaches a backbone's prompt encoder, in model-input pixels.

    Yields a list that receives one dict per prompt-encoder call with ``points (P, N, 2)``, ``labels (P, N)``,
    ``boxes (P, 4)`` and ``masks (P, 1, 256, 256)`` (``None`` where absent), for segment-anything style
    backbones (``backbone.prompt_encoder``) and transformers ones (``backbone.model.prompt_encoder``).
    """
    calls: list[dict] = []

    def _np(t):
        return None if t is None else t.detach().float().cpu().numpy()

    if hasattr(backbone, "prompt_encoder"):  # segment_anything PromptEncoder(points=(coords, labels), boxes, masks)
        def hook(_module, args, kwargs):
            pts = kwargs.get("points")
            calls.append({
                "points": _np(pts[0]) if pts is not None else None,
                "labels": _np(pts[1]) if pts is not None else None,
                "boxes": _np(kwargs.get("boxes")),
                "masks": _np(kwargs.get("masks")),
            })

        module = backbone.prompt_encoder
    else:  # transformers SamPromptEncoder(input_points (P,1,N,2), input_labels (P,1,N), input_boxes (P,1,4), input_masks)
        def hook(_module, args, kwargs):
            pts, labels, boxes = kwargs.get("input_points"), kwargs.get("input_labels"), kwargs.get("input_boxes")
            calls.append({
                "points": _np(pts[:, 0]) if pts is not None else None,
                "labels": _np(labels[:, 0]) if labels is not None else None,
                "boxes": _np(boxes[:, 0]) if boxes is not None else None,
                "masks": _np(kwargs.get("input_masks")),
            })

        module = backbone.model.prompt_encoder
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def random_adapter_model(backbone, split_dir: Path, tasks: list[str], name: str, where: Path, seed: int):
    """``(model, adapter dir)``: ``backbone`` with one randomly initialised adapter ``name`` serving ``tasks`` of
    the FMC_UIA split at ``split_dir``, saved under ``where / name`` and loaded back."""
    from usam import UsamModel
    from usam.adapters.adapter import Adapter, AdapterConfig
    from usam.data.fmc import read_split
    from usam.train.trainer import task_specs

    config = AdapterConfig(name=name, backbone=backbone.name, backbone_checksum=backbone.checksum,
                           tasks=task_specs(read_split(split_dir, tasks=tasks)), lora=None,
                           input_size=backbone.input_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = Adapter(config, backbone).save_pretrained(where / name)
    model = UsamModel(backbone)
    model.load_adapter(str(d))
    return model, d


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private ``$USAM_CACHE`` for one test module (embeddings, compiled runtimes): yields its path."""
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("usam_cache")
    mp.setenv("USAM_CACHE", str(d))
    yield d
    mp.undo()


def without_box_decoder(folder: Path) -> Path:
    """``folder`` (an adapter copy) as it was before its box decoder: the weights, route, pinned heads' route and
    record removed (the shipped fetal_head has one; these tests make one)."""
    import json

    from safetensors.torch import load_file, save_file

    cfg = json.loads((folder / "config.json").read_text())
    cfg["decoder"].pop("boxes", None)
    cfg["decoder"]["box_prompts"] = "tuned"
    for opts in cfg["head_options"].values():
        opts.pop("refine_decoder", None)
    cfg["training"].pop("box_decoder", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    weights = load_file(str(folder / "heads.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("decoder.boxes.")}, str(folder / "heads.safetensors"))
    return folder
