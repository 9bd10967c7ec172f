"""Loops in (issue #17): DICOM (pydicom) and video (PyAV) files and folders of frames, read back from the real
cine_carotid frames wrapped in files written here; pixel spacing and frame rate from tags; every bad input refused
with one line naming the file. Files are written under ``tmp_path``; the data stays in ../shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from usam.errors import InputImageError

pydicom = pytest.importorskip("pydicom")

#: ../shared/data/cine_carotid seen from the repository root (see ../shared/data/README.md).
CINE_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cine_carotid"
SEQUENCE = "202201121748100022VAS"
N_FRAMES = 8

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def frame_paths() -> list[Path]:
    folder = CINE_ROOT / SEQUENCE / "frames"
    if not (folder / "0000.png").is_file():
        pytest.skip(f"real cine_carotid data not found at {CINE_ROOT} (expected ../shared/data/cine_carotid beside the repo)")
    return sorted(folder.glob("*.png"))[:N_FRAMES]


@pytest.fixture(scope="module")
def grey(frame_paths) -> np.ndarray:
    """The first frames as ``(N, H, W)`` uint8 (the PNGs are 8-bit grey, so R = G = B)."""
    from usam.io import read_image

    frames = np.stack([read_image(p) for p in frame_paths])
    assert (frames[..., 0] == frames[..., 2]).all()
    return frames[..., 0]


def _rgb(grey: np.ndarray) -> np.ndarray:
    """Three different channels built from the real frames, so a channel swap or colour conversion shows."""
    return np.stack([grey, 255 - grey, np.roll(grey, 7, axis=-1)], axis=-1)


def _dataset(arr: np.ndarray, photometric: str, bits: int, **tags):
    """An ultrasound DICOM dataset holding ``arr`` (``(N, H, W[, 3])`` multi-frame or ``(H, W[, 3])``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    multi = arr.ndim == (4 if photometric not in ("MONOCHROME1", "MONOCHROME2") else 3)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.PatientName = "Test^Carotid"
    ds.set_pixel_data(arr, photometric_interpretation=photometric, bits_stored=bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def _region(x0, y0, x1, y1, delta_cm, units=3):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat = 1
    r.RegionDataType = 1
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x0, y0, x1, y1
    r.PhysicalUnitsXDirection = units
    r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = delta_cm
    return r


def _save(ds, path: Path, preamble: bool = True) -> Path:
    ds.save_as(path, enforce_file_format=preamble)
    return path


@pytest.fixture(scope="module")
def cine_dcm(grey, tmp_path_factory) -> Path:
    """The first frames as a multi-frame ultrasound DICOM: 0.01 cm (0.1 mm) tissue region, 25 fps."""
    h, w = grey.shape[1:]
    doppler = _region(10, 10, 60, 40, (0.5, 0.5), units=7)  # cm/s: not a length, never used for spacing
    tissue = _region(0, 0, w - 1, h - 1, (0.01, 0.01))
    ds = _dataset(grey, "MONOCHROME2", 8, SequenceOfUltrasoundRegions=[doppler, tissue], FrameTime=40.0)
    return _save(ds, tmp_path_factory.mktemp("dicom") / "cine.dcm")


# ------------------------------------------------------------------------------------------------------------ DICOM
def test_multiframe_dicom_reads_back_exactly_with_spacing_and_fps(cine_dcm, grey):
    import usam
    from usam.io import Frames, read_spacing

    loop = usam.read_frames(cine_dcm)
    assert isinstance(loop, Frames) and len(loop) == N_FRAMES
    assert loop.frames.shape == (N_FRAMES, *grey.shape[1:], 3) and loop.frames.dtype == np.uint8
    assert np.array_equal(loop.frames[..., 0], grey) and np.array_equal(loop.frames[..., 1], grey)
    assert loop.spacing_mm == pytest.approx((0.1, 0.1))
    assert loop.pixel_size_mm == pytest.approx(0.1)
    assert loop.fps == pytest.approx(25.0)
    assert loop.source == str(cine_dcm)
    assert read_spacing(cine_dcm) == pytest.approx((0.1, 0.1))


def test_read_image_picks_one_frame_of_a_multiframe_dicom(cine_dcm, grey):
    import usam

    assert np.array_equal(usam.read_image(cine_dcm, frame=3)[..., 0], grey[3])
    with pytest.raises(InputImageError, match=rf"cine\.dcm.*holds {N_FRAMES} frames.*frame=K"):
        usam.read_image(cine_dcm)
    with pytest.raises(InputImageError, match=rf"frame {N_FRAMES} is out of range.*cine\.dcm.*holds {N_FRAMES} frames"):
        usam.read_image(cine_dcm, frame=N_FRAMES)
    with pytest.raises(InputImageError, match="out of range"):
        usam.read_image(cine_dcm, frame=-1)


def test_single_frame_dicom_with_pixel_spacing_reads_like_the_png(grey, tmp_path):
    import usam
    from usam.io import read_spacing

    ds = _dataset(grey[0], "MONOCHROME2", 8, PixelSpacing=[0.2, 0.3])  # (row, column) = (y, x)
    path = _save(ds, tmp_path / "still.dcm")
    image = usam.read_image(path)
    assert image.shape == (*grey.shape[1:], 3) and np.array_equal(image[..., 0], grey[0])
    assert np.array_equal(usam.read_image(path, frame=0), image)
    loop = usam.read_frames(path)
    assert len(loop) == 1 and loop.spacing_mm == pytest.approx((0.3, 0.2)) and loop.fps is None
    assert read_spacing(path) == pytest.approx((0.3, 0.2))
    with pytest.raises(ValueError, match="not square"):
        _ = loop.pixel_size_mm
    with pytest.raises(InputImageError, match=r"frame 1 is out of range.*holds 1 frame \(0\.\.0\)"):
        usam.read_image(path, frame=1)


def test_spacing_fallbacks_and_region_choice(grey, frame_paths, tmp_path):
    from usam.io import read_spacing

    h, w = grey.shape[1:]
    imager = _save(_dataset(grey[0], "MONOCHROME2", 8, ImagerPixelSpacing=[0.25, 0.25]), tmp_path / "imager.dcm")
    assert read_spacing(imager) == pytest.approx((0.25, 0.25))
    bare = _save(_dataset(grey[0], "MONOCHROME2", 8), tmp_path / "bare.dcm")
    assert read_spacing(bare) is None
    # The region holding the image centre wins over a larger one beside it; regions trump PixelSpacing.
    side = _region(0, 0, w // 3, h - 1, (0.05, 0.05))
    centre = _region(w // 3, h // 4, 2 * w // 3, 3 * h // 4, (0.012, 0.015))
    both = _dataset(grey[0], "MONOCHROME2", 8, SequenceOfUltrasoundRegions=[side, centre], PixelSpacing=[1.0, 1.0])
    assert read_spacing(_save(both, tmp_path / "regions.dcm")) == pytest.approx((0.12, 0.15))
    assert read_spacing(frame_paths[0]) is None  # a PNG records no spacing here


def test_rgb_and_ybr_dicoms_read_as_rgb(grey, tmp_path):
    from pydicom.pixels import convert_color_space

    import usam

    rgb = _rgb(grey[:3])
    path = _save(_dataset(rgb, "RGB", 8), tmp_path / "rgb.dcm")
    assert np.array_equal(usam.read_frames(path).frames, rgb)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    path = _save(_dataset(ybr, "YBR_FULL", 8), tmp_path / "ybr.dcm")
    back = usam.read_frames(path).frames
    assert back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb).max() <= 2  # YCbCr round trip rounds


def test_monochrome1_is_inverted(grey, tmp_path):
    import usam

    path = _save(_dataset(255 - grey[:2], "MONOCHROME1", 8), tmp_path / "mono1.dcm")
    assert np.array_equal(usam.read_frames(path).frames[..., 0], grey[:2])


def test_16_bit_dicoms_window_or_min_max_to_uint8(grey, tmp_path):
    import usam

    wide = grey[:4].astype(np.uint16) * 16 + 100  # 12-bit values, no window: one min-max over the loop
    path = _save(_dataset(wide, "MONOCHROME2", 12), tmp_path / "u12.dcm")
    lo, hi = float(wide.min()), float(wide.max())
    expected = np.round((wide - lo) / (hi - lo) * 255.0)
    loop = usam.read_frames(path)
    assert np.abs(loop.frames[..., 0].astype(int) - expected).max() <= 1
    assert np.array_equal(usam.read_image(path, frame=2), loop.frames[2])  # one scale for every frame
    # A window (centre / width) maps 0..4095 stored values onto the display range.
    full = grey[:2].astype(np.uint16) * 16
    path = _save(_dataset(full, "MONOCHROME2", 16, WindowCenter=2048.0, WindowWidth=4096.0), tmp_path / "win.dcm")
    out = usam.read_frames(path).frames[..., 0].astype(int)
    assert np.abs(out - np.round(full / 4096.0 * 255.0)).max() <= 1


def test_compressed_dicoms_decode(grey, tmp_path):
    from pydicom.uid import JPEG2000Lossless, RLELossless

    import usam

    ds = _dataset(grey.copy(), "MONOCHROME2", 8, FrameTime=50.0)
    ds.compress(RLELossless)
    path = _save(ds, tmp_path / "rle.dcm")
    loop = usam.read_frames(path)
    assert np.array_equal(loop.frames[..., 0], grey) and loop.fps == pytest.approx(20.0)
    ds = _dataset(grey[:2].copy(), "MONOCHROME2", 8)
    ds.compress(JPEG2000Lossless)
    path = _save(ds, tmp_path / "j2k.dcm")
    assert np.array_equal(usam.read_frames(path).frames[..., 0], grey[:2])


def test_jpeg_baseline_dicom_decodes(grey, tmp_path):
    """JPEG baseline (the usual compressed ultrasound DICOM): decoded by pylibjpeg-libjpeg, close to the frame."""
    import cv2
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    import usam

    frames = grey[:2]
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames]
    ds = _dataset(frames, "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(jpegs)
    ds["PixelData"].VR = "OB"
    path = _save(ds, tmp_path / "jpeg.dcm")
    back = usam.read_frames(path).frames[..., 0].astype(int)
    assert back.shape == frames.shape and np.abs(back - frames).mean() < 2.0


def test_dicom_detected_by_content_without_suffix(cine_dcm, grey, tmp_path):
    import usam

    plain = tmp_path / "IM0001"
    shutil.copy(cine_dcm, plain)
    assert np.array_equal(usam.read_frames(plain).frames[..., 0], grey)
    assert np.array_equal(usam.read_image(plain, frame=1)[..., 0], grey[1])
    # Written without the 128-byte preamble but named .dcm: still DICOM.
    raw = _save(_dataset(grey[0], "MONOCHROME2", 8), tmp_path / "raw.dcm", preamble=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert np.array_equal(usam.read_image(raw)[..., 0], grey[0])


# ---------------------------------------------------------------------------------------------------------- bad DICOM
def test_bad_dicoms_are_refused_naming_the_file(cine_dcm, grey, frame_paths, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    import usam

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, generate_uid(), "US"
    nopix = _save(ds, tmp_path / "nopix.dcm")
    for read in (usam.read_frames, usam.read_image):
        with pytest.raises(InputImageError, match=r"nopix\.dcm.*has no pixel data"):
            read(nopix)

    truncated = tmp_path / "truncated.dcm"
    data = cine_dcm.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match=r"truncated\.dcm' is truncated or corrupt: its pixel data holds \d+ of the \d+ bytes"):
        usam.read_frames(truncated)
    with pytest.raises(InputImageError, match=r"truncated\.dcm"):
        usam.read_image(truncated, frame=0)

    header_only = tmp_path / "header.dcm"
    header_only.write_bytes(data[:200])
    with pytest.raises(InputImageError, match=r"header\.dcm"):
        usam.read_frames(header_only)

    fake = tmp_path / "fake.dcm"
    shutil.copy(frame_paths[0], fake)  # a PNG named .dcm
    for read in (usam.read_frames, usam.read_image):
        with pytest.raises(InputImageError, match=r"fake\.dcm.*not a DICOM"):
            read(fake)
    mpeg = _dataset(grey[:1].copy(), "MONOCHROME2", 8)
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile
    mpeg.PixelData = encapsulate([b"\x00\x00\x00\x01" + b"\x00" * 64])
    mpeg["PixelData"].VR = "OB"
    with pytest.raises(InputImageError, match=r"h264\.dcm.*H\.264.*video.*export the loop as MP4"):
        usam.read_frames(_save(mpeg, tmp_path / "h264.dcm"))

    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(InputImageError, match=r"empty\.dcm.*empty"):
        usam.read_frames(empty)


def test_undecodable_transfer_syntax_says_what_to_install(grey, tmp_path, monkeypatch):
    from pydicom.uid import JPEG2000Lossless

    import usam

    ds = _dataset(grey[:1].copy(), "MONOCHROME2", 8)
    ds.compress(JPEG2000Lossless)
    path = _save(ds, tmp_path / "j2k.dcm")
    # Simulate a machine without pylibjpeg-openjpeg (and gdcm): no JPEG 2000 decoder plugin is available.
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    monkeypatch.setattr(JPEG2000LosslessDecoder, "_available", {})
    with pytest.raises(InputImageError, match=r"j2k\.dcm.*JPEG 2000.*pip install .*pylibjpeg-openjpeg"):
        usam.read_frames(path)


# ------------------------------------------------------------------------------------------------------------ video
@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_round_trip(grey, tmp_path, suffix):
    import usam
    from usam.io import read_video, write_video

    rgb = np.repeat(grey[..., None], 3, axis=-1)
    path = write_video(tmp_path / f"loop{suffix}", rgb, fps=12.5)
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    loop = usam.read_frames(path)
    h, w = grey.shape[1:]
    assert len(loop) == N_FRAMES and loop.fps == pytest.approx(12.5, rel=1e-3) and loop.spacing_mm is None
    assert loop.frames.shape == (N_FRAMES, h + h % 2, w + w % 2, 3)  # odd sides padded by one row / column
    diff = np.abs(loop.frames[:, :h, :w].astype(int) - rgb)
    assert diff.mean() < 3.0, diff.mean()
    assert np.array_equal(read_video(path).frames, loop.frames)
    one = usam.read_image(path, frame=5)
    assert np.array_equal(one, loop.frames[5])
    with pytest.raises(InputImageError, match=rf"loop\{suffix}.*holds {N_FRAMES} frames"):
        usam.read_image(path)
    with pytest.raises(InputImageError, match=rf"frame 99 is out of range.*holds {N_FRAMES} frames"):
        usam.read_image(path, frame=99)


def test_write_video_refuses_bad_output(grey, tmp_path):
    from usam.errors import OutputError
    from usam.io import write_video

    with pytest.raises(OutputError, match=r"\.gifv"):
        write_video(tmp_path / "x.gifv", grey[:2], fps=10)
    with pytest.raises(OutputError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], fps=10)
    with pytest.raises(OutputError, match="fps"):
        write_video(tmp_path / "x.mp4", grey[:2], fps=0)
    with pytest.raises(OutputError, match="one size"):
        write_video(tmp_path / "x.mp4", [grey[0], grey[1][:100, :100]], fps=10)
    assert not list(tmp_path.iterdir())


def test_corrupt_videos_are_refused(grey, tmp_path):
    import usam
    from usam.io import write_video

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(InputImageError, match=r"junk\.mp4"):
        usam.read_frames(junk)
    good = write_video(tmp_path / "good.mp4", grey, fps=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputImageError, match=r"cut\.mp4.*(corrupt|truncated)"):
        usam.read_frames(cut)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(InputImageError, match=r"empty\.avi.*empty"):
        usam.read_frames(empty)


# ----------------------------------------------------------------------------------------------------------- folders
def test_folder_of_frames_in_natural_order(frame_paths, grey, tmp_path):
    import usam

    folder = tmp_path / "frames"
    folder.mkdir()
    names = ["frame1.png", "frame2.png", "frame10.png", "frame3.png"]  # natural order 1, 2, 3, 10
    order = [0, 1, 3, 2]
    for name, src in zip(names, frame_paths):
        shutil.copy(src, folder / name)
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    loop = usam.read_frames(folder)
    assert len(loop) == 4 and loop.fps is None and loop.spacing_mm is None
    expected = [grey[0], grey[1], grey[3], grey[2]]  # frame1, frame2, frame3, frame10
    assert order and all(np.array_equal(f[..., 0], e) for f, e in zip(loop.frames, expected))
    # The real sequence folder itself reads in name order too.
    real = usam.read_frames(frame_paths[0].parent)
    assert np.array_equal(real.frames[:N_FRAMES, ..., 0], grey)


def test_bad_folders_are_refused(frame_paths, tmp_path):
    import cv2

    import usam

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(InputImageError, match=r"empty.*holds no image files"):
        usam.read_frames(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(frame_paths[0], mixed / "0.png")
    small = cv2.imread(str(frame_paths[1]))[:100, :100]
    cv2.imwrite(str(mixed / "1.png"), small)
    with pytest.raises(InputImageError, match=r"1\.png.*one size"):
        usam.read_frames(mixed)
    with pytest.raises(InputImageError, match=r"nowhere.*does not exist"):
        usam.read_frames(tmp_path / "nowhere")


def test_a_still_image_is_a_loop_of_one(frame_paths, grey):
    import usam

    loop = usam.read_frames(frame_paths[0])
    assert len(loop) == 1 and np.array_equal(loop.frames[0, ..., 0], grey[0])
    assert np.array_equal(usam.read_image(frame_paths[0], frame=0)[..., 0], grey[0])
    with pytest.raises(InputImageError, match="out of range"):
        usam.read_image(frame_paths[0], frame=1)


# ------------------------------------------------------------------------------------------- usam measure (mm from tags)
HC18_ROW = ("Segmentation/Two/HC18/images/136_HC.png", 0.072571385, 100.83)  # test split: image, mm per px, HC mm


def test_measure_takes_the_pixel_size_from_dicom_tags(data_root, tmp_path, capsys, monkeypatch, litemedsam_model):
    """A real HC18 head wrapped in DICOMs: mm from the ultrasound region (no --pixel-size), pixels (and a note
    saying so) when the file records no spacing, and a multi-frame file needs --frame."""
    import json

    import usam
    import usam.apps.cli.challenge as challenge
    from usam import UsamModel
    from usam.apps.cli import main

    monkeypatch.setattr(challenge, "build_model", lambda args, adapters=(): UsamModel(litemedsam_model.backbone))
    rel, pixel_size, hc_mm = HC18_ROW
    head = usam.read_image(data_root / "test" / rel)[..., 0]
    h, w = head.shape
    adapter = str(Path(__file__).resolve().parents[1] / "adapters" / "fetal_head")
    region = _region(0, 0, w - 1, h - 1, (pixel_size / 10.0, pixel_size / 10.0))
    tagged = _save(_dataset(np.stack([np.zeros_like(head), head]), "MONOCHROME2", 8, SequenceOfUltrasoundRegions=[region]),
                   tmp_path / "hc.dcm")

    def measure(*argv) -> tuple[int, dict | str]:
        rc = main(["measure", *map(str, argv), "--adapter", adapter, "--json"])
        captured = capsys.readouterr()
        return rc, (json.loads(captured.out) if rc == 0 else captured.err)

    rc, doc = measure(tagged, "--frame", 1)
    assert rc == 0, doc
    assert doc["pixel_size_source"] == "DICOM tags" and doc["units"] == "mm"
    assert doc["pixel_size_mm"] == pytest.approx(pixel_size)
    fetal = next(m for m in doc["measurements"] if m["task_id"] == "fetal_head")
    assert abs(fetal["hc_mm"] - hc_mm) < 5.0, fetal

    rc, err = measure(tagged)
    assert rc == 3 and "hc.dcm" in err and "holds 2 frames" in err
    rc, err = measure(tagged, "--frame", 2)
    assert rc == 3 and "frame 2 is out of range" in err and "holds 2 frames" in err

    bare = _save(_dataset(head, "MONOCHROME2", 8), tmp_path / "bare.dcm")
    rc, doc = measure(bare)
    assert rc == 0, doc
    assert doc["units"] == "px" and doc["pixel_size_mm"] is None and "measurements are in pixels" in doc["note"]
    fetal = next(m for m in doc["measurements"] if m["task_id"] == "fetal_head")
    assert fetal["hc_mm"] is None and abs(fetal["hc_px"] * pixel_size - hc_mm) < 5.0
    rc = main(["measure", str(bare), "--adapter", adapter])
    assert rc == 0 and "measurements are in pixels" in capsys.readouterr().out
