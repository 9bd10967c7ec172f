"""Training the prompt decoder on clicks (issue #14): ``train.freeze_heads`` and ``train.click_loss``.

A tiny real run (2 breast rows per task, cached embeddings) from an adapter: with frozen heads only the decoder
changes, only the segmentation task is sampled, and the init's head options survive.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from usam.errors import ConfigError

TASKS = ["breast_lesion", "breast_3cls", "breast_lesion_det"]


def _config(data_root, out, **train):
    t = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "batch_size_heads": 2, "lr": 3e-3, "click_iters": 2,
         "click_iters_min": 1, "seed": 0, "val_clicks": 1}
    t.update(train)
    return {"name": "tiny_clicks", "data": {"root": str(data_root), "tasks": TASKS, "limit": 2}, "mode": "cache",
            "decoder": {"tune": True, "lora": None, "train": ["prompt_encoder", "mask_decoder"]},
            "train": t, "output": str(out)}


@pytest.fixture(scope="module")
def model():
    from usam import UsamModel

    return UsamModel.from_pretrained(precision="fp32")


@pytest.fixture(scope="module")
def start(cache_dir, model, data_root, tmp_path_factory):
    """A tiny adapter trained the ordinary way, with a head option written into its config (as tune_head_options does)."""
    from usam.train.trainer import train

    out = tmp_path_factory.mktemp("clicks") / "start"
    train(_config(data_root, out), model=model)
    cfg = json.loads((out / "config.json").read_text())
    cfg["head_options"] = {"breast_lesion": {"refine_with_box": True, "refine_decoder": "tuned"}}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.real
def test_frozen_heads_train_only_the_decoder_on_segmentation(start, model, data_root, tmp_path):
    from usam.train.trainer import train

    out = tmp_path / "frozen"
    cfg = {**_config(data_root, out, freeze_heads=True, click_loss="all", steps_per_epoch=3), "init": str(start)}
    train(cfg, model=model)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert set(history[-1]["train_loss"]) == {"breast_lesion"}, history[-1]["train_loss"]  # the only task sampled
    before, after = load_file(str(start / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    assert before.keys() == after.keys()
    heads = [k for k in before if k.startswith("heads.")]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert heads and decoder
    for k in heads:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(after[k], before[k]) for k in decoder), "the decoder did not train"
    options = json.loads((out / "config.json").read_text())["head_options"]
    assert options == {"breast_lesion": {"refine_with_box": True, "refine_decoder": "tuned"}}


@pytest.mark.parametrize("rule, iters, expected", [
    ("first_last", 4, [True, False, False, True]), ("last", 4, [False, False, False, True]),
    ("all", 3, [True, True, True]), ("first_last", 1, [True]), ("last", 1, [True]),
])
def test_click_loss_names_the_passes_that_carry_the_loss(rule, iters, expected):
    from usam.train.module import _carries_loss

    assert [_carries_loss(rule, it, iters) for it in range(iters)] == expected


def test_click_settings_are_checked(data_root, tmp_path):
    from usam.train.config import load_config

    good = _config(data_root, tmp_path / "o")
    with pytest.raises(ConfigError, match="click_loss"):
        load_config({**good, "train": {"click_loss": "every"}})
    with pytest.raises(ConfigError, match="freeze_heads"):
        load_config({**good, "train": {"freeze_heads": "maybe"}})
    cfg = load_config(good, overrides=["train.click_loss=last", "train.freeze_heads=true"])
    assert cfg.train["click_loss"] == "last" and cfg.train["freeze_heads"] is True


@pytest.mark.real
def test_frozen_heads_without_a_tuned_decoder_is_refused(model, cache_dir, data_root, tmp_path):
    from usam.train.trainer import train

    cfg = _config(data_root, tmp_path / "o", freeze_heads=True)
    cfg["decoder"] = {"tune": False}
    with pytest.raises(ConfigError, match="freeze_heads"):
        train(cfg, model=model)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.real
def test_a_separate_click_decoder_trains_alone_and_answers_the_clicks(start, model, data_root, tmp_path):
    """``decoder.clicks: separate`` on an init adapter without one: only the new click decoder (from the bare
    backbone's weights) trains; heads and the tuned decoder stay bit-identical; the file holds it in fp16; once
    loaded, clicks go to it, the heads' tokens to the tuned decoder, a box alone to the backbone's decoder."""
    from usam.backbones.sam_style import sam_decode
    from usam.train.trainer import train

    out = tmp_path / "clicks"
    cfg = {**_config(data_root, out, freeze_heads=True, auto_weight=0.0, click_loss="all", steps_per_epoch=2),
           "init": str(start)}
    cfg["decoder"] = {**cfg["decoder"], "clicks": "separate"}
    train(cfg, model=model)
    assert json.loads((out / "config.json").read_text())["decoder"]["clicks"] == "separate"
    assert "click decoder" in (out / "README.md").read_text()
    before, after = load_file(str(start / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    added = sorted(set(after) - set(before))
    assert added and all(k.startswith("decoder.clicks.") and after[k].dtype == torch.float16 for k in added)
    bare = {**{f"decoder.clicks.prompt_encoder.{k}": v for k, v in model.backbone.prompt_encoder.state_dict().items()},
            **{f"decoder.clicks.mask_decoder.{k}": v for k, v in model.backbone.mask_decoder.state_dict().items()}}
    assert set(added) <= set(bare)
    assert any(not torch.equal(after[k].float(), bare[k].half().float()) for k in added), "the click decoder did not train"

    name = model.load_adapter(out, name="clicks_check")
    try:
        dec = model.adapters[name].decoder
        emb = torch.randn(1, *model.backbone.embedding_shape)
        pts = (torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]]))
        box = torch.tensor([[60.0, 70.0, 180.0, 190.0]])
        with torch.no_grad():
            got = model.decode(emb, points=pts, multimask_output=False)[0]
            clicks = sam_decode(dec.clicks.prompt_encoder, dec.clicks.mask_decoder, emb, pts, None, None, False, None)[0]
            tuned = sam_decode(dec.prompt_encoder, dec.mask_decoder, emb, pts, None, None, False, None)[0]
            torch.testing.assert_close(got, clicks)
            assert not torch.allclose(got, tuned)
            base = model.backbone.decode(emb, boxes=box, multimask_output=False)[0]
            torch.testing.assert_close(model.decode(emb, boxes=box, multimask_output=False)[0], base)
            tokens = model.adapters[name].heads["breast_lesion"].tokens[0:1]
            auto = model.decode(emb, sparse_extra=tokens, multimask_output=False)[0]
            ref = sam_decode(dec.prompt_encoder, dec.mask_decoder, emb, None, None, None, False, tokens)[0]
            torch.testing.assert_close(auto, ref)
    finally:
        model.set_adapter(None)
        del model.adapters[name]


def test_the_click_decoder_setting_is_checked(data_root, tmp_path):
    from usam.train.config import load_config

    good = _config(data_root, tmp_path / "o")
    with pytest.raises(ConfigError, match="clicks"):
        load_config({**good, "decoder": {**good["decoder"], "clicks": "own"}})
    assert "clicks" not in load_config(good).decoder.to_adapter()  # adapters without one keep their config.json
    separate = load_config({**good, "decoder": {**good["decoder"], "clicks": "separate"}})
    assert separate.decoder.to_adapter()["clicks"] == "separate"


@pytest.mark.real
def test_training_from_an_adapter_with_a_localisation_head_keeps_it(start, model, data_root, tmp_path):
    """``init`` from an adapter with a localisation head (``head_options.<task>.locate``, tensors
    ``heads.<task>.locator.*``): the new adapter is built with it, keeps its tensors (no loss reaches them) and its
    options, and reloads; the decoder choices made on val (box routing, click window) stay unless the config names them."""
    import shutil

    from safetensors.torch import save_file

    from usam.heads.locate import LocateHead
    from usam.train.trainer import train

    located = tmp_path / "located"
    shutil.copytree(start, located)
    heads = load_file(str(located / "heads.safetensors"))
    locator = LocateHead(1, heads["heads.breast_lesion.tokens"].shape[-1])
    heads.update({f"heads.breast_lesion.locator.{k}": v for k, v in locator.state_dict().items()})
    save_file(heads, str(located / "heads.safetensors"))
    cfg = json.loads((located / "config.json").read_text())
    cfg["head_options"]["breast_lesion"]["locate"] = "heatmap"
    cfg["decoder"].update(box_prompts="tuned", click_window=4)  # choices made on val, as tune_head_options writes them
    (located / "config.json").write_text(json.dumps(cfg))

    out = tmp_path / "more"
    train({**_config(data_root, out, steps_per_epoch=2), "init": str(located)}, model=model)
    after = load_file(str(out / "heads.safetensors"))
    for k, v in locator.state_dict().items():
        torch.testing.assert_close(after[f"heads.breast_lesion.locator.{k}"], v, rtol=0, atol=0)
    assert any(not torch.equal(after[k], heads[k]) for k in heads if k.startswith("heads.breast_3cls")), "heads did not train"
    options = json.loads((out / "config.json").read_text())["head_options"]
    assert options["breast_lesion"] == {"refine_with_box": True, "refine_decoder": "tuned", "locate": "heatmap"}
    decoder = json.loads((out / "config.json").read_text())["decoder"]
    assert decoder["box_prompts"] == "tuned" and decoder["click_window"] == 4  # the config names neither: kept
    named = tmp_path / "named"
    cfg = {**_config(data_root, named, steps_per_epoch=1), "init": str(located)}
    cfg["decoder"] = {**cfg["decoder"], "box_prompts": "base"}
    said = []
    train(cfg, model=model, log=said.append)
    decoder = json.loads((named / "config.json").read_text())["decoder"]
    assert decoder["box_prompts"] == "base" and decoder["click_window"] == 4  # what the config names wins
    assert any("decoder.box_prompts 'base' from the config replaces" in m and "'tuned'" in m for m in said), said  # and says so
    assert not any("decoder.click_window" in m for m in said)
    name = model.load_adapter(out, name="located_check")
    try:
        assert model.adapters[name].heads["breast_lesion"].locator is not None
    finally:
        model.set_adapter(None)
        del model.adapters[name]
