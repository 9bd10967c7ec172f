"""``usam predict`` / ``usam evaluate`` / ``usam measure`` on a tiny random backbone and real dev images.

The data root is a small FMC-style split built in a temp folder: the first 2 rows of every test CSV of
``../shared/data/fmc_uia_dev`` with ``Classification/`` and ``Segmentation/`` symlinked to the real images, so
the CSV paths are unchanged. Adapters are trained for one step on a tiny random SAM ViT (seconds): outputs
are meaningless, only the plumbing, formats, caching and resuming are checked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usam.challenge import evaluate
from usam.challenge.predict import JOURNAL_DIR, predict_split
from usam.apps.cli import main
from usam.data.fmc import output_mask_relpath, read_split
from usam.errors import AdapterError, DataError, UsamError
from usam.io import read_image

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmc_uia_dev" / "test"
ROWS = 2
#: adapter name -> (tasks, training mode)
ADAPTERS = {
    "breast": (["breast_lesion", "breast_3cls", "breast_lesion_det"], "cache"),
    "head": (["fetal_head", "fetal_head_biometry"], "cache"),
    "b2": (["breast_2cls"], "lora"),  # encoder LoRA: its images need a second, LoRA, encoder pass
}
#: served by no adapter: must be reported
MISSING = "head_symphysis_multi"

pytestmark = pytest.mark.skipif(not (REAL / "csv_files" / "breast_lesion.csv").is_file(),
                                reason=f"real FMC_UIA dev data not found at {REAL}")


def tiny_model():
    """A fresh UsamModel on a tiny random SAM ViT; the seed makes every instance (and its checksum) identical."""
    from usam import UsamModel, build_backbone

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UsamModel(build_backbone("sam_vit_b", pretrained=False, tiny=True))


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update(kv)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_root(root: Path, rows: int = ROWS) -> Path:
    (root / "csv_files").mkdir(parents=True)
    for d in ("Classification", "Segmentation"):
        (root / d).symlink_to(REAL / d, target_is_directory=True)
    for f in sorted((REAL / "csv_files").glob("*.csv")):
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "csv_files" / f.name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("fmc") / "test")


def make_adapter(out: Path, name: str, tasks: list[str], lora: bool, split) -> Path:
    """An adapter with random heads for ``tasks`` (as ``usam train`` would build it, minus the training)."""
    from usam.adapters.adapter import Adapter, AdapterConfig
    from usam.adapters.lora import LoraSettings, add_lora
    from usam.train.trainer import task_specs

    model = tiny_model()
    bb = model.backbone
    config = AdapterConfig(name=name, backbone=bb.name, backbone_checksum=bb.checksum,
                           tasks=task_specs({t: split[t] for t in tasks}), lora=LoraSettings() if lora else None,
                           input_size=bb.input_size)
    with torch.random.fork_rng():
        torch.manual_seed(len(name))
        adapter = Adapter(config, bb)
        if lora:
            add_lora(bb.image_encoder, name, config.lora)
            for n, p in bb.image_encoder.named_parameters():
                if "lora_B" in n:  # peft starts B at zero (LoRA = identity): make it change the encoder
                    torch.nn.init.normal_(p, std=0.02)
    return adapter.save_pretrained(out / name, bb.image_encoder if lora else None)


@pytest.fixture(scope="module")
def adapter_dirs(root, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("adapters")
    split = read_split(root)
    return {name: make_adapter(base, name, tasks, mode == "lora", split) for name, (tasks, mode) in ADAPTERS.items()}


def test_a_trained_adapter_predicts_too(root, tmp_path):
    """The adapters ``usam train`` writes load and predict (one step of training on 2 images)."""
    from usam.train.trainer import train

    with _env(USAM_CACHE=str(tmp_path / "cache")):
        d = train({"name": "t", "backbone": "sam_vit_b", "data": {"root": str(root), "tasks": ["breast_2cls"], "limit": ROWS},
                   "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1}, "output": str(tmp_path / "t")},
                  model=tiny_model(), log=lambda m: None)
    model = tiny_model()
    model.load_adapter(str(d))
    r = predict_split(root, tmp_path / "out", model, tasks=["breast_2cls"], progress=False)
    assert r["tasks"]["breast_2cls"]["predicted"] == ROWS
    assert len(json.loads((tmp_path / "out" / "classification_predictions.json").read_text())) == ROWS


def loaded(adapter_dirs, names=tuple(ADAPTERS)):
    model = tiny_model()
    for n in names:
        model.load_adapter(str(adapter_dirs[n]))
    return model


@pytest.fixture(scope="module")
def ref(root, adapter_dirs, tmp_path_factory):
    """One uninterrupted run: (output folder, summary, encoder passes)."""
    model = loaded(adapter_dirs)
    out = tmp_path_factory.mktemp("pred") / "out"
    before = model.encoder_calls
    r = predict_split(root, out, model, progress=False)
    return out, r, model.encoder_calls - before


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ predict
def test_outputs_exist_with_the_challenge_formats(root, ref):
    out, r, _ = ref
    split = read_split(root)
    served = {t for tasks, _ in ADAPTERS.values() for t in tasks}
    assert set(r["tasks"]) == served and all(t["predicted"] == ROWS and t["skipped"] == 0 for t in r["tasks"].values())
    sizes = {}
    for tid, rows in split.items():
        for s in rows:
            sizes[s.rel_image_path] = read_image(s.image_path).shape[:2]
            if s.kind != "segmentation":
                continue
            png = out / output_mask_relpath(s.rel_mask_path)
            if tid == MISSING:
                assert not png.exists()
                continue
            raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            assert raw.dtype == np.uint8 and raw.ndim == 2 and raw.shape == sizes[s.rel_image_path]
            assert raw.max() < s.num_classes

    def entries(name):
        data = json.loads((out / name).read_text())
        assert isinstance(data, list)
        return {(e["task_id"], e["image_path"]): e for e in data}

    cls = entries("classification_predictions.json")
    assert set(cls) == {(t, s.rel_image_path) for t in ("breast_3cls", "breast_2cls") for s in split[t]}
    for (tid, path), e in cls.items():
        assert set(e) == {"image_path", "task_id", "predicted_class", "predicted_probs"}
        p = e["predicted_probs"]
        assert len(p) == split[tid][0].num_classes and all(v >= 0 for v in p)
        assert math.fsum(p) == pytest.approx(1.0, abs=1e-12)
        assert e["predicted_class"] == int(np.argmax(p))

    det = entries("detection_predictions.json")
    assert set(det) == {("breast_lesion_det", s.rel_image_path) for s in split["breast_lesion_det"]}
    for (_, path), e in det.items():
        assert set(e) == {"image_path", "task_id", "bbox_normalized", "bbox_pixels"}
        h, w = sizes[path]
        px, nrm = np.array(e["bbox_pixels"]), np.array(e["bbox_normalized"])
        assert px.shape == (4,) and px[0] <= px[2] and px[1] <= px[3]
        assert nrm == pytest.approx(px / [w, h, w, h], rel=1e-12, abs=1e-15)
        assert ((nrm >= 0) & (nrm <= 1)).all()

    reg = entries("regression_predictions.json")
    assert set(reg) == {("fetal_head_biometry", s.rel_image_path) for s in split["fetal_head_biometry"]}
    for (_, path), e in reg.items():
        assert set(e) == {"image_path", "task_id", "predicted_points_normalized", "predicted_points_pixels"}
        h, w = sizes[path]
        px = np.array(e["predicted_points_pixels"])
        assert px.shape == (8,)
        assert e["predicted_points_normalized"] == pytest.approx(px / np.tile([w, h], 4), rel=1e-12, abs=1e-15)

    missing = json.loads((out / "missing_tasks.json").read_text())
    assert missing == [{"task_id": MISSING, "kind": "segmentation", "num_classes": 3, "rows": ROWS}] == r["missing_tasks"]
    assert not (out / "failed_images.json").exists() and r["failed_images"] == []
    assert not [p for p in out.rglob("*.tmp")]


def test_each_image_is_encoded_once_per_encoder_state(root, ref):
    _, r, calls = ref
    split = read_split(root)
    served = [t for tasks, _ in ADAPTERS.values() for t in tasks]
    unique = {s.image_path for t in served for s in split[t]}
    lora_images = {s.image_path for t in ADAPTERS["b2"][0] for s in split[t]}
    assert len(unique) == 4  # 2 BUSI images shared by 4 tasks, 2 HC18 images shared by 2 tasks
    # the two LoRA-free adapters share one bare pass per image; the LoRA adapter adds one pass per image it needs
    assert calls == r["encoder_calls"] == len(unique) + len(lora_images)
    assert r["images"] == r["images_total"] == len(unique)


def test_batched_encoding_encodes_each_image_once_with_the_same_results(root, ref, adapter_dirs, tmp_path):
    model = loaded(adapter_dirs, ("b2",))  # the LoRA adapter: batches are encoded with its LoRA active
    before = model.encoder_calls
    r = predict_split(root, tmp_path / "out", model, batch_size=2, progress=False, tasks=["breast_2cls"])
    assert model.encoder_calls - before == r["encoder_calls"] == ROWS
    a = json.loads((tmp_path / "out" / "classification_predictions.json").read_text())
    b = [e for e in json.loads((ref[0] / "classification_predictions.json").read_text()) if e["task_id"] == "breast_2cls"]
    assert [e["image_path"] for e in a] == [e["image_path"] for e in b]
    # batched encoding gives the same predictions up to float rounding
    np.testing.assert_allclose([e["predicted_probs"] for e in a], [e["predicted_probs"] for e in b], atol=1e-4)


def test_interrupted_run_resumes_to_byte_identical_outputs(root, ref, adapter_dirs, tmp_path):
    out = tmp_path / "out"
    model = loaded(adapter_dirs)
    real_predict = model.predict
    calls = {"n": 0}

    def flaky(image, adapter=None):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real_predict(image, adapter=adapter)

    model.predict = flaky
    with pytest.raises(KeyboardInterrupt):
        predict_split(root, out, model, progress=False)
    journal = out / JOURNAL_DIR
    assert journal.is_dir() and any(journal.glob("*.jsonl"))
    assert not (out / "classification_predictions.json").exists()  # never a partial final file
    assert not [p for p in out.rglob("*.tmp")]

    del model.predict
    before = model.encoder_calls
    r = predict_split(root, out, model, progress=False)
    assert sum(t["skipped"] for t in r["tasks"].values()) > 0
    assert model.encoder_calls - before < ref[2]  # finished images were not encoded again
    assert _files(out) == _files(ref[0])

    # a rerun of a finished folder does nothing and changes nothing
    before = model.encoder_calls
    r = predict_split(root, out, model, progress=False)
    assert model.encoder_calls == before and r["images"] == 0
    assert all(t["skipped"] == t["rows"] for t in r["tasks"].values())
    assert _files(out) == _files(ref[0])


def test_outputs_of_another_model_are_not_mixed_in(root, ref, adapter_dirs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ref[0], out)
    model = loaded(adapter_dirs, ("b2",))
    model.precision = "bf16"  # another encoder state: the earlier breast_2cls outputs are not its outputs
    with pytest.raises(UsamError, match="(?s)another adapter, backbone or precision.*--restart"):
        predict_split(root, out, model, progress=False, tasks=["breast_2cls"])
    r = predict_split(root, out, model, progress=False, tasks=["breast_2cls"], restart=True)
    assert r["tasks"]["breast_2cls"]["predicted"] == ROWS
    # the other tasks' outputs are still in the final files
    assert {e["task_id"] for e in json.loads((out / "classification_predictions.json").read_text())} == {"breast_2cls", "breast_3cls"}


def test_data_and_adapter_errors_are_clear(root, adapter_dirs, tmp_path):
    model = loaded(adapter_dirs, ("breast",))
    with pytest.raises(DataError, match="does not exist"):
        predict_split(tmp_path / "nope", tmp_path / "o1", model, progress=False)
    bad = tmp_path / "bad"
    (bad / "csv_files").mkdir(parents=True)
    (bad / "csv_files" / "breast_lesion.csv").write_text(
        "image_path,task_id,task_name,num_classes\n../x.png,breast_lesion,segmentation,2\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['mask_path'\]"):
        predict_split(bad, tmp_path / "o2", model, progress=False)
    (bad / "csv_files" / "breast_lesion.csv").write_text(
        "image_path,task_id,task_name,num_classes,mask_path\n../gone.png,breast_lesion,segmentation,2,../m/gone.png\n")
    with pytest.raises(DataError, match="gone.png"):
        predict_split(bad, tmp_path / "o3", model, progress=False)
    with pytest.raises(AdapterError, match="no adapter is loaded"):
        predict_split(root, tmp_path / "o4", tiny_model(), progress=False)
    # a CSV whose task disagrees with the adapter's (3 classes in the adapter, 2 here)
    (bad / "csv_files" / "breast_lesion.csv").unlink()
    lines = (REAL / "csv_files" / "breast_2cls.csv").read_text().splitlines()[:2]
    (bad / "csv_files" / "breast_3cls.csv").write_text("\n".join([lines[0], lines[1].replace("breast_2cls", "breast_3cls")]) + "\n")
    (bad / "Classification").symlink_to(REAL / "Classification", target_is_directory=True)
    with pytest.raises(AdapterError, match="breast_3cls: the CSV has classification with 2 classes"):
        predict_split(bad, tmp_path / "o5", model, progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o5").exists()


def test_unreadable_image_is_reported_and_the_others_predicted(adapter_dirs, tmp_path, monkeypatch, capsys):
    root = tmp_path / "split"
    (root / "csv_files").mkdir(parents=True)
    (root / "Classification").symlink_to(REAL / "Classification", target_is_directory=True)
    (root / "broken").mkdir()
    (root / "broken" / "bad image.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = (REAL / "csv_files" / "breast_3cls.csv").read_text().splitlines()
    (root / "csv_files" / "breast_3cls.csv").write_text(
        "\n".join([lines[0], "../broken/bad image.png,breast_3cls,classification,3,0,benign", lines[1]]) + "\n")
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda args, adapters=(): loaded(adapter_dirs, ("breast",)))
    code = main(["predict", str(root), str(tmp_path / "out"), "--adapters", str(adapter_dirs["breast"]), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert "1 image(s) could not be read" in err and "bad image.png" in err and "images/s" in err
    failed = json.loads((tmp_path / "out" / "failed_images.json").read_text())
    assert [f["image_path"] for f in failed] == ["../broken/bad image.png"] and failed[0]["tasks"] == ["breast_3cls"]
    cls = json.loads((tmp_path / "out" / "classification_predictions.json").read_text())
    assert [e["image_path"] for e in cls] == [lines[1].split(",")[0]]


def test_cli_predict_resumes_and_evaluate_prints_the_table(root, ref, adapter_dirs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(ref[0], out)
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda args, adapters=(): loaded(adapter_dirs))
    adapters = [str(adapter_dirs[n]) for n in ADAPTERS]
    assert main(["predict", str(root), str(out), "--adapters", *adapters, "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(out.resolve())
    assert f"no adapter serves 1 task(s): {MISSING}" in cap.err and "missing_tasks.json" in cap.err
    assert "images/s" in cap.err and "wall time" in cap.err
    assert _files(out) == _files(ref[0])

    assert main(["predict", str(tmp_path / "nope"), str(out), "--adapters", *adapters]) == DataError.exit_code
    assert "does not exist" in capsys.readouterr().err

    results = evaluate(root, out)
    assert results["tasks"][MISSING]["missing"] == ROWS
    assert all(results["tasks"][t]["missing"] == 0 for tasks, _ in ADAPTERS.values() for t in tasks)
    assert main(["evaluate", str(root), str(out), "--report", str(tmp_path / "rep")]) == 0
    cap = capsys.readouterr()
    table = cap.out.splitlines()
    assert table[0].split()[:4] == ["task", "kind", "n", "missing"]
    assert any(line.startswith("breast_3cls") and "auc" in line for line in table)
    assert any(line.startswith(MISSING) and f" {ROWS} " in line for line in table)
    assert (tmp_path / "rep" / "report.md").is_file()
    assert main(["evaluate", str(root), str(out), "--json", "--tasks", "fetal_head_biometry"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["tasks"]) == ["fetal_head_biometry"] and "mre_px" in doc["tasks"]["fetal_head_biometry"]["metrics"]


# ------------------------------------------------------------------------------------------------ measure
def _fake_heads(monkeypatch, masks=None, keypoints=None):
    """Make the adapters' heads return known masks / points (random tiny heads find nothing measurable)."""
    import usam.model

    real = usam.model.run_heads

    def run_heads(model, embedded):
        pred = real(model, embedded)
        h, w = embedded.geometry.original_hw
        for tid, fn in (masks or {}).items():
            if tid in pred.masks:
                pred.masks[tid] = fn(h, w)
                pred.confidence[tid] = np.ones_like(pred.confidence[tid])  # a known mask: fully confident
        for tid, pts in (keypoints or {}).items():
            if tid in pred.keypoints:
                pred.keypoints[tid] = np.asarray(pts, dtype=np.float64)
        return pred

    monkeypatch.setattr(usam.model, "run_heads", run_heads)


def test_cli_measure_fetal_head(adapter_dirs, tmp_path, monkeypatch, capsys):
    image = REAL / "Segmentation" / "Two" / "HC18" / "images" / "019_HC.png"
    ps = 0.118045111
    semi = (150, 90)

    def head(h, w):
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (w // 2, h // 2), semi, 20, 0, 360, 1, -1)
        return m

    pts = [[100, 200], [400, 200], [250, 120], [250, 300]]  # OFD 300 px, BPD 180 px
    _fake_heads(monkeypatch, masks={"fetal_head": head}, keypoints={"fetal_head_biometry": pts})
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda args, adapters=(): tiny_model())
    out_png = tmp_path / "annotated.png"
    args = ["measure", str(image), "--adapter", str(adapter_dirs["head"]), "--pixel-size", str(ps)]
    assert main([*args, "--out", str(out_png), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_kind = {m["kind"]: m for m in doc["measurements"]}
    assert set(by_kind) == {"head", "points"} and doc["pixel_size_mm"] == ps
    from usam.ops.masks import ellipse_perimeter

    h = by_kind["head"]
    assert h["task_id"] == "fetal_head"
    assert h["ofd_mm"] == pytest.approx(2 * semi[0] * ps, rel=0.02) and h["bpd_mm"] == pytest.approx(2 * semi[1] * ps, rel=0.02)
    assert h["hc_mm"] == pytest.approx(ellipse_perimeter(300, 180) * ps, rel=0.02)
    p = by_kind["points"]
    assert p["ofd_mm"] == pytest.approx(300 * ps) and p["bpd_mm"] == pytest.approx(180 * ps)
    annotated = read_image(out_png)
    assert annotated.shape == read_image(image).shape and not np.array_equal(annotated, read_image(image))

    assert main(args) == 0  # plain text
    text = capsys.readouterr().out
    assert "fetal_head: HC" in text and "BPD" in text and "OFD" in text and "fetal_head_biometry (points)" in text


def test_cli_measure_lesion_and_errors(adapter_dirs, tmp_path, monkeypatch, capsys):
    image = REAL / "Classification" / "BUSI" / "images" / "benign (1).png"

    def lesion(h, w):
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (200, 150), (50, 20), 0, 0, 360, 1, -1)  # axes 100 and 40 pixels
        return m

    _fake_heads(monkeypatch, masks={"breast_lesion": lesion})
    monkeypatch.setattr("usam.apps.cli.challenge.build_model", lambda args, adapters=(): tiny_model())
    assert main(["measure", str(image), "--adapter", str(adapter_dirs["breast"]), "--pixel-size", "0.1", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["measurements"]
    assert [x["kind"] for x in m] == ["lesion"]
    assert m[0]["long_mm"] == pytest.approx(10.0, rel=0.03) and m[0]["short_mm"] == pytest.approx(4.0, rel=0.03)

    _fake_heads(monkeypatch, masks={"breast_lesion": lambda h, w: np.zeros((h, w), np.uint8)})
    assert main(["measure", str(image), "--adapter", str(adapter_dirs["breast"]), "--pixel-size", "0.1"]) == 3
    assert "no lesion found" in capsys.readouterr().err
    # a classification-only adapter has nothing to measure
    assert main(["measure", str(image), "--adapter", str(adapter_dirs["b2"]), "--pixel-size", "0.1"]) == AdapterError.exit_code
    assert "nothing to measure" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["measure", str(image), "--adapter", str(adapter_dirs["head"]), "--pixel-size", "-1"])
    assert exc.value.code == 2
    assert main(["measure", str(tmp_path / "none.png"), "--adapter", "x", "--pixel-size", "0.1"]) == 3
