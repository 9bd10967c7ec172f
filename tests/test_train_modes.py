"""``mode: tail``: encoder LoRA in the last stage(s), trained on cached stage inputs (issue #15).

A tiny real run (LiteMedSAM, 2 breast images, 1 view, LoRA in the last stage, 2 steps; ~1 min on 2 cores):
only LoRA and adapter (heads + tuned decoder) tensors change, the frozen encoder stays bit-identical; what is
saved is an ordinary peft LoRA that ``usam.load`` reloads to the same embedding and ``usam export onnx`` merges
with parity; the cached stage input, run through the tail, is the encoder's own embedding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import breast_lesion_rows

pytestmark = pytest.mark.real


def _config(data_root, out, **train) -> dict:
    return {
        "name": "tail_tiny",
        "data": {"root": str(data_root), "tasks": ["breast_lesion", "breast_lesion_det"], "limit": 2},
        "mode": "tail",
        "precision": "fp32",
        "lora": {"rank": 4, "alpha": 8, "stages": 1},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "batch_size_heads": 2, "lr": 5e-3, "seed": 0,
                  "views": 1, "click_iters": 2, **train},
        "output": str(out),
    }


@pytest.fixture(scope="module")
def trained(cache_dir, data_root, tmp_path_factory):
    """A private model trained in tail mode; the backbone's state before training; the adapter directory."""
    from usam import UsamModel
    from usam.train.trainer import train

    model = UsamModel.from_pretrained(precision="fp32", runtime="torch")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    out = train(_config(data_root, tmp_path_factory.mktemp("adapters") / "tail_tiny"), model=model, log=lambda *_: None)
    return model, before, out


def test_tail_trains_only_lora_and_adapter(trained):
    model, before, out = trained
    after = model.backbone.state_dict()
    lora = [k for k in after if "lora_" in k]
    assert lora and all(k.startswith("image_encoder.layers.3.") for k in lora)  # LoRA in the last stage only
    base = {k: v for k, v in after.items() if "lora_" not in k}
    # peft wraps a target Linear: its weight moves to `<name>.base_layer.weight`
    renamed = {k.replace(".base_layer.", "."): v for k, v in base.items()}
    assert set(renamed) == set(before)
    changed = [k for k, v in renamed.items() if not torch.equal(v, before[k])]
    assert not changed, changed[:5]  # the frozen encoder and the base decoder are bit-identical
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert any(v.abs().max() > 0 for v in lora_b)  # LoRA B starts at 0: the steps moved it
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "heads.safetensors"} <= files
    peft_cfg = json.loads((out / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 4 and "layers" in peft_cfg["target_modules"]
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["mode"] == "tail" and config["training"]["lora_stages"] == 1


def test_cached_stage_input_gives_the_encoder_embedding(trained, real_case):
    """What the tail trains on is exactly what the full encoder computes (fp16 storage aside)."""
    from usam.data.augment import AugmentParams
    from usam.embedding import image_digest
    from usam.train.cache import ActivationStore

    model, _, _ = trained
    path, image, _, _ = real_case
    model.set_adapter(None)
    try:
        store = ActivationStore(model, start=3)
        h, geo = store.get(path, image_digest(image), AugmentParams.identity())
        with torch.no_grad():
            tail = model.backbone.encode_from(h[None], 3)
        full = model.embed(image).embedding
    finally:
        model.set_adapter("tail_tiny")
    assert h.shape == (4096, 320) and geo.original_hw == image.shape[:2]
    assert (tail - full).abs().max() < 2e-3


def test_saved_lora_reloads_to_identical_embedding_and_exports_with_parity(trained, real_case, tmp_path):
    import usam
    from usam.apps.cli import main

    model, _, out = trained
    _, image, _, _ = real_case
    model.set_adapter("tail_tiny")
    emb = model.embed(image).embedding
    model.set_adapter(None)
    bare = model.embed(image).embedding
    model.set_adapter("tail_tiny")
    assert (emb - bare).abs().max() > 1e-4  # the trained LoRA changes the embedding

    loaded = usam.load(adapters=[str(out)], precision="fp32", runtime="torch")
    assert loaded.adapter.lora_name == "tail_tiny"
    assert torch.equal(loaded.embed(image).embedding, emb)

    ort = pytest.importorskip("onnxruntime")
    onnx_dir = tmp_path / "onnx"
    assert main(["export", "onnx", "--adapter", str(out), str(onnx_dir)]) == 0
    meta = json.loads((onnx_dir / "usam_onnx.json").read_text())
    assert meta["adapter"]["encoder_lora_merged"] and meta["verification"]["embedding_max_abs_diff"] < 1e-3
    enc = ort.InferenceSession(str(onnx_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    x, _ = model.backbone.preprocess(image)
    onnx_emb = enc.run(None, {"image": x.numpy()})[0]
    diff = float(np.abs(onnx_emb - emb.numpy()).max())
    assert diff < 1e-3, diff
    assert float(np.abs(onnx_emb - bare.numpy()).max()) > 5 * max(diff, 1e-5)  # the merged LoRA is in the export


def test_tail_needs_a_staged_backbone_and_valid_stages(data_root, tmp_path, tiny_vit):
    from usam import UsamModel
    from usam.errors import ConfigError
    from usam.train.config import load_config
    from usam.train.trainer import encoder_lora

    cfg = load_config(_config(data_root, tmp_path / "x"))
    with pytest.raises(ConfigError, match="stages"):
        encoder_lora(cfg, UsamModel(tiny_vit).backbone)
    bad = load_config(_config(data_root, tmp_path / "x") | {"lora": {"stages": 4}})
    from usam.backbones.litemedsam import LiteMedSAM

    with pytest.raises(ConfigError, match="lora.stages must be 1..3"):
        encoder_lora(bad, LiteMedSAM(pretrained=False))
    with pytest.raises(ConfigError, match="lora.stages"):
        load_config(_config(data_root, tmp_path / "x") | {"lora": {"stages": 0}})


def test_frozen_decoder_trains_the_encoder_lora_and_heads_only(trained, data_root, tmp_path):
    """``train.freeze_decoder`` from an adapter: the tuned decoder stays bit-identical, the heads and the encoder
    LoRA (reached through the frozen decoder) train; with ``freeze_heads`` too it is refused before any work."""
    from safetensors.torch import load_file

    from usam import UsamModel
    from usam.errors import ConfigError
    from usam.train.trainer import train

    _, _, start = trained
    out = tmp_path / "frozen_decoder"
    model = UsamModel.from_pretrained(precision="fp32", runtime="torch")
    train(_config(data_root, out, freeze_decoder=True) | {"init": str(start)}, model=model, log=lambda *_: None)
    before, after = load_file(str(start / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    decoder = [k for k in before if k.startswith("decoder.")]
    assert decoder and before.keys() == after.keys()
    for k in decoder:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("heads.")), "heads did not train"
    lora = load_file(str(out / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k), "the encoder LoRA did not train"  # B starts at 0
    with pytest.raises(ConfigError, match="freeze_decoder"):
        train(_config(data_root, tmp_path / "both", freeze_decoder=True, freeze_heads=True) | {"init": str(start)},
              model=model, log=lambda *_: None)


def test_init_with_encoder_lora_goes_on_from_it(trained, data_root, tmp_path):
    """``init:`` an adapter with encoder LoRA of the same settings: training continues from its LoRA (one step at
    a negligible learning rate keeps it), not from a fresh one (B = 0)."""
    from safetensors.torch import load_file

    from usam import UsamModel
    from usam.train.trainer import train

    _, _, start = trained
    out = tmp_path / "continued"
    model = UsamModel.from_pretrained(precision="fp32", runtime="torch")
    train(_config(data_root, out, lr=1e-12, steps_per_epoch=1) | {"init": str(start)}, model=model, log=lambda *_: None)
    before, after = load_file(str(start / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and any(v.abs().max() > 0 for k, v in before.items() if "lora_B" in k)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6, msg=k)


def test_cache_mode_on_an_adapter_with_encoder_lora_keeps_it_frozen_and_trains_on_its_embeddings(trained, data_root, tmp_path):
    """``mode: cache`` with ``init:`` an adapter that has encoder LoRA (e.g. GPU-trained): the LoRA comes along
    bit-identical and frozen, the cached embeddings are the ones through it (a store of their own, keyed by the
    LoRA's weights), and the heads train on them."""
    from safetensors.torch import load_file

    from usam import UsamModel
    from usam.io import read_image
    from usam.train.cache import EmbeddingStore
    from usam.train.trainer import train

    _, _, start = trained
    out = tmp_path / "cache_on_lora"
    model = UsamModel.from_pretrained(precision="fp32", runtime="torch")
    cfg = _config(data_root, out) | {"init": str(start), "mode": "cache"}
    del cfg["lora"]
    train(cfg, model=model, log=lambda *_: None)
    before, after = load_file(str(start / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    heads0, heads1 = load_file(str(start / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    assert any(not torch.equal(heads1[k], heads0[k]) for k in heads0 if k.startswith("heads.")), "heads did not train"
    saved = json.loads((out / "config.json").read_text())
    assert saved["lora"] == json.loads((start / "config.json").read_text())["lora"]
    assert saved["training"]["mode"] == "cache" and saved["training"]["encoder_lora"].startswith("frozen")

    # the store the run used holds the embeddings through the LoRA, not the bare encoder's
    model.set_adapter(model.active_adapter)
    image = str(breast_lesion_rows(data_root, 1, "train")[0][0])
    with_lora = EmbeddingStore(model)
    model.set_adapter(None)
    bare = EmbeddingStore(model)
    assert with_lora.dir != bare.dir and with_lora.lora_adapter is not None and bare.lora_adapter is None
    model.set_adapter(with_lora.lora_adapter)
    lora_emb = model.embed(read_image(image)).embedding
    model.set_adapter(None)
    bare_emb = model.embed(read_image(image)).embedding
    assert (lora_emb - bare_emb).abs().max() > 1e-2  # the LoRA matters for this test to mean anything
    torch.testing.assert_close(with_lora.get(image).embedding, lora_emb, rtol=0, atol=2e-2)  # stored fp16
    torch.testing.assert_close(bare.get(image).embedding, bare_emb, rtol=0, atol=2e-2)
    # retrained LoRA weights get entries of their own
    model.set_adapter(with_lora.lora_adapter)
    for name, p in model.backbone.image_encoder.named_parameters():
        if "lora_B" in name and f".{with_lora.lora_adapter}." in name:
            with torch.no_grad():
                p.add_(1e-3)
            break
    assert EmbeddingStore(model).dir != with_lora.dir
