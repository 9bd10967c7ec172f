"""The ``usam`` command line: ``segment``, ``backbones``, ``--help``, and the documented exit codes.

Exit codes (usam/cli.py, usam/errors.py): 0 ok, 2 usage, 3 bad image, 4 bad prompt, 5 checkpoint, 8 adapter.
"""

from __future__ import annotations

import argparse
import json
import re

import cv2
import numpy as np
import pytest
import torch

import usam.apps.cli
import usam.apps.cli.segment
from usam.backbones import BACKBONES
from usam.apps.cli import build_parser, main
from usam.errors import AdapterError, CheckpointError, InputImageError, PromptError
from usam.ops.masks import dice


def _read_png(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _box_args(box):
    return ["--box", *(f"{v:g}" for v in box)]


# ---------------------------------------------------------------------------------------------- segment (real)
@pytest.mark.real
def test_segment_box_writes_a_binary_mask_and_an_overlay(real_case, tmp_path, capsys):
    image_path, image, gt, box = real_case
    out, overlay = tmp_path / "masks" / "lesion.png", tmp_path / "overlay.png"
    code = main(["segment", str(image_path), *_box_args(box), "--out", str(out), "--overlay", str(overlay)])
    assert code == 0
    mask = _read_png(out)
    assert mask.shape == gt.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert dice(mask == 255, gt) > 0.85
    ov = cv2.cvtColor(_read_png(overlay), cv2.COLOR_BGR2RGB)
    assert ov.shape == image.shape
    inside = mask == 255
    assert (ov[inside] != image[inside]).any(axis=1).mean() > 0.9, "the mask is not drawn on the overlay"
    x0, y0, x1, y1 = box.astype(int)
    far = np.ones(gt.shape, bool)
    far[max(0, y0 - 10) : y1 + 10, max(0, x0 - 10) : x1 + 10] = False
    np.testing.assert_array_equal(ov[far], image[far])  # untouched away from the box and the mask
    err = capsys.readouterr().err
    assert "usam: loaded litemedsam" in err and "encoder" in err and str(out) in err
    shown = re.search(r"estimated IoU ([0-9.]+) \(the decoder's predicted IoU\)", err)  # no adapter: the score
    assert shown and 0.0 <= float(shown.group(1)) <= 1.0, err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["lesion.png", "overlay.png"]  # no temp files


@pytest.fixture
def shared_model(monkeypatch, litemedsam_model):
    """Make ``usam segment`` reuse the session's LiteMedSAM instead of building its own."""
    built = []

    def build(args):
        assert args.backbone == "litemedsam"
        built.append(args)
        return litemedsam_model

    monkeypatch.setattr(usam.apps.cli.segment, "build_model", build)
    return built


@pytest.mark.real
def test_segment_with_clicks_and_multimask(real_case, tmp_path, shared_model):
    image_path, image, gt, box = real_case
    cy, cx = np.argwhere(gt).mean(axis=0)
    out = tmp_path / "m.png"
    code = main(["segment", str(image_path), "--point", f"{cx:.1f}", f"{cy:.1f}", "--neg", "2", "2",
                 *_box_args(box), "--multimask", "--out", str(out)])
    assert code == 0 and shared_model
    mask = _read_png(out)
    assert mask.shape == gt.shape and set(np.unique(mask)) <= {0, 255} and (mask == 255).any()


# ---------------------------------------------------------------------------------------------- exit codes
def _bad_segment_cases(real_case, tmp_path):
    image_path, image, gt, box = real_case
    h, w = gt.shape
    img = str(image_path)
    wrong_arch = tmp_path / "wrong.pth"
    torch.save({"image_encoder.weight": torch.zeros(2, 2)}, wrong_arch)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return {
        # name: (argv without --out, exit code, error type, message part, needs the model)
        "no prompt": ([img], 4, PromptError, "give a prompt: --box", False),
        "missing image": ([str(tmp_path / "missing.png"), "--box", "1", "2", "3", "4"], 3, InputImageError, "does not exist", False),
        "corrupt image": ([str(corrupt), "--box", "1", "2", "3", "4"], 3, InputImageError, "not a readable image", False),
        "directory as image": ([str(tmp_path), "--box", "1", "2", "3", "4"], 3, InputImageError, "is a directory", False),
        "box outside": ([img, "--box", "0", "0", str(w + 10), str(h)], 4, PromptError, "goes outside", True),
        "inverted box": ([img, "--box", "50", "50", "10", "60"], 4, PromptError, "inverted or empty", True),
        "point outside": ([img, "--point", str(w + 1), "5"], 4, PromptError, "is outside the", True),
        "negative click outside": ([img, "--point", "5", "5", "--neg", "-3", "5"], 4, PromptError, "is outside the", True),
        "unknown adapter": ([img, *_box_args(box), "--adapter", "thyroid"], 8, AdapterError, "no adapter named 'thyroid'", True),
        "unknown backbone": ([img, *_box_args(box), "--backbone", "sam_vit_x"], 5, CheckpointError, "unknown backbone 'sam_vit_x'", False),
        "missing checkpoint": ([img, *_box_args(box), "--checkpoint", str(tmp_path / "none.pth")], 5, CheckpointError, "does not exist", False),
        "wrong-architecture checkpoint": ([img, *_box_args(box), "--checkpoint", str(wrong_arch)], 5, CheckpointError, "does not fit this architecture", False),
        "hf dir missing": ([img, *_box_args(box), "--backbone", f"hf:{tmp_path / 'no_model'}"], 5, CheckpointError, "not available offline", False),
    }


_NEEDS_MODEL = {"box outside", "inverted box", "point outside", "negative click outside", "unknown adapter"}
BAD_SEGMENT = [
    pytest.param(n, marks=pytest.mark.real) if n in _NEEDS_MODEL else n
    for n in ["no prompt", "missing image", "corrupt image", "directory as image", "box outside", "inverted box",
              "point outside", "negative click outside", "unknown adapter", "unknown backbone", "missing checkpoint",
              "wrong-architecture checkpoint", "hf dir missing"]
]


@pytest.mark.parametrize("name", BAD_SEGMENT)
def test_segment_bad_input_exit_code_and_nothing_written(name, real_case, tmp_path, capsys, monkeypatch, request):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv, code, error, message, needs_model = _bad_segment_cases(real_case, inputs)[name]
    assert error.exit_code == code and needs_model == (name in _NEEDS_MODEL)
    if needs_model:  # the prompt is checked after the image is encoded: reuse the session's model
        model = request.getfixturevalue("litemedsam_model")
        monkeypatch.setattr(usam.apps.cli.segment, "build_model", lambda args: model)
    out_dir = tmp_path / "out"
    rc = main(["segment", *argv, "--out", str(out_dir / "mask.png"), "--overlay", str(out_dir / "overlay.png")])
    assert rc == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("usam segment: error: ") and message in err[-1]
    assert not out_dir.exists() or not any(out_dir.iterdir()), "a failed command must write nothing"


@pytest.mark.parametrize("argv", [
    ["segment", "x.png", "--box", "1", "2", "3"],          # --box needs 4 numbers
    ["segment", "x.png", "--box", "1", "2", "3", "four"],  # not a number
    ["segment", "x.png", "--box", "1", "2", "3", "4"],     # --out is required
    ["segment", "x.png", "--point", "1", "--out", "m.png"],
    ["segment", "x.png", "--box", "1", "2", "3", "4", "--out", "m.png", "--precision", "fp8"],
    ["no-such-command"],
    ["backbones", "--bogus"],
])
def test_usage_errors_exit_2_and_write_nothing(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: usam" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage: usam" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- backbones / help
@pytest.mark.real
def test_backbones_lists_every_backbone(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    for name in BACKBONES:
        assert name in out
    assert "sha256" in out and "256 px -> (256, 64, 64)" in out and "1024 px -> (256, 64, 64)" in out
    assert main(["backbones", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(BACKBONES)
    lite = rows[0]
    assert lite["name"] == "litemedsam" and lite["input_size"] == 256 and len(lite["checksum"]) == 64


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def test_every_command_is_listed():
    assert {"segment", "backbones"} <= set(_subcommands())


@pytest.mark.parametrize("argv", [["--help"], ["-h"], *([c, "--help"] for c in _subcommands())])
def test_help_works(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: usam") and (len(argv) == 1 or argv[0] in out.splitlines()[0])


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usam ")
