"""Localisation head (``usam/heads/locate.py``, trained by ``usam/train/locate.py``): targets and peaks, training on
real cached embeddings, its boxes on real val images, save / reload, option checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from usam.errors import AdapterError, ConfigError
from usam.heads.locate import LocateHead, attach_locators, peak_boxes
from usam.heads.refine import check_head_options
from usam.ops.metrics import box_iou
from usam.train.locate import centre_targets, load_examples, locate_loss, train_locator

ROOT = Path(__file__).resolve().parents[1]


def test_targets_decode_back_to_their_boxes():
    boxes = [np.array([[30.0, 40.0, 130.0, 100.0], [150.0, 150.0, 200.0, 230.0]]), np.zeros((0, 4))]
    heat, size, weight = centre_targets(boxes, 256)
    assert heat.shape == (2, 64, 64) and size.shape == (2, 2, 64, 64) and int(heat[0].eq(1).sum()) == 2
    assert heat[1].max() == 0 and weight[1].max() == 0
    logits = torch.logit(heat[0].clamp(1e-4, 1 - 1e-4))
    found, scores = peak_boxes(logits, size[0], 256, k=2, limit=(240, 256))
    for truth in boxes[0]:
        assert max(box_iou(b, truth) for b in found.numpy()) > 0.85
    assert found[:, 3].max() <= 240  # clipped to the resized image
    assert torch.all(scores[:-1] >= scores[1:])


@pytest.fixture(scope="module")
def breast_model():
    import usam

    return usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32")


@pytest.fixture(scope="module")
def examples(data_root, breast_model):
    from usam.data.fmc import read_split
    from usam.train.cache import EmbeddingStore

    store = EmbeddingStore(breast_model)
    rows = {s: read_split(data_root / s, tasks=["breast_lesion"])["breast_lesion"] for s in ("train", "val")}
    return load_examples(store, rows["train"][:24], 1), load_examples(store, rows["val"][:8], 1)


def test_training_on_real_embeddings_finds_the_lesions(examples):
    train, _ = examples
    targets = [centre_targets(ex.boxes, 256) for ex in train]
    batch = torch.stack([ex.embedding.float() for ex in train]), *(torch.stack(t) for t in zip(*targets))
    torch.manual_seed(0)
    with torch.no_grad():
        before = float(locate_loss(LocateHead(1), *batch))
    locator, history = train_locator(train, train, 1, 256, epochs=12, batch=8, lr=3e-3, log=lambda *_: None)
    with torch.no_grad():
        assert float(locate_loss(locator, *batch)) < 0.5 * before
    assert history[-1]["val_peak_iou"] > history[0]["val_peak_iou"]
    ious = _peak_ious(locator, train)
    assert np.mean(np.array(ious) > 0.5) >= 0.75, ious


def _peak_ious(locator, exs) -> list[float]:
    out = []
    with torch.no_grad():
        for ex in exs:
            heat, size = locator(ex.embedding.float()[None])
            box, _ = peak_boxes(heat[0, 0], size[0, 0], 256, 1, ex.resized_hw)
            out.append(max(box_iou(box[0].numpy(), t) for t in ex.boxes[0]))
    return out


def test_shipped_locator_boxes_on_real_val_images(data_root, breast_model):
    locator = getattr(breast_model.adapter.heads["breast_lesion"], "locator", None)
    if locator is None:
        pytest.skip("adapters/breast carries no localisation head")
    from usam.data.fmc import read_split
    from usam.train.cache import EmbeddingStore

    # the embeddings the shipped heads see: through the adapter's encoder LoRA
    val = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][:8]
    ious = _peak_ious(locator, load_examples(EmbeddingStore(breast_model), val, 1))
    assert np.mean(np.array(ious) > 0.5) >= 0.75, ious


def test_saved_adapter_with_a_locator_reloads_to_identical_outputs(tmp_path, data_root, breast_model):
    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image

    image = read_image(read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][0].image_path)
    adapter = breast_model.adapter
    saved_opts, saved_head = json.loads(json.dumps(adapter.config.head_options)), adapter.heads["breast_lesion"]
    try:
        adapter.heads["breast_lesion"] = head = type(saved_head)(2)
        head.load_state_dict({k: v for k, v in saved_head.state_dict().items() if not k.startswith("locator.")})
        torch.manual_seed(1)
        head.locator = LocateHead(1)
        adapter.config.head_options["breast_lesion"] = {"locate": "heatmap"}
        before = breast_model.predict(image)
        adapter.save_pretrained(tmp_path / "breast", breast_model.backbone.image_encoder)  # breast has encoder LoRA
    finally:
        adapter.heads["breast_lesion"] = saved_head
        adapter.config.head_options.clear()
        adapter.config.head_options.update(saved_opts)
    again = usam.load(adapters=[str(tmp_path / "breast")], precision="fp32").predict(image)
    assert np.array_equal(before.masks["breast_lesion"], again.masks["breast_lesion"])
    assert np.array_equal(before.boxes["breast_lesion_det"], again.boxes["breast_lesion_det"])
    assert before.masks["breast_lesion"].any()
    # the config names a locator the weights lack (or the reverse): refused on load
    cfg = json.loads((tmp_path / "breast" / "config.json").read_text())
    weights = tmp_path / "breast" / "heads.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if ".locator." not in k}, weights)
    with pytest.raises(AdapterError, match="missing"):
        usam.load(adapters=[str(tmp_path / "breast")])
    del cfg["head_options"]["breast_lesion"]
    (tmp_path / "breast" / "config.json").write_text(json.dumps(cfg))
    usam.load(adapters=[str(tmp_path / "breast")])  # plain again: loads


def test_locate_without_a_trained_head_is_a_clear_error(breast_model, data_root):
    from usam.data.fmc import read_split
    from usam.io import read_image

    adapter = breast_model.adapter
    head = adapter.heads["breast_lesion"]
    image = read_image(read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][0].image_path)
    saved, saved_locator = json.loads(json.dumps(adapter.config.head_options)), getattr(head, "locator", None)
    try:
        head.locator = None
        adapter.config.head_options["breast_lesion"] = {"locate": "heatmap"}
        with pytest.raises(ConfigError, match="needs a trained localisation head"):
            breast_model.predict(image)
    finally:
        head.locator = saved_locator
        adapter.config.head_options.clear()
        adapter.config.head_options.update(saved)


@pytest.mark.parametrize("options, message", [
    ({"seg": {"locate": "yes"}}, "locate must be one of"),
    ({"seg": {"locate": True}}, "locate must be one of"),
    ({"det": {"locate": "heatmap"}}, r"unknown options \['locate'\]"),
])
def test_bad_locate_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        check_head_options(options, {"seg": "segmentation", "det": "detection"})


def test_attach_locators_follows_the_options():
    from usam.heads.automask import AutoMaskHead

    heads = {"seg": AutoMaskHead(3), "other": AutoMaskHead(2)}
    attach_locators(heads, {"seg": {"locate": "off"}})
    assert heads["seg"].locator.num_foreground == 2 and not hasattr(heads["other"], "locator")


@pytest.mark.real
def test_views_move_the_object_boxes_with_the_image(data_root, breast_model):
    """``load_examples(views=2)``: view 0 is the image as read; view 1 is augmented, its boxes moved with it (the
    shipped locator finds the moved lesions on the augmented views as it finds them as read)."""
    from usam.data.fmc import read_split
    from usam.train.cache import EmbeddingStore

    store = EmbeddingStore(breast_model)
    rows = read_split(data_root / "train", tasks=["breast_lesion"])["breast_lesion"][:8]
    one, two = load_examples(store, rows, 1), load_examples(store, rows, 1, views=2, seed=0)
    assert len(two) == 2 * len(one)
    for a, b in zip(one, two[0::2]):
        assert torch.equal(a.embedding, b.embedding) and np.array_equal(a.boxes[0], b.boxes[0])
    views = two[1::2]
    assert all(not torch.equal(a.embedding, v.embedding) for a, v in zip(one, views))
    assert any(not np.allclose(a.boxes[0], v.boxes[0]) for a, v in zip(one, views))
    locator = getattr(breast_model.adapter.heads["breast_lesion"], "locator", None)
    if locator is not None:
        as_read, moved = np.array(_peak_ious(locator, one)), np.array(_peak_ious(locator, views))
        assert np.mean(moved > 0.5) >= np.mean(as_read > 0.5) - 0.25, (as_read, moved)


def _copy(tmp_path, name: str) -> Path:
    import shutil

    return Path(shutil.copytree(ROOT / "adapters" / name, tmp_path / name))


@pytest.mark.real
def test_a_head_that_does_not_beat_the_one_in_use_leaves_the_weights(tmp_path, data_root, monkeypatch):
    import usam.train.locate as locate

    folder = _copy(tmp_path, "fetal_head")
    weights, cfg0 = (folder / "heads.safetensors").read_bytes(), json.loads((folder / "config.json").read_text())
    report = locate.train_adapter_locators(str(folder), str(data_root), epochs=1, limit=6, log=lambda *_: None)
    rec = report["fetal_head"]
    assert rec["kept"] is False and rec["val_peak_iou_before"] > rec["val_peak_iou"] + locate.MIN_GAIN
    assert (folder / "heads.safetensors").read_bytes() == weights
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["training"]["locate"] == cfg0["training"]["locate"]  # the record of the head in use stays
    assert cfg["training"]["locate_attempt"]["fetal_head"]["kept"] is False
    assert cfg["head_options"] == cfg0["head_options"]
    # the same run made to win: only the locator's tensors change, the record moves to training.locate
    monkeypatch.setattr(locate, "MIN_GAIN", -1.0)
    report = locate.train_adapter_locators(str(folder), str(data_root), epochs=1, limit=6, views=2, log=lambda *_: None)
    assert report["fetal_head"]["kept"] is True
    old, new = load_file(ROOT / "adapters" / "fetal_head" / "heads.safetensors"), load_file(folder / "heads.safetensors")
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(".locator." in k for k in changed)
    cfg = json.loads((folder / "config.json").read_text())
    assert "locate_attempt" not in cfg["training"] and cfg["training"]["locate"]["fetal_head"]["views"] == 2
    assert "in 2 views each" in (folder / "README.md").read_text()


def test_locate_stage_refuses_a_hub_id_and_bad_settings(tmp_path):
    from usam.errors import UsamError
    from usam.train.locate import main, train_adapter_locators

    with pytest.raises(UsamError, match="views must be >= 1"):
        train_adapter_locators(str(tmp_path), "data", views=0)
    with pytest.raises(UsamError, match="usam hub pull"):
        train_adapter_locators("someone/breast", "data")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--views", "0"])
    assert main(["someone/breast"]) == 2
