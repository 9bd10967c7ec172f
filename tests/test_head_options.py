"""Inference-time head options (``usam/heads/refine.py``): post-processing, decoder routing, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usam.errors import AdapterError
from usam.heads.refine import check_head_options, postprocess_classes
from usam.ops.masks import fill_ellipse, largest_component, mask_extent

ROOT = Path(__file__).resolve().parents[1]


def _ellipse(shape=(200, 300), center=(150, 100), axes=(80, 50), angle=20) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, center, axes, angle, 0, 360, 1, thickness=-1)
    return m.astype(bool)


def _iou(a, b) -> float:
    return (a & b).sum() / (a | b).sum()


def test_fill_ellipse_recovers_a_dented_ellipse():
    truth = _ellipse()
    dented = truth.copy()
    dented[90:110, 60:120] = False  # a bite out of the left side
    assert _iou(dented, truth) < 0.97
    assert _iou(fill_ellipse(dented), truth) > 0.98
    tiny = np.zeros((10, 10), bool)
    tiny[5, 5] = True
    assert np.array_equal(fill_ellipse(tiny), tiny)  # too small to fit: unchanged


def test_logits_to_classes_threshold():
    from usam.heads.automask import logits_to_classes

    logits = torch.tensor([[[[-1.0, 0.5, 2.0]], [[0.2, 0.1, 3.0]]]])  # (1, 2 classes, 1, 3)
    assert logits_to_classes(logits).tolist() == [[[2, 1, 2]]]
    assert logits_to_classes(logits, 1.0).tolist() == [[[0, 0, 2]]]
    assert logits_to_classes(logits, -2.0).tolist() == [[[2, 1, 2]]]


def test_largest_component_and_extent():
    m = np.zeros((50, 60), bool)
    m[10:30, 5:25] = True
    m[40:43, 50:55] = True
    assert np.array_equal(largest_component(m), m & (np.arange(50)[:, None] < 35))
    assert mask_extent(m).tolist() == [5, 10, 25, 30]
    assert mask_extent(np.zeros((4, 4), bool)) is None
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_postprocess_classes_per_class():
    classes = np.zeros((200, 300), np.uint8)
    classes[_ellipse()] = 2
    classes[5:15, 5:15] = 2          # spurious blob of class 2
    classes[170:190, 10:60] = 1      # class 1, one component
    out = postprocess_classes(classes, {"largest_component": True})
    assert (out[5:15, 5:15] == 0).all() and (out[170:190, 10:60] == 1).all()
    filled = postprocess_classes(classes, {"ellipse_fill": [2]})
    assert (filled[170:190, 10:60] == 1).all()          # class 1 untouched
    assert _iou(filled == 2, _ellipse()) > 0.98          # class 2 replaced by its ellipse (blob dropped)
    assert postprocess_classes(classes, {}) is classes


@pytest.mark.parametrize("options, message", [
    ({"nope": {}}, "not a task of this adapter"),
    ({"fetal_head": {"refine_with_decoder": True}}, "unknown options ['refine_with_decoder']"),
    ({"fetal_head": {"refine_with_box": True, "refine_decoder": "mine"}}, "must be one of ['base', 'tuned', 'boxes']"),
    ({"fetal_head_biometry": {"ellipse_from": "fetal_head_biometry"}}, "is not a segmentation task"),
    ({"fetal_head": []}, "must be a mapping"),
    ({"fetal_head": {"mask_threshold": "high"}}, "mask_threshold must be a number in [-8, 8]"),
    ({"fetal_head": {"mask_threshold": 50}}, "mask_threshold must be a number in [-8, 8]"),
    ({"fetal_head": {"mask_threshold": True}}, "mask_threshold must be a number in [-8, 8]"),
    ({"fetal_head": {"mask_threshold": float("nan")}}, "mask_threshold must be a number in [-8, 8]"),
])
def test_bad_head_options_in_an_adapter_are_refused(tmp_path, options, message):
    import usam

    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    cfg = json.loads((target / "config.json").read_text())
    cfg["head_options"] = options
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        usam.load(adapters=[str(target)])
    kinds = {"fetal_head": "segmentation", "fetal_head_biometry": "regression"}
    with pytest.raises(Exception, match="head_options"):
        check_head_options(options, kinds)


@pytest.fixture(scope="module")
def breast(data_root):
    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image

    model = usam.load(adapters=[str(ROOT / "adapters" / "breast")], precision="fp32")
    row = read_split(data_root / "test", tasks=["breast_lesion"])["breast_lesion"][3]
    return model, read_image(row.image_path)


def test_box_prompts_route_reaches_the_chosen_decoder(breast):
    from usam.backbones.sam_style import sam_decode

    model, image = breast
    dec = model.adapter.decoder
    emb = model.embed(image).embedding
    box = torch.tensor([[40.0, 50.0, 160.0, 150.0]])
    with torch.no_grad():
        base, _ = dec.decode(emb, boxes=box, multimask_output=False, box_prompts="base")
        tuned, _ = dec.decode(emb, boxes=box, multimask_output=False, box_prompts="tuned")
        ref_base, _ = sam_decode(model.backbone.prompt_encoder, model.backbone.mask_decoder, emb, None, box, None, False, None)
        ref_tuned, _ = sam_decode(dec.prompt_encoder, dec.mask_decoder, emb, None, box, None, False, None)
    assert torch.equal(base, ref_base) and torch.equal(tuned, ref_tuned)
    assert not torch.equal(base, tuned)
    # box_prompts "clicks": a user's box alone goes to the click decoder; the heads' boxes (refinement, locate)
    # stay on the backbone's decoder
    from usam.heads.refine import decode_box

    with torch.no_grad(), dec.using(box_prompts="clicks"):
        clicks, _ = dec.decode(emb, boxes=box, multimask_output=False)
        heads_box, _ = decode_box(dec, emb, box, None)
        ref_clicks, _ = sam_decode(dec.clicks.prompt_encoder, dec.clicks.mask_decoder, emb, None, box, None, False, None)
    assert torch.equal(clicks, ref_clicks) and not torch.equal(clicks, base)
    assert torch.equal(heads_box, ref_base)


def test_box_prompts_bare_answers_a_box_as_the_bare_backbone(breast):
    """``box_prompts: bare`` (an adapter with encoder LoRA): a box alone gets exactly the bare backbone's answer (its
    decoder on the LoRA-free embedding); clicks and the heads keep the adapter's LoRA embedding; the adapter and its
    LoRA stay active; ``set_embedding`` answers on the embedding given."""
    from usam.predictor import Predictor

    model, image = breast
    assert model.adapter.lora_name, "adapters/breast carries encoder LoRA"
    name, dec = model.active_adapter, model.adapter.decoder
    box = np.array([60.0, 50.0, 300.0, 240.0])
    clicks = (np.array([[180.0, 150.0]]), np.array([1]))
    pred = Predictor(model)
    pred.set_image(image)
    with dec.using(box_prompts="base"):  # (the shipped adapter answers boxes with its box decoder)
        base_box = pred.predict(box=box, multimask_output=False, return_logits=True)
        base_click = pred.predict(*clicks, return_logits=True)
    model.set_adapter(None)
    bare = Predictor(model)
    bare.set_image(image)
    ref = bare.predict(box=box, multimask_output=False, return_logits=True)
    model.set_adapter(name)
    with dec.using(box_prompts="bare"):
        got = pred.predict(box=box, multimask_output=False, return_logits=True)
        click = pred.predict(*clicks, return_logits=True)
        auto = model.predict(image)
        assert model.active_adapter == name
        lora_emb = model.embed(image).embedding
        pred.set_embedding(model.embed(image))
        given = pred.predict(box=box, multimask_output=False, return_logits=True)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0], base_box[0])  # the LoRA moves the box answer: the route matters
    for a, b in zip(click, base_click):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(given, base_box):
        np.testing.assert_array_equal(a, b)
    torch.testing.assert_close(lora_emb, pred.get_image_embedding(), rtol=0, atol=0)
    plain = model.predict(image)
    for tid in plain.masks:
        np.testing.assert_array_equal(auto.masks[tid], plain.masks[tid])


def test_box_prompts_clicks_needs_a_click_decoder(tmp_path):
    import usam

    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    cfg = json.loads((target / "config.json").read_text())
    cfg["decoder"].pop("clicks", None)
    cfg["decoder"]["box_prompts"] = "clicks"
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=r"box_prompts 'clicks' needs a click decoder of its own"):
        usam.load(adapters=[str(target)])


def test_run_heads_applies_the_options(breast):
    model, image = breast
    opts = model.adapter.config.head_options
    saved = json.loads(json.dumps(opts))
    try:
        opts.clear()
        plain = model.predict(image)
        opts.update({"breast_lesion": {"refine_with_box": True, "refine_decoder": "tuned", "largest_component": True},
                     "breast_lesion_det": {"box_from": "breast_lesion"}})
        pred = model.predict(image)
        mask = pred.masks["breast_lesion"] > 0
        n, _ = cv2.connectedComponents(mask.astype(np.uint8))
        assert n <= 2                                                   # one component at most
        assert np.array_equal(pred.boxes["breast_lesion_det"], mask_extent(mask))
        assert not np.array_equal(pred.boxes["breast_lesion_det"], plain.boxes["breast_lesion_det"])
        opts["breast_lesion"] = {"ellipse_fill": [1]}
        filled = model.predict(image).masks["breast_lesion"]
        assert np.array_equal(filled > 0, fill_ellipse(plain.masks["breast_lesion"] > 0))
        np.testing.assert_allclose(model.predict(image).probabilities["breast_3cls"], plain.probabilities["breast_3cls"])
        # mask_threshold: a higher logit threshold gives a mask inside the default one, a lower one a mask around it
        base = plain.masks["breast_lesion"] > 0
        opts["breast_lesion"] = {"mask_threshold": 2.0}
        inner = model.predict(image).masks["breast_lesion"] > 0
        opts["breast_lesion"] = {"mask_threshold": -2.0}
        outer = model.predict(image).masks["breast_lesion"] > 0
        assert base.sum() > 100 and not (inner & ~base).any() and not (base & ~outer).any()
        assert inner.sum() < base.sum() < outer.sum()
        opts["breast_lesion"] = {"mask_threshold": 0.0}
        assert np.array_equal(model.predict(image).masks["breast_lesion"], plain.masks["breast_lesion"])
    finally:
        opts.clear()
        opts.update(saved)


def test_bad_box_prompts_route_is_refused(tmp_path):
    import usam

    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    cfg = json.loads((target / "config.json").read_text())
    cfg["decoder"]["box_prompts"] = "both"
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=r"is not a usam adapter config \(decoder.box_prompts must be 'base', 'tuned', 'clicks', 'bare' or 'boxes', got 'both'"):
        usam.load(adapters=[str(target)])


def test_card_lists_the_inference_options():
    from usam.adapters.config import AdapterConfig
    from usam.adapters.card import adapter_card

    cfg = AdapterConfig.from_dict(json.loads((ROOT / "adapters" / "fetal_head" / "config.json").read_text()))
    cfg.head_options = {"fetal_head": {"refine_with_box": True, "ellipse_fill": [1]}}
    cfg.decoder = {**cfg.decoder, "box_prompts": "tuned"}
    card = adapter_card(cfg, {})
    assert "## Inference options" in card
    assert "- `fetal_head`: `refine_with_box: true`, `ellipse_fill: [1]`" in card
    assert "go to the tuned decoder (`box_prompts: tuned`)" in card
    cfg.training = {**cfg.training, "head_options_validation": {"mask_threshold": {"fetal_head": {
        "metric": "hc_abs_err_mm", "images": 50, "0.0": 7.2778, "-0.5": 8.1, "1.0": 6.3235, "chosen": "1.0"}}}}
    assert ("- `fetal_head` automatic mask threshold (logit, SAM's `mask_threshold`) chosen by val head-circumference "
            "error (mm), n=50: 0 -> 7.2778, 1.0 -> 6.3235") in adapter_card(cfg, {})
    for broken in ({"chosen": "high"}, {"metric": "dice"}, "1.0"):  # a hand-edited record: left off, no crash
        cfg.training = {**cfg.training, "head_options_validation": {"mask_threshold": {"fetal_head": broken}}}
        assert "automatic mask threshold" not in adapter_card(cfg, {})
    assert "click_window" not in card
    cfg.decoder = {**cfg.decoder, "click_window": 6}
    assert "the first click and the latest 5 (`click_window: 6`)" in adapter_card(cfg, {})
    cfg.decoder = {k: v for k, v in cfg.decoder.items() if k != "click_merge"}
    assert "click_merge" not in adapter_card(cfg, {})
    cfg.decoder = {**cfg.decoder, "click_merge": 10}
    assert ("from click 11 of a prompt on (every click so far, the previous mask fed back), the decoder's answer "
            "replaces the mask shown only in the connected region where it differs from it and that holds the latest "
            "click (`click_merge: 10`" in adapter_card(cfg, {}))
    # fetal_head's box decoder (from its tuned decoder, 4 views per image) won on val: the card says how it was made
    line = next(t for t in adapter_card(cfg, {}).splitlines() if t.startswith("- box decoder:"))
    record = cfg.training["box_decoder"]
    assert line.startswith("- box decoder: the adapter's tuned decoder (LoRA merged) fine-tuned")
    assert (f"{record['train_objects']} ground-truth boxes of {record['train_images']} train images in 4 views each"
            in line)
    assert f"`tuned` {record['val_dice_before']} -> box decoder {record['val_dice_box_decoder']}: kept" in line
    # an attempt that lost, from the backbone's decoder, one view: the card says so
    cfg.training = {**cfg.training, "box_decoder": {**record, "init": "backbone", "views": 1, "kept": False}}
    line = next(t for t in adapter_card(cfg, {}).splitlines() if t.startswith("- box decoder:"))
    assert line.startswith("- box decoder: the backbone's mask decoder fine-tuned") and "views" not in line
    assert "**not kept** (boxes stay `tuned`)" in line
    cfg.head_options, cfg.decoder = {}, None
    cfg.training = {k: v for k, v in cfg.training.items() if k != "box_decoder"}
    assert "## Inference options" not in adapter_card(cfg, {})
    breast = AdapterConfig.from_dict(json.loads((ROOT / "adapters" / "breast" / "config.json").read_text()))
    record = breast.training["locate"]["breast_lesion"]
    line = next(t for t in adapter_card(breast, {}).splitlines() if "localisation head" in t)
    assert f"{record['epochs']} epochs on {record['train']} images" in line
    assert f"val peak-box IoU {record['val_peak_iou']} (n={record['val']})" in line


def _tune_script():
    """``scripts/tune_head_options.py`` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tune_head_options", ROOT / "scripts" / "tune_head_options.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    return tune


def test_tune_head_options_script_writes_valid_choices(tmp_path, data_root):
    import usam

    tune = _tune_script()
    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    cfg = json.loads((target / "config.json").read_text())
    # options cleared; a trained localisation head stays named (its weights are in heads.safetensors)
    cfg["head_options"] = {t: {"locate": "off"} for t, o in cfg["head_options"].items() if "locate" in o}
    assert cfg["head_options"] == {"fetal_head": {"locate": "off"}}
    (target / "config.json").write_text(json.dumps(cfg))
    assert tune.main([str(target), "--data", str(data_root), "--limit", "2", "--quality-train", "0"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    report = cfg["training"]["head_options_validation"]
    shipped = json.loads((ROOT / "adapters" / "fetal_head" / "config.json").read_text())
    for key in ("click_window", "click_zoom", "click_merge"):  # click choices made earlier are kept with their records
        assert report.pop(key, None) == shipped["training"]["head_options_validation"].get(key)
    quality = report.pop("quality")  # the quality estimate shown: chosen in every run
    _check_quality_choice(quality, cfg, target)
    thresholds = report.pop("mask_threshold")  # the automatic mask's logit threshold, by HC error for fetal heads
    record = thresholds["fetal_head"]
    assert record["metric"] == "hc_abs_err_mm" and record["images"] == 2
    scores = {str(t): record[str(t)] for t in tune.MASK_THRESHOLDS}
    best = min(scores, key=scores.get)
    assert record["chosen"] == (best if scores[best] <= (1 - tune.THRESHOLD_MIN_GAIN) * scores["0.0"] else "0.0")
    assert cfg["head_options"]["fetal_head"].get("mask_threshold", 0.0) == float(record["chosen"])
    assert set(report) == {"fetal_head", "fetal_head_biometry", "box_prompts"}
    for tid, r in report.items():
        scores = {k: v for k, v in r.items() if k not in ("metric", "chosen", "images", "objects")}
        assert r["chosen"] in scores and len(scores) >= 2
        best = min(scores.values()) if r["metric"] == "mre_px" else max(scores.values())
        assert scores[r["chosen"]] == best
    assert cfg["decoder"]["box_prompts"] == report["box_prompts"]["chosen"]
    model = usam.load(adapters=[str(target)])  # the written options pass validation
    assert model.adapter.config.head_options == cfg["head_options"]

    # --clicks-only: the click window, the zoomed view, the merge and the first click's answer alone, by the mean of
    # the Dice-vs-clicks curve; the rest kept as it was
    before = cfg
    assert tune.main([str(target), "--data", str(data_root), "--limit", "2", "--clicks", "3", "--clicks-only",
                      "--quality-train", "0"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    first = cfg["training"]["head_options_validation"].pop("first_click")
    scores = {k: first[k] for k in ("direct", "box_refine")}
    assert first["chosen"] == max(scores, key=scores.get) and first["objects"] == 2
    assert cfg["decoder"].get("first_click", "direct") == first["chosen"]
    assert usam.load(adapters=[str(target)]).adapter.decoder.first_click == first["chosen"]
    windows = cfg["training"]["head_options_validation"].pop("click_window")
    zoom = cfg["training"]["head_options_validation"].pop("click_zoom")
    zooms = {k: v for k, v in zoom.items() if k not in ("metric", "chosen", "images", "objects", "curves")}
    assert set(zooms) == {tune._option_name("click_zoom", z) for z in tune.CLICK_ZOOMS} and "off" in zooms
    best = max(zooms, key=zooms.get)
    assert zoom["chosen"] == (best if zooms[best] - zooms["off"] >= tune.ZOOM_MIN_GAIN else "off")
    assert zoom["objects"] == 2
    chosen_zoom = tune.CLICK_ZOOMS[list(zooms).index(zoom["chosen"])]
    written = cfg["decoder"].get("click_zoom")
    assert written == (None if chosen_zoom is None else {"after": chosen_zoom[0], "expand": chosen_zoom[1]})
    assert usam.load(adapters=[str(target)]).adapter.decoder.click_zoom == chosen_zoom
    merge = cfg["training"]["head_options_validation"].pop("click_merge")
    merges = {k: v for k, v in merge.items() if k not in ("metric", "chosen", "images", "objects", "curves")}
    assert set(merges) == {tune._option_name("click_merge", m) for m in tune.CLICK_MERGES} and "off" in merges
    assert merge["chosen"] == max(merges, key=merges.get) and merge["objects"] == 2
    chosen_merge = tune.CLICK_MERGES[list(merges).index(merge["chosen"])]
    assert cfg["decoder"].get("click_merge") == chosen_merge
    assert usam.load(adapters=[str(target)]).adapter.decoder.click_merge == chosen_merge
    # re-chosen after the first click's answer (its figures follow that answer)
    _check_quality_choice(cfg["training"]["head_options_validation"].pop("quality"), cfg, target)
    assert cfg["head_options"] == before["head_options"]
    assert cfg["training"]["head_options_validation"] == {**report, "mask_threshold": thresholds}
    scores = {k: windows[k] for k in ("all", "4", "5", "6", "8", "10")}
    assert windows["chosen"] == max(scores, key=scores.get) and windows["objects"] == windows["images"] == 2
    assert cfg["decoder"].get("click_window") == (None if windows["chosen"] == "all" else int(windows["chosen"]))
    assert usam.load(adapters=[str(target)]).adapter.decoder.click_window == cfg["decoder"].get("click_window")


def _check_quality_choice(quality: dict, cfg: dict, target: Path, objects: int = 2) -> None:
    """``decoder.quality``: every estimate scored; the chosen one has the best Spearman among those whose error is
    within ``QUALITY_SLACK`` of the predicted IoU's; written (unless the default) and loaded."""
    import usam
    from usam.train.calibrate import QUALITY_SLACK

    assert quality["objects"] == objects and set(quality) >= {"predicted", "stability", "mean", "chosen"}
    kinds = [k for k in ("predicted", "stability", "mean", "fitted") if k in quality]
    allowed = {k: quality[k]["iou_spearman"] for k in kinds
               if quality[k]["iou_error"] <= quality["predicted"]["iou_error"] + QUALITY_SLACK
               and quality[k]["iou_spearman"] is not None}
    assert quality["chosen"] == (max(allowed, key=allowed.get) if allowed else "predicted")
    assert cfg["decoder"].get("quality", "predicted") == quality["chosen"]
    decoder = usam.load(adapters=[str(target)]).adapter.decoder
    assert decoder.quality == quality["chosen"]
    if "fitted" in quality:  # fitted on train objects, written only when chosen
        assert quality["fit"]["train_objects"] >= 10 and len(quality["fit"]["quality_fit"]) == 3
        fit = tuple(quality["fit"]["quality_fit"]) if quality["chosen"] == "fitted" else None
        assert decoder.quality_fit == fit and cfg["decoder"].get("quality_fit") == (list(fit) if fit else None)


def test_a_new_box_route_leaves_the_heads_own_boxes_where_they_were(tmp_path, data_root, monkeypatch):
    """``--box-only`` choosing a user's box route (here ``clicks``, forced) would give the heads' localisation the
    backbone's decoder: the route they had is pinned as ``refine_decoder`` and the automatic mask stays the same."""
    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image
    from conftest import without_box_decoder

    tune = _tune_script()
    target = without_box_decoder(shutil.copytree(ROOT / "adapters" / "fetal_head", tmp_path / "fetal_head"))
    assert "refine_decoder" not in json.loads((target / "config.json").read_text())["head_options"]["fetal_head"]
    image = read_image(read_split(data_root / "val", tasks=["fetal_head"])["fetal_head"][0].image_path)
    before = usam.load(adapters=[str(target)], precision="fp32", runtime="torch").predict(image).masks["fetal_head"]

    def forced(model, split, seg, report):
        model.adapter.decoder.box_prompts = "clicks"
        return "clicks"

    monkeypatch.setattr(tune, "tune_box_route", forced)
    assert tune.main([str(target), "--data", str(data_root), "--limit", "2", "--box-only"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    assert cfg["decoder"]["box_prompts"] == "clicks" and cfg["head_options"]["fetal_head"]["refine_decoder"] == "tuned"
    after = usam.load(adapters=[str(target)], precision="fp32", runtime="torch").predict(image).masks["fetal_head"]
    np.testing.assert_array_equal(after, before)


def test_tune_head_options_quality_only_changes_the_quality_alone(tmp_path, data_root):
    tune = _tune_script()
    target = tmp_path / "breast"
    shutil.copytree(ROOT / "adapters" / "breast", target)
    before = json.loads((target / "config.json").read_text())
    with pytest.raises(SystemExit):  # argparse: a negative count
        tune.main([str(target), "--data", str(data_root), "--quality-only", "--quality-train", "-1"])
    # --limit caps the train rows the map is fitted to as well: 9 objects are too few for 3 coefficients
    assert tune.main([str(target), "--data", str(data_root), "--limit", "9", "--quality-only"]) == 0
    assert "fitted" not in json.loads((target / "config.json").read_text())["training"]["head_options_validation"]["quality"]
    assert tune.main([str(target), "--data", str(data_root), "--limit", "10", "--quality-only",
                      "--quality-train", "10"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    quality = cfg["training"]["head_options_validation"].pop("quality")
    assert "fitted" in quality  # fitted on 10 train objects: a candidate
    _check_quality_choice(quality, cfg, target, objects=10)
    card = (target / "README.md").read_text()  # the card follows the choice
    assert (f"(`quality: {quality['chosen']}`)" in card) == (quality["chosen"] != "predicted")
    assert ("fitted quality = clip(" in card) == (quality["chosen"] == "fitted")
    before["training"]["head_options_validation"].pop("quality", None)
    for c in (before, cfg):
        c["decoder"].pop("quality", None), c["decoder"].pop("quality_fit", None)
    assert cfg == before  # nothing else is touched


def test_rewrite_card_follows_the_folder(tmp_path):
    """``rewrite_card``: the card of an adapter folder rebuilt from its (edited) config.json and metrics.json, or from
    metrics given; a folder that is not an adapter is refused and its README left alone."""
    from usam.adapters import rewrite_card

    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    cfg = json.loads((target / "config.json").read_text())
    cfg["decoder"]["click_window"] = 3
    (target / "config.json").write_text(json.dumps(cfg))
    figure = json.loads((target / "metrics.json").read_text())["test"]["fetal_head"]["dice_auto"]
    stored = f"| fetal_head | Dice (automatic) | {figure:.4f} |"
    rewrite_card(target)
    card = (target / "README.md").read_text()
    assert "(`click_window: 3`)" in card and stored in card  # the edit and the stored test figures
    rewrite_card(target, {"test": {"fetal_head": {"dice_auto": 0.1234}}})
    card = (target / "README.md").read_text()
    assert "0.1234" in card and stored not in card
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("mine")
    with pytest.raises(AdapterError):
        rewrite_card(tmp_path / "other")
    assert (tmp_path / "other" / "README.md").read_text() == "mine"


def test_tune_head_options_merge_only_changes_the_merge_alone(tmp_path, data_root):
    """``--merge-only``: ``decoder.click_merge`` chosen by the mean of the click curve, from every merge of
    ``CLICK_MERGES`` (those starting after the last click score as off); nothing else, the quality estimate included
    (a merge never touches a first click), is touched."""
    tune = _tune_script()
    target = tmp_path / "intrapartum"
    shutil.copytree(ROOT / "adapters" / "intrapartum", target)
    before = json.loads((target / "config.json").read_text())
    with pytest.raises(SystemExit):  # argparse: needs --clicks
        tune.main([str(target), "--data", str(data_root), "--merge-only"])
    assert tune.main([str(target), "--data", str(data_root), "--limit", "2", "--clicks", "6", "--merge-only"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    merge = cfg["training"]["head_options_validation"].pop("click_merge")
    names = [tune._option_name("click_merge", m) for m in tune.CLICK_MERGES]
    scores = {name: merge[name] for name in names}
    assert merge["objects"] == 4 and merge["images"] == 2  # two classes per image
    assert scores["after 8"] == scores["after 10"] == scores["off"]  # not reached in 6 clicks
    assert merge["chosen"] == max(scores, key=scores.get)
    chosen = tune.CLICK_MERGES[list(scores).index(merge["chosen"])]
    assert cfg["decoder"].get("click_merge") == chosen
    assert (f"(`click_merge: {chosen}`" in (target / "README.md").read_text()) == (chosen is not None)
    before["training"]["head_options_validation"].pop("click_merge", None)
    for c in (before, cfg):
        c["decoder"].pop("click_merge", None)
    assert cfg == before  # nothing else is touched


def test_tune_head_options_heads_only_changes_the_head_options_alone(tmp_path, data_root):
    """``--heads-only`` (after a new localisation head): the head options and their records are chosen again on val,
    the decoder block (box route, click settings, quality) and every other record stay as they were."""
    tune = _tune_script()
    target = tmp_path / "fetal_head"
    shutil.copytree(ROOT / "adapters" / "fetal_head", target)
    before = json.loads((target / "config.json").read_text())
    assert tune.main([str(target), "--data", str(data_root), "--limit", "3", "--heads-only"]) == 0
    cfg = json.loads((target / "config.json").read_text())
    assert cfg["decoder"] == before["decoder"]
    report, old = cfg["training"].pop("head_options_validation"), before["training"].pop("head_options_validation")
    assert {k: v for k, v in report.items() if k not in ("fetal_head", "fetal_head_biometry", "mask_threshold")} == \
        {k: v for k, v in old.items() if k not in ("fetal_head", "fetal_head_biometry", "mask_threshold")}
    assert report["fetal_head"] != old["fetal_head"]  # scored again, on 3 rows
    assert any(k.startswith("locate_") for k in report["fetal_head"])
    assert cfg["training"] == before["training"]
    check_head_options(cfg["head_options"], {"fetal_head": "segmentation", "fetal_head_biometry": "regression"})
    assert cfg["head_options"]["fetal_head"]["locate"] in ("heatmap", "off")
