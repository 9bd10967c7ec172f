"""Bad-input corpus for the command line (issue #12): each case runs through ``usam.apps.cli.main`` in-process and checks
the exit code, one line on stderr naming the offending input, no traceback, and that nothing is left behind (no
temp files) or destroyed where the output goes. Bad inputs are built here, in tmp_path; models are the tiny random
backbones of conftest (or are not built at all: the checks come before any model)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA_ROOT

import usam.apps.cli
import usam.apps.cli.segment
import usam.train.trainer
from usam import Predictor, UsamModel
from usam.adapters.adapter import Adapter
from usam.adapters.config import AdapterConfig
from usam.adapters.layout import is_usam_adapter_dir
from usam.apps.cli import main
from usam.tasks.spec import TaskSpec
from usam.errors import CheckpointError, InputImageError, OutputError, PromptError
from usam.io import dumps_json, to_rgb_uint8
from usam.predictor import MAX_POINTS

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers
def run(argv, capsys) -> tuple[int, str]:
    """``main(argv)``; returns the exit code and the one error line (asserted: one line, no traceback)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    if rc != 0:
        assert len(errors) == 1, err
        assert len(errors[0]) < 1200, f"error line of {len(errors[0])} characters"
        return rc, errors[0]
    return rc, ""


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_png(path: Path, arr: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any command builds a model (every check here must come first)."""

    def refuse(*a, **k):
        pytest.fail("a model was built although the input was bad")

    monkeypatch.setattr(usam.apps.cli.segment, "build_model", refuse)
    monkeypatch.setattr(usam.model.UsamModel, "from_pretrained", classmethod(refuse))
    return refuse


@pytest.fixture
def tiny_model(monkeypatch, tiny_vit):
    """``usam segment`` runs on the tiny random SAM ViT."""
    model = UsamModel(tiny_vit)
    monkeypatch.setattr(usam.apps.cli.segment, "build_model", lambda args: model)
    return model


@pytest.fixture
def image_file(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    return write_png(tmp_path / "in" / "scan.png", np.random.default_rng(0).integers(0, 256, (60, 90), dtype=np.uint8))


SEG = ["--box", "5", "5", "40", "40"]


@pytest.mark.parametrize("prompt, says", [
    (["--point", "95", "10"], "point [95.0, 10.0] is outside the 90x60 image"),
    (["--point", "nan", "10"], "--point / --neg contains NaN or infinite values"),
    (["--box", "40", "5", "5", "40"], "--box [40.0, 5.0, 5.0, 40.0] is inverted or empty"),
    (["--box", "5", "5", "40", "70"], "--box [5.0, 5.0, 40.0, 70.0] goes outside the 90x60 image"),
])
def test_segment_checks_the_prompt_against_the_image_before_any_model(image_file, tmp_path, capsys, no_model, prompt, says):
    before = snapshot(tmp_path)
    rc, err = run(["segment", image_file, *prompt, "--out", tmp_path / "mask.png"], capsys)
    assert rc == 4, err
    assert says in err, err
    assert snapshot(tmp_path) == before


def test_segment_refuses_clicks_alone_on_the_bare_box_trained_backbone(image_file, tmp_path, capsys, no_model):
    """As the demo and its API do: bare LiteMedSAM turns a lone click into a useless mask (Dice ~0.03)."""
    before = snapshot(tmp_path)
    rc, err = run(["segment", image_file, "--point", "20", "20", "--out", tmp_path / "mask.png"], capsys)
    assert rc == 4 and "trained on boxes only" in err and "--box" in err and "--adapter" in err, err
    assert snapshot(tmp_path) == before


def test_segment_takes_clicks_with_a_box_or_an_adapter(image_file, tmp_path, capsys, tiny_model):
    rc, err = run(["segment", image_file, *SEG, "--point", "20", "20", "--out", tmp_path / "a.png"], capsys)
    assert rc == 0, err
    rc, err = run(["segment", image_file, "--point", "20", "20", "--backbone", "sam_vit_b", "--out", tmp_path / "b.png"], capsys)
    assert rc == 0, err  # SAM itself was trained on clicks


def test_push_of_a_file_says_it_is_a_file(image_file, tmp_path, capsys):
    rc, err = run(["push", image_file, "someone/adapter", "--dry-run"], capsys)
    assert rc == 8 and "is a file: give the adapter's folder" in err, err
    rc, err = run(["push", tmp_path / "nothing", "someone/adapter", "--dry-run"], capsys)
    assert rc == 8 and "does not exist" in err, err


@pytest.mark.parametrize("device, says", [
    ("bogus", "--device 'bogus' is not a torch device"),
    ("cuda:7", "--device 'cuda:7': "),
    ("tpu", "--device 'tpu' is not a torch device"),
])
def test_a_device_this_machine_lacks_is_refused_before_any_model(image_file, tmp_path, capsys, monkeypatch, device, says):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")

    def refuse(*a, **k):
        pytest.fail("a backbone was built although --device was bad")

    monkeypatch.setattr(usam.model, "build_backbone", refuse)
    before = snapshot(tmp_path)
    rc, err = run(["segment", image_file, *SEG, "--out", tmp_path / "mask.png", "--device", device], capsys)
    assert rc == 6, err
    assert says in err, err
    assert snapshot(tmp_path) == before
    with pytest.raises(usam.errors.ConfigError, match="not a torch device"):
        UsamModel.from_pretrained(device="bogus")


@pytest.mark.parametrize("out, code, says", [
    ("INPUT", 2, "is the input image"),
    ("ann.txt", 2, "must end in .png"),
    ("/proc/usam_measure.png", 2, "cannot be written: folder '/proc' is not writable"),
    ("adapter", 8, "does not exist"),
])
def test_measure_checks_its_output_and_adapter_before_any_model(image_file, tmp_path, capsys, no_model, out, code, says):
    """``usam measure --out`` had overwritten the input image (and any file, whatever its suffix)."""
    before = snapshot(tmp_path)
    target = {"INPUT": image_file, "adapter": tmp_path / "ann.png"}.get(out, tmp_path / out if "/" not in out else out)
    adapter = tmp_path / "no_such_adapter" if out == "adapter" else REPO / "adapters" / "fetal_head"
    rc, err = run(["measure", image_file, "--adapter", adapter, "--out", target], capsys)
    assert rc == code, err
    assert says in err, err
    assert snapshot(tmp_path) == before


def test_an_unwritable_place_is_refused_before_any_model(image_file, tmp_path, capsys, no_model, monkeypatch):
    """``os.access`` says yes to root everywhere; a probe file says whether a file can really be created there."""
    rc, err = run(["segment", image_file, *SEG, "--out", "/proc/usam_mask.png"], capsys)
    assert rc == 2 and "cannot be written: folder '/proc' is not writable" in err, err
    monkeypatch.chdir(tmp_path)
    rc, err = run(["train", _train_config(tmp_path, tmp_path / "unused"), "--output", "/proc/usam_adapter"], capsys)
    assert rc == 6 and "folder '/proc' is not writable" in err, err


# ---------------------------------------------------------------------------------------------- 1. train --output
def _train_config(tmp_path: Path, output) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"name": "organ", "data": {"root": str(data)}, "output": str(output)}))
    return cfg


def _output_cases(tmp_path: Path):
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("a month of work\n")
    (other / "config.json").write_text('{"not": "an adapter"}')
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    fake = tmp_path / "fake_adapter"  # adapter file names, but config.json is not usam's
    fake.mkdir()
    (fake / "config.json").write_text('{"library_name": "other"}')
    mixed = tmp_path / "adapter_plus"  # a usam adapter someone added a file to
    mixed.mkdir()
    (mixed / "config.json").write_text('{"library_name": "usam"}')
    (mixed / "my_notes.md").write_text("mine\n")
    return {"folder with other files": (other, "results"), "a file": (afile, "afile"),
            "config.json of another library": (fake, "fake_adapter"), "adapter with a foreign file": (mixed, "adapter_plus"),
            "the current directory": (Path("."), str(tmp_path))}


@pytest.mark.parametrize("case", ["folder with other files", "a file", "config.json of another library",
                                  "adapter with a foreign file", "the current directory"])
@pytest.mark.parametrize("how", ["--output", "config"])
def test_train_refuses_an_output_that_is_not_usams(tmp_path, monkeypatch, capsys, no_model, case, how):
    monkeypatch.chdir(tmp_path)
    target, named = _output_cases(tmp_path)[case]
    before = snapshot(tmp_path)
    if how == "--output":
        rc, err = run(["train", _train_config(tmp_path, tmp_path / "unused"), "--output", target], capsys)
    else:
        rc, err = run(["train", _train_config(tmp_path, target)], capsys)
    assert rc == 6
    assert err.startswith("usam train: error: ") and named in err and "refused" in err
    if how == "--output":
        assert "--output" in err
    after = snapshot(tmp_path)
    after.pop("cfg.yaml"), before.pop("cfg.yaml", None)
    assert after == before, "the output location was changed"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".old", ".tmp", ".train_state"))]


def test_output_rule_accepts_new_empty_and_usam_adapters(tmp_path, tiny_vit):
    from usam.adapters.layout import output_problem

    config = AdapterConfig(name="organ", backbone=tiny_vit.name, backbone_checksum=tiny_vit.checksum,
                           tasks={"organ_cls": TaskSpec("organ_cls", "classification", 2)}, input_size=tiny_vit.input_size)
    adapter = Adapter(config, tiny_vit)
    out = tmp_path / "runs" / "organ"
    assert output_problem(out) is None
    (tmp_path / "empty").mkdir()
    assert output_problem(tmp_path / "empty") is None
    adapter.save_pretrained(out, metrics={"val": {"organ_cls": {"auc": float("nan"), "score": 0.5}}, "best": -float("inf")})
    assert is_usam_adapter_dir(out) and output_problem(out) is None
    # strict JSON: NaN / inf are written as null
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    assert metrics["val"]["organ_cls"]["auc"] is None and metrics["best"] is None
    adapter.save_pretrained(out)  # replacing usam's own adapter is fine; metrics.json carried over
    assert sorted(p.name for p in out.parent.iterdir()) == ["organ"], "a temp or .old folder was left behind"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        adapter.save_pretrained(out)
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.parent.iterdir()) == ["organ"]


def test_train_accepts_an_existing_usam_adapter_as_output(tmp_path, monkeypatch, capsys):
    """The output check passes for usam's own adapter (and for an empty folder): the command goes on to build the
    model, stopped here by a stand-in that raises."""
    out = tmp_path / "adapter"
    shutil.copytree(REPO / "adapters" / "intrapartum", out)
    (tmp_path / "empty").mkdir()

    def stop(*a, **k):
        raise CheckpointError("stopped after the output check")

    monkeypatch.setattr(usam.train.trainer.UsamModel, "from_pretrained", classmethod(stop))
    for target in (out, tmp_path / "empty", tmp_path / "new" / "adapter"):
        rc, err = run(["train", _train_config(tmp_path, tmp_path / "unused"), "--output", target], capsys)
        assert rc == 5 and "stopped after the output check" in err


# ---------------------------------------------------------------------------------------------- 2. train overrides
TRAIN_OVERRIDES = {
    "--epochs 0": (["--epochs", "0"], "train.epochs must be a positive integer, got 0"),
    "--epochs -3": (["--epochs", "-3"], "train.epochs must be a positive integer"),
    "--output ''": (["--output", ""], "output must be a folder path"),
    "--set train.epochs=0": (["--set", "train.epochs=0"], "train.epochs must be a positive integer"),
    "--set train=5": (["--set", "train=5"], "train must be a mapping"),
    "--set lora=[1]": (["--set", "lora=[1]"], "lora must be a mapping"),
    "--set lora.rank=0": (["--set", "lora.rank=0"], "lora.rank must be a positive integer"),
    "--set lora.dropout=2": (["--set", "lora.dropout=2"], "LoRA dropout must be in [0, 1)"),
    "--set decoder.lora.rank=x": (["--set", "decoder.lora.rank=x"], "decoder.lora.rank must be a positive integer"),
    "--set data.root.x=1": (["--set", "data.root.x=1"], "'root' is not a section"),
    "--set name=../../evil": (["--set", "name=../../evil"], "must be a plain adapter name"),
    "--set name=": (["--set", "name="], "must be a plain adapter name"),
    "--set data.limit=true": (["--set", "data.limit=true"], "data.limit must be a positive integer"),
    "--set init=missing": (["--set", "init=missing_adapter"], "init adapter 'missing_adapter' is not a folder"),
    "--set a..b=1": (["--set", "a..b=1"], "without empty parts"),
    "--set 'x=[unclosed'": (["--set", "name=[unclosed"], "not valid YAML"),
}


@pytest.mark.parametrize("case", list(TRAIN_OVERRIDES))
def test_train_validates_every_override_like_the_config(tmp_path, monkeypatch, capsys, no_model, case):
    monkeypatch.chdir(tmp_path)
    argv, message = TRAIN_OVERRIDES[case]
    out = tmp_path / "out"
    rc, err = run(["train", _train_config(tmp_path, out), *argv], capsys)
    assert rc == 6 and message in err, err
    if case.startswith("--epochs"):
        assert "--epochs" in err, "the message must name the flag"
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_train_config_that_is_not_utf8(tmp_path, capsys, no_model):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(b"name: caf\xe9\n")
    rc, err = run(["train", cfg], capsys)
    assert rc == 6 and "cfg.yaml" in err and "not UTF-8" in err


def test_json_written_by_usam_is_strict():
    text = dumps_json({"a": float("nan"), "b": [float("inf"), -float("inf"), np.float32("nan"), np.int64(3)],
                       "c": (1.5, Path("x"))})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [None, None, None, 3], "c": [1.5, "x"]}


@pytest.mark.real
def test_train_cli_writes_strict_json_and_resumes_into_its_own_adapter(tmp_path, monkeypatch, capsys, tiny_vit):
    """One epoch on 3 BUSI rows (a one-class validation set: AUC is NaN) with the tiny backbone, through the CLI;
    then again into the same folder (usam's own adapter: accepted, replaced when complete)."""
    if not (DATA_ROOT / "train" / "csv_files" / "breast_3cls.csv").is_file():
        pytest.skip(f"dev data not found at {DATA_ROOT}")
    monkeypatch.setenv("USAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(usam.train.trainer.UsamModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: UsamModel(tiny_vit)))
    cfg = tmp_path / "cfg.yaml"
    out = tmp_path / "runs" / "tiny"
    cfg.write_text(json.dumps({
        "name": "tiny", "data": {"root": str(DATA_ROOT), "tasks": ["breast_3cls"], "limit": 3},
        "decoder": {"tune": False}, "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size_heads": 2},
        "output": str(out)}))
    strict = {"parse_constant": lambda c: pytest.fail(f"bare {c} in a JSON file usam wrote")}
    for epochs in ("1", "2"):
        rc, err = run(["train", cfg, "--epochs", epochs], capsys)
        assert rc == 0, err
        metrics = json.loads((out / "metrics.json").read_text(), **strict)
        json.loads((out / "config.json").read_text(), **strict)
        state = json.loads((out.parent / ".tiny.train_state" / "state.json").read_text(), **strict)
        assert state["epoch"] == int(epochs) - 1
    assert metrics["val"]["breast_3cls"]["auc"] is None  # NaN (one class in validation) -> null
    assert sorted(p.name for p in out.parent.iterdir()) == [".tiny.train_state", "tiny"]


# ---------------------------------------------------------------------------------------------- 3. segment outputs
@pytest.mark.parametrize("name", ["m.jpg", "m.jpeg", "m.tif", "mask", "m.PNG.bak"])
def test_segment_mask_must_be_png(image_file, tmp_path, capsys, no_model, name):
    out = tmp_path / "out" / name
    rc, err = run(["segment", image_file, *SEG, "--out", out], capsys)
    assert rc == 2 and repr(str(out)) in err and ".png" in err and "lossless" in err
    assert not (tmp_path / "out").exists()


def test_segment_overlay_is_encoded_by_its_suffix(image_file, tmp_path, capsys, tiny_model):
    out = tmp_path / "out"
    rc, _ = run(["segment", image_file, *SEG, "--out", out / "m.PNG", "--overlay", out / "o.jpg"], capsys)
    assert rc == 0
    assert (out / "m.PNG").read_bytes()[:4] == b"\x89PNG" and (out / "o.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert sorted(p.name for p in out.iterdir()) == ["m.PNG", "o.jpg"]
    rc, err = run(["segment", image_file, *SEG, "--out", out / "m2.png", "--overlay", out / "o.gif"], capsys)
    assert rc == 2 and "o.gif" in err and not (out / "m2.png").exists()


# ---------------------------------------------------------------------------------------------- 4. tracebacks
def _unwritable_cases(tmp_path: Path) -> dict[str, tuple[list, str]]:
    (tmp_path / "adir_out.png").mkdir()
    (tmp_path / "afile").write_text("x")
    ok = str(tmp_path / "ok.png")
    return {
        "--out is a directory": (["--out", tmp_path / "adir_out.png"], "is a directory"),
        "--out under a file": (["--out", tmp_path / "afile" / "m.png"], "is a file, not a folder"),
        "--overlay is a directory": (["--out", ok, "--overlay", tmp_path / "adir_out.png"], "is a directory"),
        "--overlay under a file": (["--out", ok, "--overlay", tmp_path / "afile" / "sub" / "o.png"], "is a file, not a folder"),
        "--out is the input": (["--out", tmp_path / "in" / "scan.png"], "is the input image"),
        "--out = --overlay": (["--out", ok, "--overlay", ok], "same file"),
    }


@pytest.mark.parametrize("case", ["--out is a directory", "--out under a file", "--overlay is a directory",
                                  "--overlay under a file", "--out is the input", "--out = --overlay"])
def test_segment_checks_every_output_before_any_work(image_file, tmp_path, capsys, no_model, case):
    argv, message = _unwritable_cases(tmp_path)[case]
    before = snapshot(tmp_path)
    rc, err = run(["segment", image_file, *SEG, *argv], capsys)
    assert rc == 2 and message in err and err.startswith("usam segment: error: --")
    assert snapshot(tmp_path) == before, "something was written or changed"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_segment_write_failure_leaves_nothing(image_file, tmp_path, capsys, tiny_model, monkeypatch):
    """A failure while writing (here: the overlay's rename) leaves neither the mask nor a temp file."""
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("o.png"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    rc, err = run(["segment", image_file, *SEG, "--out", out / "m.png", "--overlay", out / "o.png"], capsys)
    assert rc == 2 and "o.png" in err and "Permission denied" in err
    assert list(out.iterdir()) == [], "the mask (or a temp file) was left behind"


@pytest.mark.parametrize("hw", [(8, 20000), (20000, 8), (10, 400)])
def test_extreme_aspect_ratio_is_a_clear_image_error(tmp_path, capsys, no_model, tiny_vit, hw):
    path = write_png(tmp_path / "strip.png", np.zeros(hw, np.uint8))
    rc, err = run(["segment", path, "--box", "1", "1", "7", "7", "--out", tmp_path / "m.png"], capsys)
    assert rc == 3 and "strip.png" in err and "aspect ratio" in err and "crop it" in err
    p = Predictor(tiny_vit)
    with pytest.raises(InputImageError, match="aspect ratio"):
        p.set_image(np.zeros(hw, np.uint8))
    assert p.model.encoder_calls == 0 and not (tmp_path / "m.png").exists()


def test_aspect_ratio_limit_is_inclusive(tiny_vit):
    assert to_rgb_uint8(np.zeros((8, 256), np.uint8)).shape == (8, 256, 3)  # exactly 32:1 is accepted


# adapters with a damaged config.json: name -> (how to damage it, message part)
def _damage(cfg: dict, name: str):
    task = next(iter(cfg["tasks"]))
    if name == "not UTF-8":
        return json.dumps(cfg).encode().replace(b'"breast"', b'"caf\xe9"')
    if name == "tasks []":
        cfg["tasks"] = []
    elif name == "num_classes -3":
        cfg["tasks"][task]["num_classes"] = -3
    elif name == "num_classes 10**9":
        cfg["tasks"][task]["num_classes"] = 10**9
    elif name == "name ../../evil":
        cfg["name"] = "../../evil"
    elif name == "unknown task kind":
        cfg["tasks"][task]["kind"] = "telepathy"
    elif name == "tasks as a string":
        cfg["tasks"] = "breast"
    elif name == "a JSON list":
        return b"[1, 2]"
    elif name == "lora rank 0":
        cfg["decoder"]["lora"] = {"rank": 0, "alpha": 16}
    return json.dumps(cfg).encode()


BAD_ADAPTERS = {
    "not UTF-8": "is not UTF-8",
    "tasks []": "tasks must be a non-empty object",
    "tasks as a string": "tasks must be a non-empty object",
    "num_classes -3": "num_classes must be an integer in [2, 256]",
    "num_classes 10**9": "num_classes must be an integer in [2, 256]",
    "name ../../evil": "must be a plain adapter name",
    "unknown task kind": "unknown kind 'telepathy'",
    "a JSON list": "must be a JSON object",
    "lora rank 0": "LoRA rank must be >= 1",
}


@pytest.fixture(scope="module")
def damaged_adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged_adapters")
    cfg = json.loads((REPO / "adapters" / "breast" / "config.json").read_text())
    out = {}
    for name in BAD_ADAPTERS:
        d = root / name.replace(" ", "_").replace("/", "_").replace(".", "_").replace("*", "")
        d.mkdir()
        shutil.copy2(REPO / "adapters" / "breast" / "heads.safetensors", d / "heads.safetensors")
        (d / "config.json").write_bytes(_damage(json.loads(json.dumps(cfg)), name))
        out[name] = d
    return out


@pytest.mark.parametrize("name", list(BAD_ADAPTERS))
@pytest.mark.parametrize("command", ["segment", "push --dry-run"])
def test_damaged_adapter_config_exits_8_naming_the_adapter(damaged_adapters, image_file, tmp_path, capsys, no_model,
                                                           name, command):
    d = damaged_adapters[name]
    before = snapshot(d)
    if command == "segment":
        argv = ["segment", image_file, *SEG, "--adapters", d, "--out", tmp_path / "out" / "m.png"]
    else:
        argv = ["push", d, "someone/adapter", "--dry-run"]
    rc, err = run(argv, capsys)
    assert rc == 8, err
    assert str(d) in err and BAD_ADAPTERS[name] in err
    assert snapshot(d) == before and not (tmp_path / "out").exists()


def test_hf_backbone_with_pickled_weights_is_refused(hf_sam_dir, image_file, tmp_path, capsys):
    from safetensors.torch import load_file

    cases = {"state dict": load_file(str(hf_sam_dir / "model.safetensors")), "arbitrary pickle": {"x": os.system}}
    for name, obj in cases.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        shutil.copy2(hf_sam_dir / "config.json", d / "config.json")
        torch.save(obj, d / "pytorch_model.bin")
        rc, err = run(["segment", image_file, *SEG, "--out", tmp_path / "m.png", "--backbone", f"hf:{d}"], capsys)
        assert rc == 5, name
        assert str(d) in err and "pickled weights" in err and "pytorch_model.bin" in err
    assert not (tmp_path / "m.png").exists()


def test_too_many_clicks(image_file, tmp_path, capsys, no_model, tiny_vit):
    clicks = []
    for i in range(MAX_POINTS + 1):
        clicks += ["--point" if i % 2 else "--neg", str(1 + i % 50), "3"]
    rc, err = run(["segment", image_file, *clicks, "--out", tmp_path / "m.png"], capsys)
    assert rc == 4 and f"{MAX_POINTS + 1} clicks" in err and f"at most {MAX_POINTS}" in err
    p = Predictor(tiny_vit)
    p.set_image(np.zeros((60, 90), np.uint8))
    many = np.tile([[5.0, 5.0]], (10_000, 1))
    with pytest.raises(PromptError, match=f"10000 points given: at most {MAX_POINTS}"):
        p.predict(point_coords=many, point_labels=np.ones(10_000))
    masks, _, _ = p.predict(point_coords=many[:MAX_POINTS], point_labels=np.ones(MAX_POINTS))
    assert masks.shape[-2:] == (60, 90)


def test_documented_click_limit():
    assert "64 clicks" in (REPO / "README.md").read_text() and MAX_POINTS == 64
    assert "MAX_POINTS" in Predictor.__doc__ and "64" in Predictor.__doc__


def test_set_image_takes_a_path(tiny_vit, image_file, tmp_path):
    p = Predictor(tiny_vit)
    p.set_image(str(image_file))
    assert p.original_size == (60, 90)
    p.set_image(image_file)  # a Path too; same content -> cached, no second encoder call
    assert p.model.encoder_calls == 1
    with pytest.raises(InputImageError, match=r"missing.png' does not exist"):
        p.set_image(str(tmp_path / "missing.png"))
    with pytest.raises(InputImageError, match=r"is a path .*pass a numpy array, or read the file with usam.io.read_image"):
        p.model.embed("scan.png")


def test_error_messages_stay_short(tiny_vit):
    p = Predictor(tiny_vit)
    p.set_image(np.zeros((60, 90), np.uint8))
    cases = {
        "NaN mask_input": dict(box=np.array([1, 1, 30, 30]), mask_input=np.full((1, 256, 256), np.nan)),
        "many bad labels": dict(point_coords=np.ones((60, 2)), point_labels=np.full(60, 7)),
        "text points": dict(point_coords=np.array([["a", "b"]] * 60), point_labels=np.ones(60)),
    }
    for name, kwargs in cases.items():
        with pytest.raises(PromptError) as info:
            p.predict(**kwargs)
        msg = str(info.value)
        assert len(msg) < 200 and "\n" not in msg, (name, len(msg))
    with pytest.raises(PromptError, match=r"mask_input contains NaN or infinite values: 65536 of 65536 values, first at index \(0, 0, 0\)"):
        p.predict(**cases["NaN mask_input"])


def test_cli_prints_a_multi_line_error_on_one_line(monkeypatch, capsys, tmp_path):
    def boom(args):
        raise InputImageError("first line\nsecond line\n" + "x" * 5000)

    monkeypatch.setattr(usam.apps.cli.segment, "cmd_backbones", boom)
    monkeypatch.setattr(usam.apps.cli, "build_parser", _parser_with(boom))
    rc, err = run(["backbones"], capsys)
    assert rc == 3 and "first line second line" in err and err.endswith("...")


def _parser_with(func):
    real = usam.apps.cli.build_parser

    def build():
        parser = real()
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict) and "backbones" in action.choices:
                action.choices["backbones"].set_defaults(func=func)
        return parser

    return build


# ---------------------------------------------------------------------------------------------- 5. measure
def test_check_confident_rule():
    from usam.measure import MIN_CONFIDENCE, MIN_MASK_PIXELS, check_confident

    m = np.zeros((100, 100), np.uint8)
    with pytest.raises(InputImageError, match=r"no head found \(empty mask\)"):
        check_confident(m, 0.99, "head")
    m[:9, :9] = 1  # 81 px
    with pytest.raises(InputImageError, match=f"81 pixels, fewer than {MIN_MASK_PIXELS}"):
        check_confident(m, 0.99, "lesion")
    m[:10, :10] = 1
    assert check_confident(m, MIN_CONFIDENCE, "head").sum() == 100
    assert check_confident(m, None, "head").sum() == 100  # confidence unknown: only the size rule
    for low in (MIN_CONFIDENCE - 1e-3, 0.0, float("nan")):
        with pytest.raises(InputImageError, match="not confident of the head mask"):
            check_confident(m, low, "head")


@pytest.fixture
def measure_model(monkeypatch, litemedsam_model):
    """``usam measure`` on the session's LiteMedSAM backbone (a fresh UsamModel: the adapter stays local)."""
    import usam.apps.cli.challenge as challenge

    monkeypatch.setattr(challenge, "build_model", lambda args, adapters=(): UsamModel(litemedsam_model.backbone))


HC18_ROW = ("Segmentation/Two/HC18/images/136_HC.png", 0.072571385, 100.83)  # test split: image, mm per px, HC mm


@pytest.mark.real
@pytest.mark.parametrize("image", ["black", "white", "black small"])
def test_measure_refuses_a_blank_image(tmp_path, capsys, measure_model, image):
    hw = (200, 300) if image == "black small" else (540, 800)
    path = write_png(tmp_path / "blank.png", np.full(hw, 255 if image == "white" else 0, np.uint8))
    out = tmp_path / "out" / "annotated.png"
    rc, err = run(["measure", path, "--adapter", REPO / "adapters" / "fetal_head", "--pixel-size", "0.118",
                   "--out", out], capsys)
    assert rc == 3, err
    assert "blank.png" in err and "nothing measurable" in err and "not confident of the head mask" in err
    assert "its points come from the fetal_head mask, which is refused" in err  # fetal_head_biometry: refused too
    assert not (tmp_path / "out").exists()


@pytest.mark.real
def test_measure_still_measures_a_real_hc18_head(data_root, tmp_path, capsys, measure_model):
    rel, pixel_size, hc_mm = HC18_ROW
    image = data_root / "test" / rel
    rc = main(["measure", str(image), "--adapter", str(REPO / "adapters" / "fetal_head"), "--pixel-size", str(pixel_size),
               "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    head = next(m for m in doc["measurements"] if m["task_id"] == "fetal_head")
    assert "error" not in head and abs(head["hc_mm"] - hc_mm) < 5.0, head
