"""``usam track`` (issue #17): a real carotid loop wrapped in a multi-frame ultrasound DICOM (pixel spacing in its
tags) and in a folder of frames; one click on frame 0; masks, overlay video, per-frame CSV in mm, track.json; the
output folder replaced only when it is an earlier track output; bad loops / prompts / folders refused before work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import usam.apps.cli.track
from usam.apps.cli import main
from usam.io import read_frames, read_image, read_mask
from usam.ops.clicks import innermost_point
from usam.ops.masks import dice

pydicom = pytest.importorskip("pydicom")

CINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cine_carotid" / "202201121819140033VAS"
N = 4
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def loop():
    """The first frames ``(N, H, W)`` uint8 and their expert masks ``(N, H, W)`` bool."""
    if not (CINE / "frames" / "0000.png").is_file():
        pytest.skip(f"real cine_carotid data not found at {CINE}")
    names = [f"{t:04d}.png" for t in range(N)]
    frames = np.stack([read_image(CINE / "frames" / n)[..., 0] for n in names])
    truth = np.stack([read_mask(CINE / "masks" / n) > 0 for n in names])
    return frames, truth


def _ultrasound_dicom(frames: np.ndarray, path: Path, delta_cm: float) -> Path:
    """A multi-frame ultrasound DICOM with one tissue region of ``delta_cm`` cm per pixel."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = frames.shape[2] - 1, frames.shape[1] - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = delta_cm
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundMultiFrameImageStorage, generate_uid(), "US"
    ds.set_pixel_data(frames, photometric_interpretation="MONOCHROME2", bits_stored=8)
    ds.SequenceOfUltrasoundRegions = [region]
    ds.FrameTime = 50.0
    ds.save_as(path, enforce_file_format=True)
    return path


def _click(truth: np.ndarray) -> list[str]:
    x, y = innermost_point(truth.astype(np.uint8))
    return ["--point", f"{x:.1f}", f"{y:.1f}"]


def test_track_a_dicom_loop_writes_masks_video_and_csv_in_mm(loop, tmp_path, monkeypatch, capsys, litemedsam_model):
    frames, truth = loop
    dcm = _ultrasound_dicom(frames, tmp_path / "carotid.dcm", delta_cm=0.01)
    monkeypatch.setattr(usam.apps.cli.track, "build_model", lambda args: litemedsam_model)
    out = tmp_path / "track"
    assert main(["track", str(dcm), *_click(truth[0]), "--out", str(out), "--quiet"]) == 0
    assert "measurements in mm (pixel size 0.1 mm from tags)" in capsys.readouterr().err
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.name for m in masks] == [f"{t:04d}.png" for t in range(N)]
    scores = [dice(read_mask(m) > 0, truth[t]) for t, m in enumerate(masks)]
    assert min(scores) > 0.6, scores  # bare backbone, one click on frame 0 (measured 0.8-0.9)
    video = read_frames(out / "overlay.mp4")
    assert len(video) == N and video.fps == pytest.approx(20.0)
    rows = (out / "measurements.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == N + 1 and header[:4] == ["frame", "tracked", "lost", "confidence"]
    for t, line in enumerate(rows[1:]):
        r = dict(zip(header, line.split(",")))
        assert int(r["frame"]) == t and int(r["area_px"]) == int((read_mask(masks[t]) > 0).sum())
        assert float(r["area_mm2"]) == pytest.approx(int(r["area_px"]) * 0.01, rel=1e-5)
        assert float(r["circumference_mm"]) == pytest.approx(float(r["circumference_px"]) * 0.1, rel=1e-4)
        assert 0 <= float(r["confidence"]) <= 1
    import json

    summary = json.loads((out / "track.json").read_text())
    assert summary["pixel_size_from"] == "tags" and summary["frames"] == N and summary["tracked_frames"] == N

    # an earlier track output is replaced as a whole (embeddings are cached: no encoder work the second time)
    assert main(["track", str(dcm), *_click(truth[0]), "--out", str(out), "--quiet", "--no-video", "--pixel-size", "0.2"]) == 0
    assert not (out / "overlay.mp4").exists() and len(list((out / "masks").glob("*.png"))) == N
    assert json.loads((out / "track.json").read_text())["pixel_size_from"] == "--pixel-size"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_track_a_folder_backwards_from_the_last_frame(loop, tmp_path, monkeypatch, litemedsam_model):
    frames, truth = loop
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(N):  # names that sort differently as text and as numbers
        (folder / f"f{t * 5}.png").write_bytes((CINE / "frames" / f"{t:04d}.png").read_bytes())
    monkeypatch.setattr(usam.apps.cli.track, "build_model", lambda args: litemedsam_model)
    out = tmp_path / "out"
    args = ["track", str(folder), "--frame", str(N - 1), *_click(truth[N - 1]), "--direction", "backward"]
    assert main([*args, "--out", str(out), "--quiet", "--no-video"]) == 0
    scores = [dice(read_mask(out / "masks" / f"{t:04d}.png") > 0, truth[t]) for t in range(N)]
    assert min(scores) > 0.6, scores
    import json

    assert json.loads((out / "track.json").read_text())["pixel_size_from"] == "none"


@pytest.mark.parametrize("case, code, message", [
    ("foreign folder", 2, "is a folder with files usam track did not write \\(notes.txt\\)"),
    ("a track.json of anything", 2, "usam track did not write \\(notes.txt\\)"),
    ("an earlier output plus a file", 2, "usam track did not write \\(notes.txt\\)"),
    ("the loop inside out", 2, "holds the loop .*carotid.dcm"),
    ("unwritable place", 2, "cannot be written: folder '/proc' is not writable"),
    ("under a file", 2, "cannot be written: .*afile' is a file, not a folder"),
    ("file as out", 2, "is a file: give a folder"),
    ("frame out of range", 3, "--frame 9 is out of range: .* has 4 frame\\(s\\), numbered 0-3"),
    ("no prompt", 4, "give a prompt for --frame"),
    ("auto with a click", 4, "--auto stands alone"),
    ("not a dicom", 3, "carotid.dcm"),
    ("missing loop", 3, "does not exist"),
])
def test_track_refuses_bad_input_before_any_work(loop, tmp_path, monkeypatch, capsys, case, code, message):
    import re

    frames, _ = loop
    dcm = _ultrasound_dicom(frames, tmp_path / "carotid.dcm", delta_cm=0.01)
    monkeypatch.setattr(usam.apps.cli.track, "build_model", lambda args: pytest.fail("a model was built"))
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "notes.txt"
    if case in ("foreign folder", "a track.json of anything", "an earlier output plus a file"):
        keep.write_text("mine")
    if case == "a track.json of anything":  # any file of that name once made the folder deletable
        (out / "track.json").write_text("{}")
    if case == "an earlier output plus a file":
        (out / "track.json").write_text('{"usam": "track"}')
        (out / "masks").mkdir()
        (out / "masks" / "0000.png").write_bytes(b"png")
    if case == "the loop inside out":  # an earlier output that holds the loop itself
        (out / "track.json").write_text('{"usam": "track"}')
        dcm = dcm.rename(out / "carotid.dcm")
    if case == "file as out":
        out.rmdir()
        out.write_text("mine")
    if case == "not a dicom":
        dcm.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    loop_arg = str(tmp_path / "nope.mp4") if case == "missing loop" else str(dcm)
    args = {"frame out of range": ["--frame", "9", "--point", "5", "5"], "no prompt": [],
            "auto with a click": ["--auto", "--point", "5", "5"]}.get(case, ["--point", "5", "5"])
    if case == "the loop inside out":
        loop_arg = str(dcm)
    target = {"unwritable place": "/proc/usam_track_out", "under a file": str(tmp_path / "afile" / "out")}.get(case, str(out))
    (tmp_path / "afile").write_text("keep")
    before = {str(f): f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    assert main(["track", loop_arg, *args, "--out", target, "--quiet"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    if case == "foreign folder":
        assert keep.read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    if case == "file as out":
        assert out.read_text() == "mine"
    assert {str(f): f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before, "a file was changed"
