"""A box decoder of an adapter's own (``decoder.boxes: separate``, ``box_prompts: boxes``; issue #14's box path):
``usam/train/boxes.py`` fine-tunes the backbone's mask decoder on ground-truth boxes and keeps it only where it
beats the adapter's box route on val."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import without_box_decoder as _without_box_decoder
from usam.errors import ConfigError, UsamError

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 3


def test_the_box_route_needs_a_box_decoder_and_is_written_only_when_there_is_one():
    from usam.adapters.config import DecoderSettings

    with pytest.raises(ConfigError, match="boxes: separate"):
        DecoderSettings.from_adapter({"box_prompts": "boxes"})
    with pytest.raises(ConfigError, match="decoder.boxes"):
        DecoderSettings.from_adapter({"boxes": "own"})
    both = DecoderSettings.from_adapter({"box_prompts": "boxes", "boxes": "separate"})
    assert both.to_adapter()["boxes"] == "separate" and both.to_adapter()["box_prompts"] == "boxes"
    assert "boxes" not in DecoderSettings.from_adapter({}).to_adapter()  # earlier adapters keep their config.json


def test_jittered_boxes_stay_in_the_image_and_move_outward_by_the_stated_fraction():
    from usam.train.boxes import jitter_box

    rng = np.random.default_rng(0)
    box, hw = np.array([100.0, 50.0, 200.0, 250.0]), (300, 400)
    for _ in range(200):
        b = jitter_box(box, hw, rng, jitter=(0.0, 0.1))
        assert (b[:2] <= box[:2]).all() and (b[2:] >= box[2:]).all()  # outward only
        assert (box[:2] - b[:2] <= [10.0 + 1e-9, 20.0 + 1e-9]).all() and (b[2:] - box[2:] <= [10.0 + 1e-9, 20.0 + 1e-9]).all()
    edge = np.array([0.0, 0.0, 399.0, 299.0])
    for _ in range(50):
        b = jitter_box(edge, hw, rng)
        assert (b >= 0).all() and b[2] <= 399 and b[3] <= 299


def test_the_box_loss_is_low_for_the_right_mask_and_high_for_the_wrong_one():
    from usam.train.boxes import box_loss

    target = torch.zeros(2, 1, 256, 256)
    target[:, :, 64:192, 64:192] = 1
    right = (target * 2 - 1) * 20
    assert float(box_loss(right, torch.ones(2, 1), target)) < 0.02
    assert float(box_loss(-right, torch.ones(2, 1), target)) > 10
    # the predicted IoU is trained too: the right mask scored 0 costs its squared error
    assert float(box_loss(right, torch.zeros(2, 1), target)) > 0.99


def test_a_box_decoder_on_an_adapter_answers_a_box_alone_and_nothing_else(tiny_vit, tmp_path):
    """Saved with the adapter in fp16, read back, routed: a box alone under ``box_prompts: boxes`` goes to it, a
    click and the heads' boxes (route None: the backbone's decoder) do not; the click decoder is untouched."""
    from usam.adapters.adapter import Adapter, TunedDecoder
    from usam.adapters.config import AdapterConfig
    from usam.heads.refine import decode_box
    from usam.tasks import TaskSpec

    config = AdapterConfig(name="boxy", backbone=tiny_vit.name, backbone_checksum=tiny_vit.checksum,
                           tasks={"seg": TaskSpec("seg", "segmentation", 2)}, lora=None,
                           input_size=tiny_vit.input_size,
                           decoder={"lora": None, "train": ["mask_decoder.iou_token"], "box_prompts": "boxes",
                                    "boxes": "separate", "clicks": "separate"})
    adapter = Adapter(config, tiny_vit)
    dec: TunedDecoder = adapter.decoder
    assert dec.boxes is not None and not any(p.requires_grad for p in dec.boxes.parameters())
    with torch.no_grad():
        for p in dec.boxes.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = adapter.save_pretrained(tmp_path / "boxy")
    stored = load_file(str(d / "heads.safetensors"))
    assert any(k.startswith("decoder.boxes.") for k in stored)
    assert all(v.dtype == torch.float16 for k, v in stored.items() if k.startswith("decoder.boxes."))
    back = Adapter.from_pretrained(d, tiny_vit).decoder
    saved = dict(back.boxes.named_parameters())
    for k, a in dec.boxes.named_parameters():  # parameters in fp16; buffers are the backbone's
        torch.testing.assert_close(saved[k], a.half().float(), rtol=0, atol=0, msg=k)
    emb = torch.randn(1, 256, 64, 64)
    box = torch.tensor([[40.0, 40.0, 180.0, 200.0]])
    own, _ = back.decode(emb, boxes=box, multimask_output=False)
    base, _ = back.decode(emb, boxes=box, multimask_output=False, box_prompts="base")
    assert not torch.allclose(own, base)
    assert (back.answering(boxes=box)[1] is back.boxes.mask_decoder)
    click = (torch.tensor([[[100.0, 100.0]]]), torch.tensor([[1]]))
    assert back.answering(points=click)[1] is back.clicks.mask_decoder
    heads, _ = decode_box(back, emb, box, None)  # the heads' boxes keep the backbone's decoder
    torch.testing.assert_close(heads, base)
    named, _ = decode_box(back, emb, box, "boxes")  # unless their options name it (refine_decoder: boxes)
    torch.testing.assert_close(named, own)
    lacking = Adapter(AdapterConfig(name="plain", backbone=tiny_vit.name, backbone_checksum=tiny_vit.checksum,
                                    tasks=config.tasks, lora=None, input_size=tiny_vit.input_size,
                                    decoder={"lora": None, "train": ["mask_decoder.iou_token"]}), tiny_vit).decoder
    for route in ("boxes", "clicks"):
        with pytest.raises(ConfigError, match=f"no {route[:-1]} decoder of its own"):
            with lacking.using(box_prompts=route):
                pass


def test_a_box_decoder_starts_from_the_backbone_the_tuned_decoder_or_the_box_decoder_in_use(tiny_vit):
    """``init``: a copy whose answer to a box equals that of the weights it names (the tuned decoder's with its LoRA
    merged); fine-tuning the copy leaves the adapter untouched; ``boxes`` without a box decoder is refused."""
    from types import SimpleNamespace

    from usam.adapters.adapter import Adapter
    from usam.adapters.config import AdapterConfig
    from usam.backbones.sam_style import sam_decode
    from usam.tasks import TaskSpec
    from usam.train.boxes import initial_box_decoder

    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": r".*transformer\.layers\.\d+\.mlp\.(lin1|lin2)"}
    config = AdapterConfig(name="boxy", backbone=tiny_vit.name, backbone_checksum=tiny_vit.checksum,
                           tasks={"seg": TaskSpec("seg", "segmentation", 2)}, lora=None, input_size=tiny_vit.input_size,
                           decoder={"lora": lora, "train": ["mask_decoder.iou_token", "prompt_encoder.point_embeddings"],
                                    "boxes": "separate"})
    adapter = Adapter(config, tiny_vit)
    dec = adapter.decoder
    with torch.no_grad():  # a tuned decoder unlike the backbone's: LoRA B, point embeddings and the box decoder moved
        for n, p in dec.named_parameters():
            if "lora_B" in n or "point_embeddings" in n or n.startswith("boxes."):
                p.add_(0.05 * torch.randn_like(p))
    model = SimpleNamespace(backbone=tiny_vit, adapter=adapter)
    emb, box = torch.randn(1, 256, 64, 64), torch.tensor([[40.0, 40.0, 180.0, 200.0]])

    def answer(pe, md):
        with torch.no_grad():
            return sam_decode(pe, md, emb, boxes=box, multimask_output=False)[0]

    starts = {name: initial_box_decoder(model, name) for name in ("backbone", "tuned", "boxes")}
    torch.testing.assert_close(answer(starts["backbone"].prompt_encoder, starts["backbone"].mask_decoder),
                               answer(tiny_vit.prompt_encoder, tiny_vit.mask_decoder))
    tuned = answer(dec.prompt_encoder, dec.mask_decoder)
    torch.testing.assert_close(answer(starts["tuned"].prompt_encoder, starts["tuned"].mask_decoder), tuned,
                               rtol=1e-4, atol=1e-4)
    assert not torch.allclose(tuned, answer(tiny_vit.prompt_encoder, tiny_vit.mask_decoder), atol=1e-3)
    assert not any("lora_" in n for n, _ in starts["tuned"].named_parameters())
    torch.testing.assert_close(answer(starts["boxes"].prompt_encoder, starts["boxes"].mask_decoder),
                               answer(dec.boxes.prompt_encoder, dec.boxes.mask_decoder))
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    with torch.no_grad():
        for start in starts.values():
            for p in start.parameters():
                p.add_(1.0)
    for k, v in dec.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    dec.boxes = None
    with pytest.raises(UsamError, match="needs an adapter with a box decoder"):
        initial_box_decoder(model, "boxes")


def test_refine_decoder_boxes_needs_a_box_decoder(tmp_path):
    import usam
    from usam.errors import AdapterError

    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    usam.load(adapters=[str(target)])  # the shipped one has a box decoder
    cfg = json.loads((_without_box_decoder(target) / "config.json").read_text())
    cfg["head_options"]["fetal_head"]["refine_decoder"] = "boxes"
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="refine_decoder 'boxes' needs a box decoder"):
        usam.load(adapters=[str(target)])


def test_retraining_keeps_the_old_adapters_box_decoder(tiny_vit, tmp_path):
    """``usam train --init`` of an adapter with a box decoder: the new adapter carries it, weights and route."""
    from usam.adapters.adapter import Adapter
    from usam.adapters.config import AdapterConfig
    from usam.tasks import TaskSpec
    from usam.train.trainer import init_from

    def config(decoder):
        return AdapterConfig(name="boxy", backbone=tiny_vit.name, backbone_checksum=tiny_vit.checksum,
                             tasks={"seg": TaskSpec("seg", "segmentation", 2)}, lora=None,
                             input_size=tiny_vit.input_size, decoder=decoder)

    old = Adapter(config({"lora": None, "train": ["mask_decoder.iou_token"], "box_prompts": "boxes",
                          "boxes": "separate"}), tiny_vit)
    with torch.no_grad():
        for p in old.decoder.boxes.parameters():
            p.add_(0.05)
    d = old.save_pretrained(tmp_path / "old")
    new = Adapter(config({"lora": None, "train": ["mask_decoder.iou_token"]}), tiny_vit)
    assert new.decoder.boxes is None
    init_from(new, d, tiny_vit)
    assert new.decoder.boxes is not None and new.decoder.box_prompts == "boxes"
    assert new.config.decoder["boxes"] == "separate" and new.config.decoder["box_prompts"] == "boxes"
    carried = dict(new.decoder.boxes.named_parameters())
    for k, v in old.decoder.boxes.named_parameters():
        torch.testing.assert_close(carried[k], v.half().float(), rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def fetal_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("boxes") / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", out)
    return _without_box_decoder(out)


def _run(adapter_dir, data_root, monkeypatch, winner):
    """``train_box_decoder`` for a few steps on ``LIMIT`` real images per split; the val comparison made to
    favour ``winner`` ("boxes" or the adapter's present route), so that both outcomes are exercised."""
    import usam.train.boxes as boxes

    real = boxes.route_dice
    seen = {}

    def rigged(model, samples, route):
        seen[route] = real(model, samples, route)  # run it as it runs, then decide as the test needs
        return 1.0 if (route == "boxes") == (winner == "boxes") else 0.5

    monkeypatch.setattr(boxes, "route_dice", rigged)
    report = boxes.train_box_decoder(str(adapter_dir), str(data_root), steps=4, lr=1e-4, batch=2, limit=LIMIT,
                                     eval_every=2, precision="fp32", log=lambda *_: None)
    return report, seen


@pytest.mark.real
def test_a_box_decoder_that_loses_on_val_leaves_the_weights_as_they_were(fetal_copy, data_root, monkeypatch):
    before = (fetal_copy / "heads.safetensors").read_bytes()
    route = json.loads((fetal_copy / "config.json").read_text())["decoder"]["box_prompts"]
    report, seen = _run(fetal_copy, data_root, monkeypatch, winner=route)
    assert report["kept"] is False and report["val_route_before"] == route and set(seen) == {route, "boxes"}
    assert 0.5 < seen["boxes"] <= 1 and 0.5 < seen[route] <= 1  # real Dice of real fetal heads
    cfg = json.loads((fetal_copy / "config.json").read_text())
    assert "boxes" not in cfg["decoder"] and cfg["decoder"]["box_prompts"] == route
    assert cfg["training"]["box_decoder"]["kept"] is False
    assert f"**not kept** (boxes stay `{route}`)" in (fetal_copy / "README.md").read_text()
    assert (fetal_copy / "heads.safetensors").read_bytes() == before  # the record alone is written


@pytest.mark.real
def test_a_box_decoder_that_wins_on_val_answers_boxes_after_reload(fetal_copy, data_root, monkeypatch):
    import usam
    from usam.io import read_image, read_mask
    from usam.data.fmc import read_split
    from usam.ops.masks import mask_box
    from usam.predictor import Predictor

    s = read_split(Path(data_root) / "val", tasks=["fetal_head"])["fetal_head"][0]
    image = read_image(s.image_path)
    auto = usam.load(adapters=[str(fetal_copy)], precision="fp32", runtime="torch").predict(image).masks["fetal_head"]
    before = load_file(str(fetal_copy / "heads.safetensors"))
    report, _ = _run(fetal_copy, data_root, monkeypatch, winner="boxes")
    assert report["kept"] is True and report["train_objects"] == LIMIT and report["history"][-1]["kept_step"] in (0, 2, 4)
    steps = [h["step"] for h in report["history"][:-1]]
    assert steps == [0, 2, 4] and all(0 < h["val_dice"] <= 1 for h in report["history"][:-1])
    after = load_file(str(fetal_copy / "heads.safetensors"))
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("decoder.boxes.") for k in new) and set(before) <= set(after)
    for k in before:  # heads, tuned and click decoders untouched
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    # only its mask decoder is trained: its prompt encoder is the backbone's
    model = usam.load(adapters=[str(fetal_copy)], precision="fp32", runtime="torch")
    dec = model.adapter.decoder
    assert dec.box_prompts == "boxes" and dec.boxes is not None
    own_pe = dict(dec.boxes.prompt_encoder.named_parameters())
    for k, v in model.backbone.prompt_encoder.named_parameters():
        torch.testing.assert_close(own_pe[k], v.half().float(), rtol=0, atol=0, msg=k)
    card = (fetal_copy / "README.md").read_text()
    assert "fine-tuned by `python -m usam.train.boxes`" in card and "kept: a user's box goes to it" in card
    # the heads' own boxes (localisation) keep the tuned decoder they had: the automatic mask is unchanged
    cfg = json.loads((fetal_copy / "config.json").read_text())
    assert cfg["head_options"]["fetal_head"]["refine_decoder"] == "tuned"
    assert "refine_decoder" not in cfg["head_options"]["fetal_head_biometry"]  # sends no box
    np.testing.assert_array_equal(model.predict(image).masks["fetal_head"], auto)
    # a user's box goes to it: the same box under the backbone's decoder gives another answer
    p = Predictor(model)
    p.set_image(image)
    box = mask_box(read_mask(s.mask_path) == 1)
    own = p.predict(box=box, multimask_output=False, return_logits=True)[0]
    with dec.using(box_prompts="bare"):
        bare = p.predict(box=box, multimask_output=False, return_logits=True)[0]
    assert not np.allclose(own, bare)


@pytest.mark.real
def test_a_later_attempt_keeps_the_record_of_the_box_decoder_in_use(fetal_copy, data_root, monkeypatch):
    """After the winning run above: an attempt that loses goes to ``training.box_decoder_attempt``, the record and
    weights of the box decoder in use stay; an attempt where no step beat the backbone's decoder is not kept."""
    import usam.train.boxes as boxes

    cfg0 = json.loads((fetal_copy / "config.json").read_text())
    assert cfg0["decoder"]["box_prompts"] == "boxes" and cfg0["training"]["box_decoder"]["kept"] is True
    weights0 = load_file(str(fetal_copy / "heads.safetensors"))
    report, _ = _run(fetal_copy, data_root, monkeypatch, winner="not the box decoder")
    cfg = json.loads((fetal_copy / "config.json").read_text())
    assert report["kept"] is False and report["val_route_before"] == "boxes"
    assert cfg["training"]["box_decoder"] == cfg0["training"]["box_decoder"]
    assert cfg["training"]["box_decoder_attempt"]["kept"] is False and cfg["decoder"] == cfg0["decoder"]
    after = load_file(str(fetal_copy / "heads.safetensors"))
    for k in weights0:
        torch.testing.assert_close(after[k], weights0[k], rtol=0, atol=0, msg=k)
    # no step beats step 0 (the backbone's own decoder): nothing to compare, nothing kept
    real_fit = boxes.fit_box_decoder
    monkeypatch.setattr(boxes, "fit_box_decoder",
                        lambda *a, **k: (real_fit(*a, **k)[0], [{"step": 0, "val_dice": 0.9}, {"kept_step": 0}]))
    report, seen = _run(fetal_copy, data_root, monkeypatch, winner="boxes")
    assert report["kept"] is False and report["val_dice_box_decoder"] is None and set(seen) == {"boxes"}
    assert json.loads((fetal_copy / "config.json").read_text())["training"]["box_decoder"] == cfg0["training"]["box_decoder"]


@pytest.mark.real
def test_a_kept_box_decoder_warns_of_heads_that_follow_it_and_init_boxes_needs_one(tmp_path, data_root, monkeypatch):
    """Head options naming ``refine_decoder: boxes`` follow a new box decoder: the report says which; ``--init boxes``
    without a box decoder is refused before any image is encoded."""
    import usam.train.boxes as boxes

    folder = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["head_options"]["fetal_head"]["refine_decoder"] = "boxes"
    cfg["decoder"]["box_prompts"] = "tuned"  # a user's box elsewhere, the heads' on the box decoder
    (folder / "config.json").write_text(json.dumps(cfg))
    report, _ = _run(folder, data_root, monkeypatch, winner="boxes")
    assert report["kept"] is True and report["heads_following"] == ["fetal_head"]
    _without_box_decoder(folder)
    monkeypatch.setattr(boxes, "EmbeddingStore", lambda *a, **k: pytest.fail("encoded images for a refused init"))
    with pytest.raises(UsamError, match="no box decoder to start from"):
        boxes.train_box_decoder(str(folder), str(data_root), init="boxes", limit=1)


@pytest.mark.real
def test_box_examples_of_augmented_views_carry_their_moved_masks(data_root, tmp_path):
    """``views=3``: each image gives its objects as read, then on two augmented views (cache-mode training's
    augmentations), each view's mask and box moved with the image and its embedding that of the augmented image."""
    import usam
    from usam.data.augment import apply_augment
    from usam.data.fmc import read_split
    from usam.io import read_image, read_mask
    from usam.ops.masks import mask_box
    from usam.train.boxes import box_examples
    from usam.train.cache import EmbeddingStore
    from usam.train.examples import ExampleSource

    model = usam.load(precision="fp32", runtime="torch")
    store = EmbeddingStore(model, root=tmp_path)
    samples = read_split(Path(data_root) / "train", tasks=["fetal_head"])["fetal_head"][:2]
    plain = box_examples(store, samples, views=1)
    three = box_examples(store, samples, views=3, seed=5)
    assert len(plain) == 2 and len(three) == 6
    for a, b in zip(plain, three[::3]):  # view 0 is the image as read
        assert np.array_equal(a.truth, b.truth) and torch.equal(a.embedding, b.embedding)
    source = ExampleSource(model, "cache", store, augment=True, seed=5, views=3)
    moved_any = False
    for i, s in enumerate(samples):
        image, gt = read_image(s.image_path), read_mask(s.mask_path)
        digest, hw = source.meta(s.image_path)
        for k in (1, 2):
            e = three[3 * i + k]
            params = source.view_params(s.image_path, digest, hw, k)
            view, moved = apply_augment(image, gt, params=params)[:2]
            assert np.array_equal(e.truth, moved == 1) and np.array_equal(e.box, mask_box(moved == 1))
            moved_any |= not np.array_equal(e.truth, gt == 1)
            assert e.embedding.dtype == torch.float16 and e.embedding.shape == (1, 256, 64, 64)
            torch.testing.assert_close(e.embedding.float(), model.embed(view).embedding.half().float(),
                                       rtol=0, atol=1e-2)
    assert moved_any  # some view moved its object (a view may change intensities only)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 6  # 2 images x 3 views, cached for the next run
    with pytest.raises(UsamError, match="views must be >= 1"):
        from usam.train.boxes import train_box_decoder
        train_box_decoder(str(ROOT / "adapters" / "fetal_head"), "unused", views=0)


def test_bad_arguments_are_refused_before_anything_is_loaded(tiny_vit, tmp_path, monkeypatch, capsys):
    import usam
    from usam.adapters.adapter import PromptDecoder
    from usam.errors import AdapterError
    from usam.train.boxes import fit_box_decoder, main, train_box_decoder

    with pytest.raises(UsamError, match="train and val"):
        fit_box_decoder(PromptDecoder(tiny_vit), [], [], log=lambda *_: None)
    monkeypatch.setattr(usam, "load", lambda *a, **k: pytest.fail("loaded a model for refused arguments"))
    for kwargs in ({"steps": 0}, {"lr": -1.0}, {"batch": 0}, {"eval_every": 0}, {"limit": 0}):
        with pytest.raises(UsamError, match=">= 1"):
            train_box_decoder(str(ROOT / "adapters" / "fetal_head"), "unused", **kwargs)
    with pytest.raises(UsamError, match="init must be one of"):
        train_box_decoder(str(ROOT / "adapters" / "fetal_head"), "unused", init="clicks")
    for where in (tmp_path / "missing", "someone/fetal_head"):  # a Hub id: this writes into the folder
        with pytest.raises(AdapterError, match="not a local adapter folder"):
            train_box_decoder(str(where), "unused")
    for bad in (["--limit", "0"], ["--steps", "-3"], ["--batch", "x"], ["--views", "0"], ["--init", "clicks"]):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path), *bad])
        assert exc.value.code == 2
    assert "argument --batch: 'x' is not an integer" in capsys.readouterr().err  # usam.argtypes, as `usam` says it
    assert main([str(tmp_path / "missing")]) == 2


@pytest.mark.real
def test_the_shipped_breast_box_decoder_answers_on_the_bare_embedding(data_root):
    """``adapters/breast`` (encoder LoRA, ``box_prompts: boxes``): a box alone is the box decoder's answer on the
    LoRA-free embedding, exactly; a click still goes to the click decoder on the LoRA embedding."""
    import usam
    from usam.backbones.sam_style import sam_decode
    from usam.data.fmc import read_split
    from usam.io import read_image
    from usam.predictor import Predictor

    model = usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32", runtime="torch")
    dec = model.adapter.decoder
    assert model.adapter.lora_name and dec.box_prompts == "boxes" and dec.boxes is not None
    image = read_image(read_split(data_root / "test", tasks=["breast_lesion"])["breast_lesion"][3].image_path)
    pred = Predictor(model)
    emb = pred.set_image(image)
    box = np.array([60.0, 50.0, 300.0, 240.0])
    _, _, low = pred.predict(box=box, multimask_output=False)
    bare = model.embed_bare(image)
    with torch.no_grad():
        ref, _ = sam_decode(dec.boxes.prompt_encoder, dec.boxes.mask_decoder, bare.embedding,
                            boxes=torch.as_tensor(bare.geometry.boxes_to_input(box[None]), dtype=torch.float32),
                            multimask_output=False)
    np.testing.assert_array_equal(low, ref[0].float().numpy())
    assert not torch.equal(bare.embedding, emb.embedding)  # the LoRA embedding differs: the route matters
    _, _, click = pred.predict(np.array([[180.0, 150.0]]), np.array([1]))
    with torch.no_grad():
        ref_click, _ = sam_decode(dec.clicks.prompt_encoder, dec.clicks.mask_decoder, emb.embedding,
                                  points=(torch.as_tensor(emb.geometry.points_to_input(np.array([[[180.0, 150.0]]])),
                                                          dtype=torch.float32), torch.tensor([[1]])),
                                  multimask_output=True)
    np.testing.assert_allclose(click, ref_click[0].float().numpy(), atol=1e-5)
