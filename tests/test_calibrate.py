"""Calibrating the quality score (issue #14): ``usam/train/calibrate.py`` refits the click decoder's IoU head on
simulated click sessions; the saved adapter's scores are what ``usam evaluate --clicks`` then measures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from usam.errors import PromptError, UsamError
from usam.train.calibrate import Passes, click_curve, first_click_scores, fit_affine, fit_iou_head

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 6


def _direct(adapter_dir):
    """The adapter in fp32 on PyTorch with its first click answered ``direct`` and no zoomed view, as calibration's
    sessions run it (``collect_passes``: the click decoder's own candidates and scores on the whole image, not
    ``first_click: box_refine``'s, nor ``click_zoom``'s)."""
    import usam

    model = usam.load(adapters=[str(adapter_dir)], precision="fp32", runtime="torch")
    model.adapter.decoder.first_click = "direct"
    model.adapter.decoder.click_zoom = None
    return model


def _passes(n: int, seed: int) -> Passes:
    """First-click passes whose three candidates' IoUs are one fixed function of the features (``seed``: which)."""
    w = torch.randn(16, 3, generator=torch.Generator().manual_seed(123)) * 0.5
    feats = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    ious = torch.sigmoid(feats @ w)
    targets = torch.cat([torch.full((n, 1), float("nan")), ious], dim=1)
    return Passes(feats, targets, torch.ones(n, dtype=torch.bool))


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def test_the_fit_learns_the_measured_ious_and_chooses_better_masks():
    train, val = _passes(400, 0), _passes(100, 1)
    head = _mlp()
    before = first_click_scores(head, val)
    new, history = fit_iou_head(head, train, val, epochs=300, lr=1e-2, log=lambda *_: None)
    after = first_click_scores(new, val)
    assert after["iou_error"] < 0.5 * before["iou_error"] and after["iou_spearman"] > 0.8
    assert after["dice"] >= before["dice"] and history[-1]["kept_epoch"] > 0
    assert not any(torch.equal(a, b) for a, b in zip(head.state_dict().values(), new.state_dict().values()))


def test_a_fit_that_would_choose_worse_masks_keeps_the_original_head():
    """Train targets that rank the candidates the other way round from val: every epoch chooses worse val masks."""
    train, val = _passes(400, 0), _passes(100, 1)
    train.targets[:, 1:] = 1 - train.targets[:, 1:]
    head = _mlp()
    new, history = fit_iou_head(head, train, val, epochs=60, lr=1e-2, log=lambda *_: None)
    if history[-1]["kept_epoch"] == 0:
        assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), new.state_dict().values()))
    assert first_click_scores(new, val)["dice"] >= first_click_scores(head, val)["dice"]


@pytest.fixture(scope="module")
def calibrated(data_root, tmp_path_factory):
    from usam.train.calibrate import calibrate_adapter

    out = tmp_path_factory.mktemp("calibrate") / "breast"
    shutil.copytree(ROOT / "adapters" / "breast", out)
    report = calibrate_adapter(str(out), str(data_root), n_clicks=3, starts=2, epochs=60, limit=LIMIT, fit="head",
                               log=lambda *_: None)
    return out, report


def test_the_affine_fit_removes_bias_and_scale_and_keeps_every_choice():
    """Scores that are 2 x IoU - 0.3 of the truth: the fit finds a = 0.5, b = 0.15, the error vanishes, and the
    ranking (hence every candidate chosen, and Spearman) stays."""
    train, val = _passes(200, 1), _passes(100, 2)
    w = torch.randn(16, 3, generator=torch.Generator().manual_seed(123)) * 0.5  # _passes' truth
    exact = _AffineOfTruth(w, scale=2.0, shift=-0.3)
    new, ab = fit_affine(exact, train)
    assert ab["a"] == pytest.approx(0.5, abs=1e-4) and ab["b"] == pytest.approx(0.15, abs=1e-4)
    before, after = first_click_scores(exact, val), first_click_scores(new, val)
    assert before["iou_error"] > 0.1 and after["iou_error"] < 1e-4
    assert after["iou_spearman"] == pytest.approx(before["iou_spearman"]) and after["dice"] == before["dice"]
    with pytest.raises(UsamError, match="do not rise"):
        fit_affine(_AffineOfTruth(w, scale=-1.0, shift=1.0), train)


class _AffineOfTruth(torch.nn.Module):
    """``scale * IoU + shift`` of :func:`_passes`' truth for the three candidates (token 0: 0), ending in a Linear as
    SAM's IoU head does."""

    def __init__(self, w: torch.Tensor, scale: float, shift: float):
        super().__init__()
        self.w, self.out = w, torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.out.weight.copy_(torch.eye(4) * scale)
            self.out.bias.copy_(torch.tensor([0.0, shift, shift, shift]))

    def forward(self, x):
        return self.out(torch.cat([torch.zeros(len(x), 1), torch.sigmoid(x @ self.w)], dim=1))


def test_an_affine_calibration_changes_scores_not_masks(data_root, tmp_path):
    """A real affine calibration (the default) on a few breast images: only the IoU head's last layer changes, the
    click curve is the original adapter's exactly, and the saved scores are what ``usam evaluate --clicks`` finds."""
    from usam.challenge.interactive import evaluate_clicks
    from usam.data.fmc import read_split
    from usam.train.calibrate import calibrate_adapter

    out = tmp_path / "breast"
    shutil.copytree(ROOT / "adapters" / "breast", out)
    report = calibrate_adapter(str(out), str(data_root), n_clicks=3, starts=1, limit=LIMIT, log=lambda *_: None)
    assert report["fit"] == "affine" and report["val_curve_after"] == report["val_curve_before"]
    assert report["val_first_click_after"]["iou_spearman"] == pytest.approx(report["val_first_click_before"]["iou_spearman"], abs=1e-3)
    old, new = load_file(str(ROOT / "adapters" / "breast" / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    last = "decoder.clicks.mask_decoder.iou_prediction_head.layers.2."
    assert changed == ({last + "weight", last + "bias"} if report["kept"] else set())
    assert "affine map" in (out / "README.md").read_text()
    rows = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][:LIMIT]
    runs = [evaluate_clicks(_direct(w), "breast", rows, n_clicks=3, progress=False)
            for w in (ROOT / "adapters" / "breast", out)]
    np.testing.assert_allclose(runs[1]["dice_curve"], runs[0]["dice_curve"], atol=1e-6)  # the same masks
    saved = report["val_first_click_after" if report["kept"] else "val_first_click_before"]
    assert runs[1]["predicted_iou_error"] == pytest.approx(saved["iou_error"], abs=2e-3)


def test_calibration_saves_the_head_into_the_adapter_and_nothing_else(calibrated):
    out, report = calibrated
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["calibration"]["val_first_click_after"] == report["val_first_click_after"]
    assert report["train_passes"] > report["val_passes"] > 0 and report["val_images"] == LIMIT
    card = (out / "README.md").read_text()
    assert "python -m usam.train.calibrate" in card and f"n={report['val_first_click_after']['objects']}" in card
    old, new = load_file(str(ROOT / "adapters" / "breast" / "heads.safetensors")), load_file(str(out / "heads.safetensors"))
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    head = "decoder.clicks.mask_decoder.iou_prediction_head."
    assert all(k.startswith(head) for k in changed)
    assert bool(changed) == (report["kept"] and report["history"][-1]["kept_epoch"] > 0)
    assert len(report["val_curve_before"]) == len(report["val_curve_after"]) == 3
    assert report["kept"] == (np.mean(report["val_curve_after"]) >= np.mean(report["val_curve_before"]))
    shipped = json.loads((ROOT / "adapters" / "breast" / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k != "training"} == {k: v for k, v in shipped.items() if k != "training"}


def test_the_reported_val_figures_are_what_usam_evaluate_measures(calibrated, data_root):
    """The report's first-click figures (offline, from recorded passes) match the product's click benchmark run on
    the saved adapter: so the saved head is the one that was scored."""
    from usam.challenge.interactive import evaluate_clicks
    from usam.data.fmc import read_split

    out, report = calibrated
    rows = read_split(data_root / "val", tasks=["breast_lesion"])["breast_lesion"][:LIMIT]
    saved = "val_first_click_after" if report["kept"] else "val_first_click_before"
    for where, key in ((ROOT / "adapters" / "breast", "val_first_click_before"), (out, saved)):
        model = _direct(where)
        res = evaluate_clicks(model, "breast", rows, n_clicks=1, progress=False)
        assert res["n_objects"] == report[key]["objects"]
        assert res["predicted_iou_error"] == pytest.approx(report[key]["iou_error"], abs=2e-3)  # the head calibrated (fp16 storage)
        assert np.mean([2 * c["iou"][0] / (1 + c["iou"][0]) for c in res["cases"]]) == pytest.approx(report[key]["dice"], abs=2e-3)
    curve = evaluate_clicks(_direct(out), "breast", rows, n_clicks=3, progress=False)["dice_curve"]
    expected = report["val_curve_after"] if report["kept"] else report["val_curve_before"]
    np.testing.assert_allclose(curve, expected, atol=2e-3)  # the curve the keep-or-not decision was made on


def test_the_click_curve_follows_each_session_to_its_end():
    """Two sessions: 3 passes, and 1 pass that reached a perfect mask (kept for the rest, as the benchmark counts)."""
    nan = float("nan")
    targets = torch.tensor([[nan, 0.5, 0.8, 0.2], [0.9, nan, nan, nan], [1.0, nan, nan, nan],
                            [nan, 1.0, 0.0, 0.0]])
    feats = torch.eye(4)
    head = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        # scores = features @ weight.T: the first pass of session 1 (feature e0) scores token 2 highest, of session 2
        # (e3) token 1
        head.weight.copy_(torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1.0, 0, 0]]).T)
    curve = click_curve(head, Passes(feats, targets, torch.tensor([True, False, False, True])), 3)
    dice = lambda v: 2 * v / (1 + v)  # noqa: E731
    # session 1 chose token 2 (IoU 0.8) then 0.9, 1.0; session 2 chose token 1 (IoU 1.0) and stayed there
    np.testing.assert_allclose(curve, [(dice(0.8) + 1) / 2, (dice(0.9) + 1) / 2, 1.0], atol=1e-4)


def test_an_adapter_without_a_click_decoder_is_refused(litemedsam_model):
    from usam.train.calibrate import click_decoder

    with pytest.raises(UsamError, match="click decoder"):
        click_decoder(litemedsam_model)


def test_a_predictor_takes_an_embedding_computed_elsewhere(litemedsam_model, real_case):
    from usam import Predictor

    _, image, gt, box = real_case
    a, b = Predictor(litemedsam_model, runtime="torch"), Predictor(litemedsam_model, runtime="torch")
    b.set_embedding(a.set_image(image))
    ma, sa, _ = a.predict(box=box)
    mb, sb, _ = b.predict(box=box)
    assert np.array_equal(ma, mb) and np.array_equal(sa, sb)
    bad = a.set_image(image)
    with pytest.raises(PromptError, match="shape"):
        b.set_embedding(type(bad)(bad.embedding[:, :8], bad.geometry, bad.key))
    with pytest.raises(PromptError, match="Embedded"):
        b.set_embedding(bad.embedding)
