"""Multi-task adapters on real data: training in both modes, save / reload, switching, frozen base weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from usam.errors import ConfigError


def _config(data_root, out, mode="cache", **train):
    t = {"epochs": 3, "steps_per_epoch": 3, "batch_size": 2, "batch_size_heads": 4, "lr": 3e-3, "click_iters": 2, "seed": 0}
    t.update(train)
    return {
        "name": f"tiny_{mode}",
        "data": {"root": str(data_root), "tasks": ["breast_lesion", "breast_3cls", "breast_lesion_det", "fetal_head_biometry"],
                 "limit": 4},
        "mode": mode,
        "lora": {"rank": 2, "alpha": 4},
        "train": t,
        "output": str(out),
    }


@pytest.fixture(scope="module")
def model():
    from usam import UsamModel

    return UsamModel.from_pretrained(precision="fp32")


@pytest.fixture(scope="module")
def base_state(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


@pytest.fixture(scope="module")
def cache_adapter(monkeypatch_module, model, base_state, data_root, tmp_path_factory):
    from usam.train.trainer import train

    out = tmp_path_factory.mktemp("adapters") / "tiny_cache"
    train(_config(data_root, out), model=model)
    return out


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("USAM_CACHE", str(tmp_path_factory.mktemp("usam_cache")))
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def image(data_root):
    from usam.io import read_image

    return read_image(data_root / "test" / "Classification" / "BUSI" / "images" / "benign (1).png")


def _flat(pred):
    out = {}
    for field in ("masks", "probabilities", "boxes", "keypoints"):
        for k, v in getattr(pred, field).items():
            out[f"{field}.{k}"] = np.asarray(v)
    return out


def test_cache_training_writes_an_adapter_and_loss_decreases(cache_adapter):
    files = {p.name for p in cache_adapter.iterdir()}
    assert {"config.json", "heads.safetensors", "metrics.json", "README.md"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    cfg = json.loads((cache_adapter / "config.json").read_text())
    assert cfg["backbone"]["name"] == "litemedsam" and len(cfg["backbone"]["checksum"]) == 64
    assert set(cfg["tasks"]) == {"breast_lesion", "breast_3cls", "breast_lesion_det", "fetal_head_biometry"}
    assert cfg["tasks"]["breast_3cls"]["num_classes"] == 3
    hist = json.loads((cache_adapter / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    first, last = hist[0]["probe_loss"], hist[-1]["probe_loss"]
    assert set(first) == set(last) == set(cfg["tasks"])
    for task in first:  # loss on a fixed batch per task, fixed prompts, eval mode
        assert last[task] < first[task], (task, first[task], last[task])


def test_base_weights_stay_bit_identical(model, base_state, cache_adapter):
    now = {k.replace(".base_layer", ""): v for k, v in model.backbone.state_dict().items() if "lora_" not in k}
    for k, v in base_state.items():
        assert torch.equal(now[k], v), k


def test_reload_reproduces_outputs_and_switching(model, cache_adapter, image, tmp_path):
    from usam import UsamModel

    name = model.load_adapter(str(cache_adapter), name="a")
    p1 = _flat(model.predict(image, adapter="a"))
    assert set(p1) == {"masks.breast_lesion", "probabilities.breast_3cls", "boxes.breast_lesion_det", "keypoints.fetal_head_biometry"}
    assert abs(p1["probabilities.breast_3cls"].sum() - 1) < 1e-5
    assert p1["masks.breast_lesion"].shape == image.shape[:2]
    # a fresh model loading the same directory reproduces every output exactly
    other = UsamModel.from_pretrained(precision="fp32", adapters=[str(cache_adapter)])
    p2 = _flat(other.predict(image))
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    # a second adapter with other weights changes outputs; switching back restores them
    from safetensors.torch import load_file, save_file
    import shutil

    b_dir = tmp_path / "b"
    shutil.copytree(cache_adapter, b_dir)
    state = load_file(str(b_dir / "heads.safetensors"))
    state = {k: v + 0.05 * torch.randn_like(v) if k.startswith("heads.") else v for k, v in state.items()}
    save_file(state, str(b_dir / "heads.safetensors"))
    model.load_adapter(str(b_dir), name="b")
    pb = _flat(model.predict(image, adapter="b"))
    assert not np.allclose(pb["probabilities.breast_3cls"], p1["probabilities.breast_3cls"])
    back = _flat(model.predict(image, adapter="a"))
    for k in p1:
        np.testing.assert_array_equal(p1[k], back[k], err_msg=k)
    assert name == "a"


def test_one_encoder_pass_serves_every_head(model, cache_adapter, image):
    model.load_adapter(str(cache_adapter), name="a")
    model.predict(image, adapter="a")
    calls = model.encoder_calls
    model.predict(image, adapter="a")
    from usam import Predictor

    p = Predictor(model)
    p.set_image(image)
    p.predict(box=np.array([280, 130, 345, 165]))
    assert model.encoder_calls == calls


def test_lora_training_changes_encoder_only_through_the_adapter(model, base_state, data_root, tmp_path, image):
    from usam.adapters.lora import lora_layers
    from usam.train.trainer import train

    out = tmp_path / "tiny_lora"
    cfg = _config(data_root, out, mode="lora", epochs=1, steps_per_epoch=2, batch_size=1, batch_size_heads=2)
    cfg["data"]["tasks"] = ["breast_3cls"]
    cfg["data"]["limit"] = 2
    train(cfg, model=model)
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "heads.safetensors", "config.json"} <= files
    assert lora_layers(model.backbone.image_encoder)
    model.set_adapter(None)
    bare = model.embed(image).embedding.clone()
    model.set_adapter("tiny_lora")
    with_lora = model.embed(image).embedding
    assert not torch.equal(bare, with_lora)  # LoRA changes the embedding ...
    # ... while every base weight is bit-identical (peft keeps the wrapped Linear as `.base_layer`)
    now = {k.replace(".base_layer", ""): v for k, v in model.backbone.state_dict().items() if "lora_" not in k}
    assert set(now) == set(base_state)
    for k, v in base_state.items():
        assert torch.equal(now[k], v), k
    model.set_adapter(None)
    torch.testing.assert_close(model.embed(image).embedding, bare)


def test_bad_training_configs(tmp_path, data_root):
    from usam.train.config import load_config

    good = _config(data_root, tmp_path / "o")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config({**good, "epochz": 3})
    with pytest.raises(ConfigError, match="mode must be"):
        load_config({**good, "mode": "full"})
    with pytest.raises(ConfigError, match="data root"):
        load_config({**good, "data": {"root": str(tmp_path / "nowhere")}})
    with pytest.raises(ConfigError, match="batch_size"):
        load_config({**good, "train": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="missing required key"):
        load_config({k: v for k, v in good.items() if k != "output"})
    cfg = load_config(good, overrides=["train.lr=0.01", "name=other"])
    assert cfg.train["lr"] == 0.01 and cfg.name == "other"


def test_new_organ_from_a_folder_with_the_default_config(model, data_root, tmp_path, monkeypatch_module):
    """A user's images/ + masks/ folder trains with configs/default.yaml and only data.root / name / output set."""
    from pathlib import Path

    from usam.train.trainer import train

    src = data_root / "test" / "Segmentation" / "Three" / "PSFHS"
    folder = tmp_path / "intrapartum_user"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for img in sorted((src / "images").iterdir())[:5]:
        (folder / "images" / img.name).symlink_to(img)
        (folder / "masks" / img.name).symlink_to(src / "labels" / img.name)
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    out = train(config, overrides=[f"data.root={folder}", "name=user_organ", f"output={tmp_path / 'out'}",
                                   "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=2", "train.click_iters=1"],
                model=model)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["name"] == "user_organ"
    assert cfg["tasks"] == {"intrapartum_user": {"kind": "segmentation", "num_classes": 3, "class_names": None}}
    assert cfg["decoder"]["clicks"] == "separate"  # clicks are trained by default, on a click decoder of their own
    metrics = json.loads((out / "metrics.json").read_text())
    assert "intrapartum_user" in metrics["val"]  # a validation share was held out automatically


def test_peft_is_imported_only_for_a_lora():
    """``import usam`` and a model without LoRA leave peft (and transformers) unimported; the first LoRA added
    imports it (usam.adapters.lora). (Every shipped adapter now carries LoRA: breast in the encoder, fetal_head and
    intrapartum in the decoder; loading one imports peft.)"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, usam\n"
        "assert 'peft' not in sys.modules and 'transformers' not in sys.modules, 'imported with usam'\n"
        "m = usam.load(runtime='torch')\n"
        "assert 'peft' not in sys.modules, 'imported by a model without LoRA'\n"
        "from usam.adapters.lora import LoraSettings, add_lora, lora_layers\n"
        "add_lora(m.backbone.image_encoder, 'x', LoraSettings(rank=2))\n"
        "assert 'peft' in sys.modules and lora_layers(m.backbone.image_encoder)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
