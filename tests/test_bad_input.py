"""Every bad input raises the right ``usam.errors`` type with a message that names the problem, and
nothing is computed or written on the way (no encoder call, no output file)."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ODD_HW

import usam.io.images
from usam import Predictor, UsamModel, build_backbone
from usam.backbones.litemedsam import bundled_checkpoint
from usam.backbones.sam_style import load_torch_checkpoint
import usam.apps.cli.segment
from usam.apps.cli import main
from usam.errors import CheckpointError, InputImageError, PromptError, UsamError
from usam.io import read_image, to_rgb_uint8


# ---------------------------------------------------------------------------------------------- helpers
def _png_header_only_big(path: Path, w: int, h: int) -> Path:
    """A valid 1-bit greyscale PNG of w x h zeros: tens of kB on disk, w * h pixels by its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (w + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _write_png(path: Path, arr: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a regex the error message must match)."""
    rng = np.random.default_rng(0)
    (tmp / "random.png").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "a_directory.png").mkdir()
    good = _write_png(tmp / "good.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    (tmp / "truncated.png").write_bytes(good.read_bytes()[:120])
    (tmp / "text.jpg").write_text("this is not a picture\n")
    _write_png(tmp / "one_pixel.png", np.zeros((1, 1), np.uint8))
    _write_png(tmp / "thin.png", np.zeros((4, 300), np.uint8))
    _png_header_only_big(tmp / "giga.png", 20000, 20000)
    return {
        "corrupt (random bytes)": (tmp / "random.png", r"is not a readable image or is corrupt"),
        "truncated PNG": (tmp / "truncated.png", r"is not a readable image or is corrupt"),
        "text file": (tmp / "text.jpg", r"is not a readable image or is corrupt"),
        "empty file": (tmp / "empty.png", r"is empty \(0 bytes\)"),
        "directory": (tmp / "a_directory.png", r"is a directory, not an image file"),
        "missing file": (tmp / "nope" / "missing.png", r"does not exist: check the path"),
        "1x1 image": (tmp / "one_pixel.png", r"is 1x1 pixels: both sides must be at least 8 pixels"),
        "4 px high": (tmp / "thin.png", r"is 300x4 pixels: both sides must be at least 8"),
        "gigapixel header": (tmp / "giga.png", r"too large.*downscale it first"),
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad_images"))


BAD_FILE_NAMES = [
    "corrupt (random bytes)", "truncated PNG", "text file", "empty file", "directory", "missing file",
    "1x1 image", "4 px high", "gigapixel header",
]

# ---------------------------------------------------------------------------------------------- image files
@pytest.mark.parametrize("name", BAD_FILE_NAMES)
def test_read_image_rejects_bad_files(bad_files, name):
    path, message = bad_files[name]
    with pytest.raises(InputImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value), "the message must name the file"
    assert isinstance(info.value, UsamError) and info.value.exit_code == 3


def test_gigapixel_header_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _png_header_only_big(tmp_path / "big.png", 20000, 20000)
    assert path.stat().st_size < 200_000
    decoded = []
    monkeypatch.setattr(usam.io.images.cv2, "imdecode", lambda *a, **k: decoded.append(1))
    with pytest.raises(InputImageError, match="too large"):
        read_image(path)
    assert not decoded, "the pixels were decoded before the size check"


def test_max_pixels_limit_for_files_and_arrays(tmp_path, monkeypatch):
    path = _write_png(tmp_path / "img.png", np.zeros((100, 120), np.uint8))
    assert read_image(path).shape == (100, 120, 3)
    monkeypatch.setattr(usam.io.images, "MAX_PIXELS", 10_000)
    with pytest.raises(InputImageError, match=r"is 120x100 pixels \(0 MP\), over the 0 MP limit: downscale it first"):
        read_image(path)
    with pytest.raises(InputImageError, match=r"is 120x100 pixels.*over the"):
        to_rgb_uint8(np.zeros((100, 120, 3), np.uint8))
    to_rgb_uint8(np.zeros((100, 100), np.uint8))  # exactly at the limit is fine


BAD_ARRAYS = {
    "(H, W, 2)": (np.zeros((20, 30, 2), np.uint8), r"has shape \(20, 30, 2\): expected \(H, W\) greyscale"),
    "(H, W, 5)": (np.zeros((20, 30, 5), np.uint8), r"has shape \(20, 30, 5\)"),
    "4-D": (np.zeros((1, 20, 30, 3), np.uint8), r"has shape \(1, 20, 30, 3\)"),
    "1-D": (np.zeros(600, np.uint8), r"has shape \(600,\)"),
    "1x1": (np.zeros((1, 1), np.uint8), r"is 1x1 pixels: both sides must be at least 8"),
    "1x1x3": (np.zeros((1, 1, 3), np.float32), r"is 1x1 pixels"),
    "empty": (np.zeros((0, 0), np.uint8), r"is empty"),
    "NaN float": (np.where(np.eye(20, 30) > 0, np.nan, 0.5), r"contains NaN or infinite values"),
    "inf float": (np.where(np.eye(20, 30) > 0, np.inf, 0.5).astype(np.float32), r"contains NaN or infinite values"),
    "-inf float": (np.full((20, 30, 3), -np.inf), r"contains NaN or infinite values"),
    "complex": (np.zeros((20, 30), np.complex64), r"unsupported dtype complex64"),
    "object": (np.array([[None] * 30] * 20), r"has unsupported dtype object"),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_to_rgb_uint8_rejects_bad_arrays(name):
    arr, message = BAD_ARRAYS[name]
    with pytest.raises(InputImageError, match=message):
        to_rgb_uint8(arr, name="scan.png")
    with pytest.raises(InputImageError, match=r"^image 'scan.png'"):
        to_rgb_uint8(arr, name="scan.png")


# ---------------------------------------------------------------------------------------------- predictor
@pytest.fixture(scope="module")
def predictor(tiny_vit):
    p = Predictor(UsamModel(tiny_vit))
    img = np.random.default_rng(0).integers(0, 256, ODD_HW, dtype=np.uint8)
    p.set_image(img)
    return p


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_set_image_rejects_bad_arrays_without_running_the_encoder(predictor, name):
    arr, message = BAD_ARRAYS[name]
    calls = predictor.model.encoder_calls
    before = predictor.get_image_embedding()
    with pytest.raises(InputImageError, match=message):
        predictor.set_image(arr)
    assert predictor.model.encoder_calls == calls
    assert predictor.get_image_embedding() is before, "a failed set_image must keep the previous image"


H, W = ODD_HW
BAD_PROMPTS = {
    # name: (predict kwargs, message regex)
    "point right of the image": (dict(point_coords=[[W, 10]], point_labels=[1]), r"point \[500.0, 10.0\] is outside the 500x300 image: x must be in \[0, 499\]"),
    "point below the image": (dict(point_coords=[[10, H + 5]], point_labels=[1]), r"is outside the 500x300 image.*y in \[0, 299\]"),
    "negative point": (dict(point_coords=[[5, 5], [-1, 10]], point_labels=[1, 0]), r"point \[-1.0, 10.0\] is outside"),
    "box beyond the right edge": (dict(box=[10, 10, W + 1, 100]), r"goes outside the 500x300 image: keep 0 <= x <= 500, 0 <= y <= 300"),
    "box above the image": (dict(box=[10, -3, 100, 100]), r"goes outside the 500x300 image"),
    "one of K boxes outside": (dict(box=[[10, 10, 100, 100], [10, 10, 100, H + 50]]), r"box \[10.0, 10.0, 100.0, 350.0\] goes outside"),
    "inverted box (x)": (dict(box=[200, 10, 100, 100]), r"box \[200.0, 10.0, 100.0, 100.0\] is inverted or empty: it must be x0 < x1 and y0 < y1"),
    "inverted box (y)": (dict(box=[10, 200, 100, 100]), r"is inverted or empty"),
    "zero-area box": (dict(box=[100, 50, 100, 150]), r"is inverted or empty"),
    "zero-height box": (dict(box=[10, 50, 100, 50]), r"is inverted or empty"),
    "box of 3 numbers": (dict(box=[1, 2, 3]), r"box must have shape \(4,\) or \(K, 4\)"),
    "no boxes (0, 4)": (dict(box=np.zeros((0, 4))), r"box must have shape"),
    "NaN box": (dict(box=[1, 2, np.nan, 40]), r"box contains NaN or infinite values"),
    "label 2": (dict(point_coords=[[10, 10]], point_labels=[2]), r"point_labels must be 1 \(positive\) or 0 \(negative\), got \[2\]"),
    "label -1": (dict(point_coords=[[10, 10], [20, 20]], point_labels=[1, -1]), r"must be 1 \(positive\) or 0 \(negative\), got \[1, -1\]"),
    "label 0.5": (dict(point_coords=[[10, 10]], point_labels=[0.5]), r"must be 1 \(positive\) or 0"),
    "2 points, 1 label": (dict(point_coords=[[10, 10], [20, 20]], point_labels=[1]), r"2 points but 1 labels: give one label per point"),
    "1 point, 2 labels": (dict(point_coords=[[10, 10]], point_labels=[1, 0]), r"1 points but 2 labels"),
    "points without labels": (dict(point_coords=[[10, 10]]), r"point prompts need both point_coords \(N, 2\) and point_labels"),
    "labels without points": (dict(point_labels=[1]), r"need both point_coords"),
    "points (N, 3)": (dict(point_coords=[[1, 2, 3]], point_labels=[1]), r"point_coords must have shape \(N, 2\)"),
    "no points (0, 2)": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), r"point_coords must have shape \(N, 2\)"),
    "inf point": (dict(point_coords=[[np.inf, 2]], point_labels=[1]), r"point_coords contains NaN or infinite values"),
    "text point": (dict(point_coords=[["a", "b"]], point_labels=[1]), r"point_coords must be numbers"),
    "no prompt": (dict(), r"give at least one prompt: a point"),
    "only mask_input": (dict(mask_input=np.zeros((1, 256, 256))), r"give at least one prompt"),
    "mask_input (256, 256)": (dict(box=[10, 10, 100, 100], mask_input=np.zeros((256, 256))), r"mask_input must have shape \(1, 256, 256\).*got \(256, 256\)"),
    "mask_input (1, 64, 64)": (dict(box=[10, 10, 100, 100], mask_input=np.zeros((1, 64, 64))), r"mask_input must have shape.*got \(1, 64, 64\)"),
    "mask_input (1, 300, 500)": (dict(box=[10, 10, 100, 100], mask_input=np.zeros((1, H, W))), r"mask_input must have shape"),
    "mask_input for 3 boxes, 2 given": (dict(box=[[10, 10, 100, 100]] * 3, mask_input=np.zeros((2, 1, 256, 256))), r"got \(2, 1, 256, 256\)"),
    "NaN mask_input": (dict(box=[10, 10, 100, 100], mask_input=np.full((1, 256, 256), np.nan)), r"mask_input contains NaN"),
}


@pytest.mark.parametrize("name", list(BAD_PROMPTS))
def test_predict_rejects_bad_prompts(predictor, name):
    kwargs, message = BAD_PROMPTS[name]
    kwargs = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    calls = predictor.model.encoder_calls
    decoded = []
    handle = predictor.model.backbone.prompt_encoder.register_forward_pre_hook(lambda *a: decoded.append(1))
    try:
        with pytest.raises(PromptError, match=message) as info:
            predictor.predict(**kwargs)
    finally:
        handle.remove()
    assert info.value.exit_code == 4 and isinstance(info.value, ValueError)
    assert predictor.model.encoder_calls == calls and not decoded


def test_prompts_on_the_image_border_are_accepted(predictor):
    masks, _, _ = predictor.predict(point_coords=np.array([[0, 0], [W - 1, H - 1]]), point_labels=np.array([1, 0]),
                                    box=np.array([0, 0, W, H]))
    assert masks.shape == (3, H, W)


def test_predict_before_set_image(tiny_vit):
    p = Predictor(tiny_vit)
    for call in (lambda: p.predict(box=np.array([1, 2, 30, 40])), p.get_image_embedding, lambda: p.original_size):
        with pytest.raises(PromptError, match=r"no image is set: call set_image\(image\) before predict"):
            call()
    p.set_image(np.zeros((32, 32), np.uint8))
    p.reset_image()
    with pytest.raises(PromptError, match="no image is set"):
        p.predict(box=np.array([1, 2, 30, 30]))


# ---------------------------------------------------------------------------------------------- checkpoints / backbones
@pytest.fixture(scope="module")
def tiny_vit_checkpoint(tiny_vit, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sam_vit.pth"
    torch.save(tiny_vit.state_dict(), path)
    return path


def test_missing_checkpoint_file(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(CheckpointError, match=r"LiteMedSAM: checkpoint .*weights.pth' does not exist. Pass --checkpoint") as info:
        build_backbone("litemedsam", checkpoint=str(missing))
    assert info.value.exit_code == 5
    with pytest.raises(CheckpointError, match=r"sam_vit_b: checkpoint .* does not exist"):
        build_backbone("sam_vit_b", checkpoint=str(missing), tiny=True)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        build_backbone("sam_vit_b", checkpoint=str(tmp_path), tiny=True)  # a directory is not a checkpoint file


def test_sam_vit_needs_a_checkpoint_unless_random():
    with pytest.raises(CheckpointError, match=r"sam_vit_b needs its segment-anything checkpoint: pass --checkpoint .*downloads nothing"):
        build_backbone("sam_vit_b", tiny=True)


def test_checkpoint_of_the_wrong_architecture(tiny_vit_checkpoint):
    with pytest.raises(CheckpointError, match=r"LiteMedSAM checkpoint .*tiny_sam_vit.pth' does not fit this architecture: .*usam backbones"):
        build_backbone("litemedsam", checkpoint=str(tiny_vit_checkpoint))


@pytest.mark.real
def test_litemedsam_weights_do_not_load_as_sam_vit():
    path, _ = bundled_checkpoint()
    with pytest.raises(CheckpointError, match=r"sam_vit_b checkpoint .* does not fit this architecture"):
        build_backbone("sam_vit_b", checkpoint=path, tiny=True)


class _NotAStateDict:
    pass


def _non_state_dicts(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "text.pth").write_text("definitely not torch\n")
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "random.pth").write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    torch.save({"lr": 0.1, "epoch": 3}, tmp / "numbers.pth")
    torch.save([torch.zeros(3)], tmp / "list.pth")
    torch.save(torch.zeros(3), tmp / "tensor.pth")
    with open(tmp / "pickle.pth", "wb") as fh:
        pickle.dump(_NotAStateDict(), fh, protocol=2)
    readable = r"is not a readable PyTorch state dict"
    tensors = r"does not hold a state dict of tensors"
    return {
        "text": (tmp / "text.pth", readable),
        "empty": (tmp / "empty.pth", readable),
        "random bytes": (tmp / "random.pth", readable),
        "arbitrary pickle (refused by weights_only)": (tmp / "pickle.pth", readable),
        "dict of numbers": (tmp / "numbers.pth", tensors),
        "list of tensors": (tmp / "list.pth", tensors),
        "bare tensor": (tmp / "tensor.pth", tensors),
    }


def test_non_state_dict_checkpoints(tmp_path):
    files = _non_state_dicts(tmp_path)
    for name, (path, message) in files.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_torch_checkpoint(path, "LiteMedSAM")
        assert str(path) in str(info.value), name
    # and through build_backbone, for both segment-anything style backbones
    for name in ("text", "dict of numbers"):
        path, message = files[name]
        for backbone, kwargs in (("litemedsam", {}), ("sam_vit_b", {"tiny": True})):
            with pytest.raises(CheckpointError, match=f"{backbone.replace('litemedsam', 'LiteMedSAM')}: .*{message}"):
                build_backbone(backbone, checkpoint=str(path), **kwargs)


@pytest.mark.parametrize("name", ["sam_vit_x", "LiteMedSAM", "", "hf:", "vit_b", "hf"])
def test_unknown_backbone_name(name):
    with pytest.raises(CheckpointError, match=r"unknown backbone .*: choose one of litemedsam, sam_vit_b, sam_vit_l, sam_vit_h, hf:"):
        build_backbone(name)


def test_hf_reference_that_is_not_available_offline(tmp_path, hf_sam_dir):
    for ref in (str(tmp_path / "does-not-exist"), "someone/sam-that-is-not-cached"):
        with pytest.raises(CheckpointError, match=r"is not available offline: pass a local directory with config.json"):
            build_backbone(f"hf:{ref}")
    # a directory with a config but no weights
    d = tmp_path / "config_only"
    d.mkdir()
    (d / "config.json").write_bytes((hf_sam_dir / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="not available offline"):
        build_backbone(f"hf:{d}")


# ---------------------------------------------------------------------------------------------- CLI writes nothing
@pytest.mark.parametrize("name", BAD_FILE_NAMES)
def test_cli_segment_with_a_bad_image_writes_nothing(bad_files, name, tmp_path, capsys, monkeypatch):
    path, message = bad_files[name]
    import usam.apps.cli

    monkeypatch.setattr(usam.apps.cli.segment, "build_model", lambda args: pytest.fail("the model was built for a bad image"))
    out_dir = tmp_path / "out"
    code = main(["segment", str(path), "--box", "1", "2", "30", "40", "--out", str(out_dir / "mask.png"),
                 "--overlay", str(out_dir / "overlay.png")])
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("usam segment: error: ") and err.count("\n") == 1
    assert not out_dir.exists() or not any(out_dir.iterdir())
