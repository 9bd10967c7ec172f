"""``usam evaluate --clicks N --adapters ...`` (issue #14): the interactive benchmark in the evaluation output.

A small synthetic split (random images, rectangle / ellipse masks): ``seg`` (2 classes) and ``seg3`` (3 classes)
served by one random adapter on the session's tiny random ViT (``tiny_vit``), ``lone`` (segmentation) served by
no adapter, and ``cls`` (classification, ignored by the click protocol). The model is built once and handed to
the CLI in place of ``build_model``; the figures are meaningless, only the plumbing and the formats are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import random_adapter_model

from usam.challenge import write_ground_truth_as_predictions
from usam.apps.cli import main
from usam.io import write_png

HW = (48, 64)
ADAPTER = "clicker"
N = 3


def _make_split(root: Path) -> Path:
    csv_dir = root / "csv_files"
    csv_dir.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(2):
        write_png(root / "images" / f"img {i}.png", rng.integers(0, 255, HW, dtype=np.uint8))
        m = np.zeros(HW, np.uint8)
        m[10:30, 12 + 3 * i : 40 + 3 * i] = 1
        write_png(root / "masks" / f"seg {i}.png", m)
        m3 = np.zeros(HW, np.uint8)
        cv2.ellipse(m3, (20 + i, 24), (12, 9), 0, 0, 360, 1, -1)
        if i == 0:  # class 2 absent from the other image: fewer objects than classes x images
            m3[5:15, 40:58] = 2
        write_png(root / "masks" / f"seg3 {i}.png", m3)
    header = "image_path,task_id,task_name,num_classes,mask_path\n"
    for tid, k, mask in (("seg", 2, "seg"), ("seg3", 3, "seg3"), ("lone", 2, "seg")):
        (csv_dir / f"{tid}.csv").write_text(
            header + "".join(f"../images/img {i}.png,{tid},segmentation,{k},../masks/{mask} {i}.png\n" for i in range(2)))
    (csv_dir / "cls.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask\n" + "".join(f"../images/img {i}.png,cls,classification,2,{i % 2}\n" for i in range(2)))
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = _make_split(tmp_path_factory.mktemp("clicks") / "split")
    write_ground_truth_as_predictions(root, root.parent / "pred")
    return root


@pytest.fixture(scope="module")
def served(tiny_vit, split, tmp_path_factory):
    """``(model, adapter dir)``: the tiny ViT with one random adapter serving ``seg`` and ``seg3``."""
    return random_adapter_model(tiny_vit, split, ["seg", "seg3"], ADAPTER, tmp_path_factory.mktemp("adapter"), seed=5)


@pytest.fixture()
def cli_model(served, monkeypatch):
    """``usam evaluate`` gets the served model; the adapters it was asked for are recorded."""
    model, d = served
    asked = []

    def build(args, adapters=()):
        asked.append(list(adapters))
        return model

    monkeypatch.setattr("usam.apps.cli.challenge.build_model", build)
    return model, d, asked


def _evaluate(split: Path, *extra: str) -> int:
    return main(["evaluate", str(split), str(split.parent / "pred"), "--quiet", *extra])


def test_clicks_write_the_curve_noc_table_and_plot(split, cli_model, tmp_path, capsys):
    model, d, asked = cli_model
    report = tmp_path / "report"
    model.set_adapter(None)
    assert _evaluate(split, "--report", str(report), "--clicks", str(N), "--adapters", str(d)) == 0
    captured = capsys.readouterr()
    assert asked == [[str(d)]]
    assert model.active_adapter is None  # left as it was
    assert "click protocol" in captured.out and "lone" in captured.err  # the unserved task is said, not skipped

    doc = json.loads((report / "report.json").read_text())
    assert [u["task_id"] for u in doc["clicks"]["unserved_tasks"]] == ["lone"]
    assert doc["clicks"]["n_clicks"] == N
    assert "clicks" not in doc["tasks"]["lone"] and "clicks" not in doc["tasks"]["cls"]
    objects = {"seg": 2, "seg3": 3}  # seg3: class 1 in both images, class 2 in one
    for tid, n_obj in objects.items():
        c = doc["tasks"][tid]["clicks"]
        assert c["adapter"] == ADAPTER and c["images"] == 2 and c["n_objects"] == n_obj
        assert len(c["dice_curve"]) == N and all(0.0 <= v <= 1.0 for v in c["dice_curve"])
        assert 1 <= c["noc85"] <= N and 1 <= c["noc90"] <= N and c["noc85"] <= c["noc90"]
        assert 0.0 <= c["iou_error"] <= 1.0
        assert c["iou_spearman"] is None or -1.0 <= c["iou_spearman"] <= 1.0
        assert len(c["cases"]) == n_obj and all(len(k["dice"]) == N for k in c["cases"])
    assert doc["tasks"]["seg"]["metrics"]["dice"] == pytest.approx(1.0)  # the official scores are still there

    md = (report / "report.md").read_text()
    assert "## Interactive segmentation (click protocol)" in md
    header = f"| task | adapter | images | objects | Dice@1 | Dice@2 | Dice@{N} | NoC@85 | NoC@90 | IoU error | Spearman |"
    assert header in md
    for tid in objects:
        assert f"| {tid} | {ADAPTER} | 2 | {objects[tid]} | " in md
    assert "lone (2 rows)" in md
    assert "![dice_vs_clicks](dice_vs_clicks.png)" in md
    png = report / "dice_vs_clicks.png"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_clicks_json_output_and_limit(split, cli_model, capsys):
    _, d, _ = cli_model
    assert _evaluate(split, "--clicks", "2", "--adapters", str(d), "--limit", "1", "--tasks", "seg3", "cls", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    c = doc["tasks"]["seg3"]["clicks"]
    assert c["images"] == 1 and c["n_objects"] == 2 and len(c["dice_curve"]) == 2
    assert "cases" not in c  # the summary leaves the per-object runs to report.json
    assert doc["clicks"] == {"n_clicks": 2, "limit": 1, "unserved_tasks": []}
    assert "clicks" not in doc["tasks"]["cls"]


@pytest.mark.parametrize("args, says", [
    (["--clicks", "3"], "--clicks needs the adapters"),
    (["--clicks", "3", "--adapters"], "--clicks needs the adapters"),
    (["--adapters", "somewhere"], "add --clicks N"),
])
def test_clicks_and_adapters_go_together(split, tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda *a, **k: pytest.fail("model built on a usage error"))
    monkeypatch.setattr("usam.challenge.evaluate", lambda *a, **k: pytest.fail("scored on a usage error"))
    report = tmp_path / "report"
    assert _evaluate(split, "--report", str(report), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("usam evaluate: error: ") and err.count("\n") == 1 and says in err, err
    assert not report.exists()


def test_clicks_when_no_adapter_serves_a_segmentation_task(split, cli_model, tmp_path, monkeypatch, capsys):
    _, d, _ = cli_model
    monkeypatch.setattr("usam.challenge.evaluate", lambda *a, **k: pytest.fail("scored although nothing can be clicked"))
    assert _evaluate(split, "--clicks", "2", "--adapters", str(d), "--tasks", "lone", "cls") == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no adapter serves any segmentation task" in err and "lone" in err, err
