"""Bad inputs to ``usam predict`` / ``usam evaluate`` (issue #12), each run through the CLI in-process.

Every case checks the exit code, one line on stderr that names the offending input (file, and CSV row or JSON
entry where there is one), no traceback, and that the output location is left as it was: nothing written
there when the run is refused, nothing destroyed. Bad inputs are built at test time in ``tmp_path``; the
model is a ``UsamModel`` on the session's tiny random ViT (``tiny_vit``) with one random adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import random_adapter_model
from test_evaluate import H as EH
from test_evaluate import W as EW
from test_evaluate import _make_split

from usam.challenge import write_ground_truth_as_predictions
from usam.challenge.predict import JOURNAL_DIR
from usam.apps.cli import main
from usam.errors import AdapterError, DataError
from usam.io import write_png

IMG_HW = (40, 56)
ADAPTER = "seg_cls"


# ---------------------------------------------------------------------------------------------- helpers
def _tree(folder: Path) -> dict[str, bytes | None] | None:
    """Every file (bytes) and folder (None) under ``folder``; ``None`` when it does not exist."""
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _one_error(err: str, command: str, *names: str) -> str:
    """The single stderr line of a refused command; it names every one of ``names``."""
    assert "Traceback" not in err, err
    assert err.startswith(f"usam {command}: error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"
    return err


def _make_predict_split(root: Path, dup_mask: bool = False) -> Path:
    """A split of 3 synthetic images: ``seg`` (2 classes), ``cls`` (3 classes) and ``other`` (served by no adapter)."""
    csv_dir = root / "csv_files"
    csv_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        write_png(root / "images" / f"img {i}.png", rng.integers(0, 255, IMG_HW, dtype=np.uint8))
        m = np.zeros(IMG_HW, np.uint8)
        m[10:25, 12 + i : 30 + i] = 1
        write_png(root / "masks" / f"m {i}.png", m)
    masks = ["m 0.png", "m 0.png", "m 2.png"] if dup_mask else ["m 0.png", "m 1.png", "m 2.png"]
    (csv_dir / "seg.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask_path\n"
        + "".join(f"../images/img {i}.png,seg,segmentation,2,../masks/{masks[i]}\n" for i in range(3)))
    (csv_dir / "cls.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask\n" + "".join(f"../images/img {i}.png,cls,classification,3,{i}\n" for i in range(3)))
    (csv_dir / "other.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask\n" + "".join(f"../images/img {i}.png,other,classification,2,{i % 2}\n" for i in range(2)))
    return root


@pytest.fixture(scope="module")
def pred_root(tmp_path_factory) -> Path:
    return _make_predict_split(tmp_path_factory.mktemp("bad_challenge") / "split")


@pytest.fixture(scope="module")
def served(tiny_vit, pred_root, tmp_path_factory):
    """``(model, adapter dir)``: a model on the tiny ViT with one random adapter serving ``seg`` and ``cls``."""
    return random_adapter_model(tiny_vit, pred_root, ["seg", "cls"], ADAPTER, tmp_path_factory.mktemp("adapter"), seed=3)


@pytest.fixture()
def cli_model(served, monkeypatch):
    """Make ``usam predict`` use the served model (built once); returns ``(model, adapter dir)``."""
    model, d = served
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda args, adapters=(): model)
    return model, d


@pytest.fixture()
def no_model(monkeypatch):
    """``usam predict`` must refuse before it builds a model."""
    monkeypatch.setattr("usam.apps.cli.challenge.build_model",
                        lambda args, adapters=(): pytest.fail("the model was built although the inputs are bad"))


def _predict(root: Path, out: Path, adapter: Path | str = "adapter_dir", *extra: str) -> int:
    return main(["predict", str(root), str(out), "--adapters", str(adapter), "--quiet", *extra])


# ---------------------------------------------------------------------------------------------- predict
def test_predict_refuses_rows_sharing_a_mask_path(tmp_path, no_model, capsys):
    root = _make_predict_split(tmp_path / "split", dup_mask=True)
    out = tmp_path / "out"
    assert _predict(root, out) == DataError.exit_code
    err = _one_error(capsys.readouterr().err, "predict", "seg.csv row 1 and seg.csv row 2", "masks/m 0.png", "overwriting")
    assert "row 3" not in err
    assert _tree(out) is None
    # an output folder that already holds files is left as it was
    write_png(out / "masks" / "m 0.png", np.ones(IMG_HW, np.uint8))
    before = _tree(out)
    assert _predict(root, out) == DataError.exit_code
    _one_error(capsys.readouterr().err, "predict", "seg.csv row 1 and seg.csv row 2")
    assert _tree(out) == before


@pytest.mark.parametrize("damage", ["empty", "undecodable", "wrong size", "colour", "out-of-range values"])
def test_predict_resume_redoes_bad_masks(pred_root, cli_model, tmp_path, capsys, damage):
    _, adapter = cli_model
    out = tmp_path / "out"
    assert _predict(pred_root, out, adapter, "--tasks", "seg", "cls") == 0
    capsys.readouterr()
    pngs = [out / "masks" / f"m {i}.png" for i in range(3)]
    good = [p.read_bytes() for p in pngs]
    bad = pngs[1]
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "undecodable":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    elif damage == "wrong size":
        write_png(bad, np.zeros((IMG_HW[0] // 2, IMG_HW[1]), np.uint8))
    elif damage == "colour":
        write_png(bad, np.zeros((*IMG_HW, 3), np.uint8))
    else:
        write_png(bad, np.full(IMG_HW, 255, np.uint8))
    assert _predict(pred_root, out, adapter, "--tasks", "seg", "cls", "--json") == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["tasks"]["seg"]["redone"] == 1 and doc["tasks"]["seg"]["predicted"] == 1
    assert doc["tasks"]["seg"]["skipped"] == 2 and doc["tasks"]["cls"]["skipped"] == 3
    assert "Traceback" not in cap.err
    notes = [line for line in cap.err.splitlines() if "predicting it again" in line]
    assert len(notes) == 1 and str(bad) in notes[0], cap.err
    assert [p.read_bytes() for p in pngs] == good  # redone exactly; the good ones untouched
    assert not list(out.rglob("*.tmp"))


def test_predict_interrupted_says_so_once(pred_root, cli_model, tmp_path, monkeypatch, capsys):
    model, adapter = cli_model
    out = tmp_path / "out"
    real = model.predict
    calls = {"n": 0}

    def interrupted_after_one(image, adapter=None):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(image, adapter=adapter)

    monkeypatch.setattr(model, "predict", interrupted_after_one)
    assert _predict(pred_root, out, adapter, "--tasks", "seg", "cls") == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1 and "Traceback" not in err, err
    assert err.startswith("usam predict: interrupted") and "run the same command again to resume" in err
    assert any((out / JOURNAL_DIR).glob("*.jsonl"))  # finished rows are kept ...
    assert not (out / "classification_predictions.json").exists() and not list(out.rglob("*.tmp"))  # ... nothing partial
    monkeypatch.setattr(model, "predict", real)
    assert _predict(pred_root, out, adapter, "--tasks", "seg", "cls") == 0
    assert len(json.loads((out / "classification_predictions.json").read_text())) == 3


def test_predict_fails_when_no_adapter_serves_any_task(pred_root, cli_model, tmp_path, capsys):
    _, adapter = cli_model
    out = tmp_path / "out"
    assert _predict(pred_root, out, adapter, "--tasks", "other") == AdapterError.exit_code == 8
    _one_error(capsys.readouterr().err, "predict", "no adapter serves any", "other (classification)",
               f"'{ADAPTER}' (tasks: cls, seg)", str(adapter))
    assert _tree(out) is None


@pytest.mark.parametrize("case", ["out is a file", "parent is a file", "not writable"])
def test_predict_refuses_an_unusable_output_folder_before_the_model(pred_root, tmp_path, no_model, monkeypatch, capsys, case):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me\n")
    out = {"out is a file": blocker, "parent is a file": blocker / "out", "not writable": tmp_path / "ro" / "out"}[case]
    if case == "not writable":
        (tmp_path / "ro").mkdir()

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("usam.io.files.tempfile.mkstemp", refuse)
    before = _tree(tmp_path)
    assert _predict(pred_root, out) == DataError.exit_code
    err = _one_error(capsys.readouterr().err, "predict", str(out))
    assert {"out is a file": "is not a folder", "parent is a file": "cannot be created",
            "not writable": "is not writable"}[case] in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("given", ["split folder", "its csv_files", "through a symlink"])
def test_predict_refuses_to_write_into_the_data_folder(tmp_path, no_model, capsys, given):
    """``usam predict DATA DATA`` would write the predicted masks over the split's ground truth (the output path of
    a mask is its ``mask_path`` without the ``../``): refused before the model, every file as it was."""
    root = _make_predict_split(tmp_path / "split")
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    data, out = {"split folder": (root, root), "its csv_files": (root / "csv_files", root),
                 "through a symlink": (root, link)}[given]
    before = _tree(tmp_path)
    assert _predict(data, out) == DataError.exit_code
    _one_error(capsys.readouterr().err, "predict", str(out), "is the data folder", "give a separate output folder")
    assert _tree(tmp_path) == before


def test_predict_refuses_outputs_that_land_on_ground_truth_masks(tmp_path, no_model, capsys):
    """Mask paths that climb out of the split (``../../data/masks/...``) are written under the output folder
    without their ``../``: with the split's parent as the output folder they would be the ground truth itself."""
    root = _make_predict_split(tmp_path / "data")
    seg = root / "csv_files" / "seg.csv"
    seg.write_text(seg.read_text().replace("../masks/", "../../data/masks/"))
    before = _tree(tmp_path)
    assert _predict(root, tmp_path) == DataError.exit_code
    _one_error(capsys.readouterr().err, "predict", "would overwrite 3 file(s) the data reads", "data/masks/m 0.png",
               str(root / "masks" / "m 0.png"))
    assert _tree(tmp_path) == before


# ---------------------------------------------------------------------------------------------- evaluate
def _edit_json(pred: Path, kind: str, fn) -> Path:
    f = pred / f"{kind}_predictions.json"
    rows = json.loads(f.read_text())
    fn(rows)
    f.write_text(json.dumps(rows))
    return f


def _set(key, value, index=1, drop=()):
    def fn(rows):
        for k in drop:
            rows[index].pop(k, None)
        if key is not None:
            rows[index][key] = value
    return fn


def _rename(old, new, index=1):
    def fn(rows):
        rows[index][new] = rows[index].pop(old)
    return fn


def _mask_png(pred: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` (BGR order when it has 3 channels) as the prediction of the first ``seg`` row."""
    f = pred / "Segmentation" / "masks" / "img 0.png"
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    f.write_bytes(buf.tobytes())
    return f


def _mask_bytes(pred: Path, data: bytes) -> Path:
    f = pred / "Segmentation" / "masks" / "img 0.png"
    f.write_bytes(data)
    return f


def _broken_json(pred: Path) -> Path:
    f = pred / "classification_predictions.json"
    f.write_text("[{broken")
    return f


def _truth0(split: Path) -> np.ndarray:
    return cv2.imread(str(split / "Segmentation" / "masks" / "img 0.png"), cv2.IMREAD_UNCHANGED)


# name -> (function(split, pred) -> offending file, substrings the one-line message must hold)
BAD_PREDICTIONS = {
    "renamed predicted_probs": (lambda s, p: _edit_json(p, "classification", _rename("predicted_probs", "probs")),
                                ["entry 1", "unknown key(s) ['probs']", "'predicted_probs'"]),
    "entry without any answer": (lambda s, p: _edit_json(p, "classification", _set(None, None, drop=("predicted_probs", "predicted_class"))),
                                 ["entry 1", "holds no prediction"]),
    "predicted_class 7 of 3": (lambda s, p: _edit_json(p, "classification", _set("predicted_class", 7)),
                               ["entry 1", "cls.csv row 2", "predicted_class 7 is outside 0..2"]),
    "predicted_class 1.5": (lambda s, p: _edit_json(p, "classification", _set("predicted_class", 1.5)),
                            ["entry 1", "cls.csv row 2", "predicted_class 1.5 is not an integer"]),
    "negative probabilities": (lambda s, p: _edit_json(p, "classification", _set("predicted_probs", [-0.5, 1.0, 0.5])),
                               ["entry 1", "cls.csv row 2", "negative values"]),
    "probabilities summing to 1.5": (lambda s, p: _edit_json(p, "classification", _set("predicted_probs", [0.5, 0.5, 0.5])),
                                     ["entry 1", "cls.csv row 2", "sum to 1.5, not 1 (tolerance 0.001)"]),
    "probabilities of the wrong length": (lambda s, p: _edit_json(p, "classification", _set("predicted_probs", [0.5, 0.5])),
                                          ["entry 1", "cls.csv row 2", "has 2 numbers, expected 3"]),
    "probabilities that are not numbers": (lambda s, p: _edit_json(p, "classification", _set("predicted_probs", ["a", "b", "c"])),
                                           ["entry 1", "is not a list of numbers"]),
    "entry that is not an object": (lambda s, p: _edit_json(p, "classification", lambda rows: rows.__setitem__(2, [1, 2])),
                                    ["entry 2", "must be an object with image_path and task_id"]),
    "broken JSON": (lambda s, p: _broken_json(p), ["is not valid JSON"]),
    "renamed bbox key": (lambda s, p: _edit_json(p, "detection", _rename("bbox_pixels", "bbox", 0)),
                         ["entry 0", "unknown key(s) ['bbox']"]),
    "NaN box": (lambda s, p: _edit_json(p, "detection", _set("bbox_pixels", [1, 2, float("nan"), 4], 0)),
                ["entry 0", "det.csv row 1", "NaN or infinite"]),
    "points of the wrong length": (lambda s, p: _edit_json(p, "regression", _set("predicted_points_pixels", [1, 2, 3], 0)),
                                   ["entry 0", "reg.csv row 1", "has 3 numbers, expected 4"]),
    "0/255 mask for classes 0..1": (lambda s, p: _mask_png(p, _truth0(s) * 255),
                                    ["seg.csv row 1", "holds the values {0, 255} but task seg has 2 classes (ids 0..1)", "0/255"]),
    "mask with class 2 of 0..1": (lambda s, p: _mask_png(p, _truth0(s) * 2),
                                  ["seg.csv row 1", "holds the values {0, 2} but task seg has 2 classes"]),
    "RGB mask whose channels differ": (lambda s, p: _mask_png(p, np.stack([np.zeros_like(_truth0(s)), np.zeros_like(_truth0(s)), _truth0(s)], axis=2)),
                                       ["seg.csv row 1", "colour image whose channels differ", "RGB (1, 0, 0)"]),
    "0-byte mask": (lambda s, p: _mask_bytes(p, b""),
                    ["seg.csv row 1", "unreadable", "empty (0 bytes)"]),
    "undecodable mask": (lambda s, p: _mask_bytes(p, b"not a png"),
                         ["seg.csv row 1", "unreadable"]),
    "mask of the wrong size": (lambda s, p: _mask_png(p, np.zeros((EH // 2, EW), np.uint8)),
                               ["seg.csv row 1", f"is {EW}x{EH // 2} but the truth"]),
}


@pytest.fixture()
def gt_pred(tmp_path):
    split = _make_split(tmp_path)
    pred = tmp_path / "pred"
    write_ground_truth_as_predictions(split, pred)
    return split, pred


@pytest.mark.parametrize("name", list(BAD_PREDICTIONS))
def test_evaluate_refuses_malformed_predictions(gt_pred, tmp_path, capsys, name):
    split, pred = gt_pred
    make, expected = BAD_PREDICTIONS[name]
    bad_file = make(split, pred)
    before = _tree(pred)
    report = tmp_path / "report"
    assert main(["evaluate", str(split), str(pred), "--report", str(report)]) == DataError.exit_code
    _one_error(capsys.readouterr().err, "evaluate", str(bad_file), *expected)
    assert _tree(pred) == before and _tree(report) is None


def test_evaluate_reads_a_grey_mask_saved_as_rgb(gt_pred, capsys):
    split, pred = gt_pred
    t = _truth0(split)
    _mask_png(pred, np.stack([t, t, t], axis=2))
    assert main(["evaluate", str(split), str(pred), "--json", "--tasks", "seg"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["tasks"]["seg"]["metrics"]["dice"] == 1.0 and "Traceback" not in cap.err


def test_evaluate_accepts_probabilities_within_the_tolerance(gt_pred, capsys):
    split, pred = gt_pred
    _edit_json(pred, "classification", _set("predicted_probs", [0.0, 0.9995, 0.0]))
    assert main(["evaluate", str(split), str(pred), "--json", "--tasks", "cls"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["cls"]["metrics"]["accuracy"] == 1.0


@pytest.mark.parametrize("case", ["report is a file", "parent is a file", "not writable"])
def test_evaluate_checks_the_report_folder_before_scoring(gt_pred, tmp_path, monkeypatch, capsys, case):
    split, pred = gt_pred
    blocker = tmp_path / "report.md"
    blocker.write_text("an earlier report\n")
    report = {"report is a file": blocker, "parent is a file": blocker / "rep", "not writable": tmp_path / "ro" / "rep"}[case]
    if case == "not writable":
        (tmp_path / "ro").mkdir()

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("usam.io.files.tempfile.mkstemp", refuse)
    monkeypatch.setattr("usam.challenge.evaluate", lambda *a, **k: pytest.fail("scored before checking the report folder"))
    before = _tree(tmp_path)
    assert main(["evaluate", str(split), str(pred), "--report", str(report)]) == DataError.exit_code
    err = _one_error(capsys.readouterr().err, "evaluate", str(report), "report folder")
    assert {"report is a file": "is not a folder", "parent is a file": "cannot be created",
            "not writable": "is not writable"}[case] in err
    assert _tree(tmp_path) == before
