"""Evaluation of a prediction folder (challenge output formats) and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from usam.challenge import evaluate, write_ground_truth_as_predictions, write_report
from usam.ops.masks import ellipse_perimeter
from usam.errors import DataError
from usam.io import write_png

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fmc_uia_dev" / "test"
H, W = 60, 80
DIAG = math.hypot(H, W)  # 100


def _make_split(root: Path) -> Path:
    """A tiny split with one task of each kind; returns the split folder."""
    split = root / "split"
    csv_dir = split / "csv_files"
    csv_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(split / "Images" / f"img {i}.png", rng.integers(0, 255, (H, W), dtype=np.uint8))
    hc = ellipse_perimeter(40, 24) * 0.5
    for i in range(2):
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (40 + i, 30), (20, 12), 0, 0, 360, 1, -1)
        write_png(split / "Segmentation" / "masks" / f"img {i}.png", m)
    (csv_dir / "seg.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask_path,pixel_size_mm,head_circumference_mm\n"
        + "".join(f"../Images/img {i}.png,seg,segmentation,2,../Segmentation/masks/img {i}.png,0.5,{hc:.4f}\n" for i in range(2))
    )
    (csv_dir / "cls.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask\n" + "".join(f"../Images/img {i}.png,cls,classification,3,{i % 3}\n" for i in range(4))
    )
    (csv_dir / "det.csv").write_text(
        "image_path,task_id,task_name,num_classes,x_min,y_min,x_max,y_max\n"
        "../Images/img 0.png,det,detection,1,10,10,30,20\n"
        "../Images/img 1.png,det,detection,1,40,30,60,50\n"
    )
    (csv_dir / "reg.csv").write_text(
        "image_path,task_id,task_name,num_classes,point_1_xy,point_2_xy,pixel_size_mm\n"
        '../Images/img 0.png,reg,Regression,2,"[10, 10]","[20, 20]",0.25\n'
        '../Images/img 1.png,reg,Regression,2,"[30, 40]","[50, 45]",0.25\n'
    )
    return split


def _partial_predictions(split: Path, pred: Path) -> None:
    """Ground truth for the first rows of every task, one row of each task missing, plus one stray entry."""
    write_ground_truth_as_predictions(split, pred)
    (pred / "Segmentation" / "masks" / "img 1.png").unlink()
    for name, drop in (("classification", "img 3.png"), ("detection", "img 1.png"), ("regression", "img 1.png")):
        f = pred / f"{name}_predictions.json"
        rows = [r for r in json.loads(f.read_text()) if not r["image_path"].endswith(drop)]
        if name == "classification":
            rows[0]["image_path"] = rows[0]["image_path"][1:]  # "./Images/..." still matches "../Images/..."
            rows.append({"image_path": "../Images/nope.png", "task_id": "cls", "predicted_class": 0, "predicted_probs": [1, 0, 0]})
        f.write_text(json.dumps(rows))


@pytest.fixture()
def split(tmp_path) -> Path:
    return _make_split(tmp_path)


def test_missing_predictions_are_counted_and_scored_worst(split, tmp_path):
    pred = tmp_path / "pred"
    _partial_predictions(split, pred)
    r = evaluate(split, pred)
    json.dumps(r, allow_nan=False)
    t = r["tasks"]
    assert {k: (v["n"], v["missing"]) for k, v in t.items()} == {"seg": (2, 1), "cls": (4, 1), "det": (2, 1), "reg": (2, 1)}
    assert r["missing_total"] == 4

    seg = t["seg"]["metrics"]
    assert seg["dice"] == pytest.approx(0.5)
    assert seg["hd"] == pytest.approx(DIAG / 2)
    assert seg["hd_mm"] == pytest.approx(DIAG / 2 * 0.5)
    hc_true = ellipse_perimeter(40, 24) * 0.5
    missing_case = [c for c in t["seg"]["cases"] if c["missing"]][0]
    assert missing_case["dice"] == 0.0 and missing_case["hd"] == pytest.approx(DIAG)
    assert missing_case["hc_abs_err_mm"] == pytest.approx(hc_true, rel=1e-3)  # predicted HC 0
    present = [c for c in t["seg"]["cases"] if not c["missing"]][0]
    assert present["hc_abs_err_mm"] < 0.02 * hc_true

    cls = t["cls"]["metrics"]
    assert cls["accuracy"] == pytest.approx(0.75)
    assert cls["macro_f1"] < 1.0 and cls["mcc"] < 1.0
    assert [c["predicted_class"] for c in t["cls"]["cases"]][-1] == -1
    assert t["cls"]["cases"][-1]["predicted_probs"] == pytest.approx([1 / 3] * 3)
    assert r["unmatched_predictions"]["classification_predictions.json"] == 1

    assert t["det"]["metrics"]["iou"] == pytest.approx(0.5)
    assert t["reg"]["metrics"]["mre_px"] == pytest.approx(DIAG / 2)
    assert t["reg"]["metrics"]["mre_mm"] == pytest.approx(DIAG / 2 * 0.25)


def test_imperfect_predictions_known_values(split, tmp_path):
    pred = tmp_path / "pred"
    write_ground_truth_as_predictions(split, pred)
    # segmentation: predict image 0's mask shifted by one pixel -> HD 1
    m = cv2.imread(str(split / "Segmentation" / "masks" / "img 0.png"), cv2.IMREAD_GRAYSCALE)
    write_png(pred / "Segmentation" / "masks" / "img 0.png", np.roll(m, 1, axis=1))
    det = json.loads((pred / "detection_predictions.json").read_text())
    det[0]["bbox_pixels"] = [20, 10, 40, 20]  # half overlap: IoU 1/3
    del det[1]["bbox_pixels"]  # only normalised coordinates: still used
    (pred / "detection_predictions.json").write_text(json.dumps(det))
    reg = json.loads((pred / "regression_predictions.json").read_text())
    reg[0]["predicted_points_pixels"] = [13, 14, 20, 20]  # errors 5 and 0
    (pred / "regression_predictions.json").write_text(json.dumps(reg))
    cls = json.loads((pred / "classification_predictions.json").read_text())
    del cls[0]["predicted_probs"]
    (pred / "classification_predictions.json").write_text(json.dumps(cls))

    r = evaluate(split, pred, tasks=["seg", "det", "reg", "cls"])
    t = r["tasks"]
    assert r["missing_total"] == 0
    assert t["seg"]["cases"][0]["hd"] == pytest.approx(1.0)
    assert t["seg"]["metrics"]["hd"] == pytest.approx(0.5)
    assert t["det"]["metrics"]["iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert t["reg"]["cases"][0]["mre_px"] == pytest.approx(2.5)
    assert t["reg"]["metrics"]["mre_px"] == pytest.approx(1.25)
    assert t["cls"]["missing_probs"] == 1 and t["cls"]["metrics"]["accuracy"] == 1.0


def test_errors_are_clear_data_errors(split, tmp_path):
    pred = tmp_path / "pred"
    write_ground_truth_as_predictions(split, pred)
    with pytest.raises(DataError, match="prediction folder"):
        evaluate(split, tmp_path / "nowhere")
    with pytest.raises(DataError):
        evaluate(tmp_path / "no_split", pred)
    with pytest.raises(DataError, match="not found"):
        evaluate(split, pred, tasks=["no_such_task"])

    bad_png = pred / "Segmentation" / "masks" / "img 0.png"
    good = bad_png.read_bytes()
    bad_png.write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable"):
        evaluate(split, pred, tasks=["seg"])
    write_png(bad_png, np.zeros((H // 2, W), np.uint8))
    with pytest.raises(DataError, match="predict at the image.s size"):
        evaluate(split, pred, tasks=["seg"])
    bad_png.write_bytes(good)

    f = pred / "classification_predictions.json"
    rows = json.loads(f.read_text())
    f.write_text("{broken")
    with pytest.raises(DataError, match="JSON"):
        evaluate(split, pred, tasks=["cls"])
    rows[0]["predicted_probs"] = [1.0, 0.0]
    f.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="predicted_probs"):
        evaluate(split, pred, tasks=["cls"])
    f.write_text(json.dumps(rows[1:] + rows[1:2]))
    with pytest.raises(DataError, match="duplicate"):
        evaluate(split, pred, tasks=["cls"])


def test_no_prediction_files_at_all_scores_everything_missing(split, tmp_path):
    pred = tmp_path / "empty_pred"
    pred.mkdir()
    r = evaluate(split, pred)
    assert r["missing_total"] == 10
    assert r["tasks"]["seg"]["metrics"]["dice"] == 0.0
    assert r["tasks"]["cls"]["metrics"]["accuracy"] == 0.0
    assert r["tasks"]["det"]["metrics"]["iou"] == 0.0


def test_report_files_created(split, tmp_path):
    pred = tmp_path / "pred"
    _partial_predictions(split, pred)
    results = evaluate(split, pred)
    out = write_report(results, tmp_path / "report")
    md = out["report_md"].read_text()
    for task in ("seg", "cls", "det", "reg"):
        assert f"| {task} |" in md
    assert "missing" in md
    assert json.loads(out["report_json"].read_text())["tasks"]["seg"]["missing"] == 1
    names = {p.name for p in out["figures"]}
    assert {"metrics.png", "dice_hist_seg.png", "worst_seg.png"} <= names
    for p in out["figures"]:
        assert p.stat().st_size > 1000
        assert cv2.imread(str(p)) is not None


@pytest.mark.skipif(not (DEV / "csv_files").is_dir(), reason="dev data not available")
def test_ground_truth_as_prediction_scores_perfect_on_dev_test(tmp_path):
    counts = write_ground_truth_as_predictions(DEV, tmp_path / "gt")
    assert len(counts) == 7 and sum(counts.values()) > 900
    r = evaluate(DEV, tmp_path / "gt")
    json.dumps(r, allow_nan=False)
    assert r["missing_total"] == 0
    assert set(r["tasks"]) == set(counts)
    for task_id, t in r["tasks"].items():
        m = t["metrics"]
        assert t["n"] == counts[task_id] and t["missing"] == 0, task_id
        if t["kind"] == "segmentation":
            assert m["dice"] == 1.0 and m["hd"] == 0.0, task_id
            assert all(v == 1.0 for v in m["dice_per_class"].values())
        elif t["kind"] == "classification":
            assert (m["auc"], m["accuracy"], m["macro_f1"], m["mcc"]) == (1.0, 1.0, 1.0, 1.0), task_id
        elif t["kind"] == "detection":
            assert m["iou"] == pytest.approx(1.0), task_id
        else:
            assert m["mre_px"] == 0.0 and m["mre_mm"] == 0.0, task_id
    # HC from the truth's own ellipse fit vs the CSV (README: within +-2.4 mm)
    fh = r["tasks"]["fetal_head"]
    assert fh["metrics"]["hd_mm"] == 0.0
    assert fh["metrics"]["hc_n"] == fh["n"] and fh["metrics"]["hc_abs_err_mm"] < 2.4
    assert max(c["hc_abs_err_mm"] for c in fh["cases"]) < 3.0


def test_report_shows_click_results(split, tmp_path):
    """``usam evaluate --clicks``' results (a task's ``clicks``, the run's ``clicks``) become a table in
    report.md, a Dice-vs-clicks plot and stay in report.json; tasks no adapter serves are listed."""
    pred = tmp_path / "pred"
    write_ground_truth_as_predictions(split, pred)
    results = evaluate(split, pred)
    curve = [0.5, 0.7, 0.8, 0.85, 0.9, 0.91]
    results["tasks"]["seg"]["clicks"] = {"adapter": "a", "images": 2, "n_objects": 2, "n_clicks": 6, "dice_curve": curve,
                                         "noc85": 4.5, "noc90": 6.0, "iou_error": 0.125, "iou_spearman": float("nan"), "cases": []}
    results["clicks"] = {"n_clicks": 6, "limit": 2, "unserved_tasks": [{"task_id": "other_seg", "num_classes": 2, "rows": 7}]}
    out = write_report(results, tmp_path / "report")
    md = out["report_md"].read_text()
    assert "| task | adapter | images | objects | Dice@1 | Dice@2 | Dice@3 | Dice@5 | Dice@6 | NoC@85 | NoC@90 | IoU error | Spearman |" in md
    assert "| seg | a | 2 | 2 | 0.5000 | 0.7000 | 0.8000 | 0.9000 | 0.9100 | 4.50 | 6.00 | 0.1250 | n/a |" in md
    assert "first 2 images of each task" in md and "other_seg (7 rows)" in md
    assert json.loads(out["report_json"].read_text())["tasks"]["seg"]["clicks"]["dice_curve"] == curve
    png = tmp_path / "report" / "dice_vs_clicks.png"
    assert png in out["figures"] and cv2.imread(str(png)) is not None
