"""Clinical measurements: synthetic shapes with known axes and real HC18 masks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from usam.ops.masks import ellipse_perimeter
from usam.errors import InputImageError
from usam.io import read_mask
from usam.measure import draw_measurements, head_biometry, lesion_axes

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fmc_uia_dev" / "test"


def _ellipse_mask(shape=(400, 500), centre=(250, 200), semi=(150, 90), angle=25.0):
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, centre, semi, angle, 0, 360, 1, -1)
    return m


def test_head_biometry_synthetic_ellipse_within_1_percent():
    m = _ellipse_mask()
    r = head_biometry(m, pixel_size_mm=0.2)
    assert r["ofd_mm"] == pytest.approx(300 * 0.2, rel=0.01)
    assert r["bpd_mm"] == pytest.approx(180 * 0.2, rel=0.01)
    assert r["hc_mm"] == pytest.approx(ellipse_perimeter(300, 180) * 0.2, rel=0.01)
    cx, cy, major, minor, angle = r["ellipse"]
    assert (cx, cy) == pytest.approx((250, 200), abs=0.5)
    assert angle == pytest.approx(25, abs=1)
    # axis end points: OFD along the major axis, BPD across it, both through the centre
    (a, b), (c, d) = np.array(r["ofd_endpoints"]), np.array(r["bpd_endpoints"])
    assert np.linalg.norm(a - b) == pytest.approx(major) and np.linalg.norm(c - d) == pytest.approx(minor)
    assert abs(np.dot(b - a, d - c)) < 1e-6 * major * minor
    assert (a + b) / 2 == pytest.approx([cx, cy])


def test_head_biometry_pixels_without_pixel_size():
    r = head_biometry(_ellipse_mask())
    assert r["hc_mm"] is None and r["bpd_mm"] is None and r["ofd_mm"] is None
    assert r["ofd_px"] == pytest.approx(300, rel=0.01)
    assert r["bpd_px"] == pytest.approx(180, rel=0.01)
    assert r["hc_px"] == pytest.approx(ellipse_perimeter(300, 180), rel=0.01)


def test_head_biometry_uses_largest_component_and_rejects_empty():
    m = _ellipse_mask()
    m[5:15, 5:15] = 1  # speck
    assert head_biometry(m)["ofd_px"] == pytest.approx(300, rel=0.01)
    with pytest.raises(InputImageError):
        head_biometry(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError):
        head_biometry(m, pixel_size_mm=-1)


def test_lesion_axes_rotated_ellipse():
    m = _ellipse_mask(semi=(80, 30), angle=35.0)
    r = lesion_axes(m, pixel_size_mm=0.5)
    assert r["long_px"] == pytest.approx(160, rel=0.01)
    assert r["short_px"] == pytest.approx(60, rel=0.02)
    assert r["long_mm"] == pytest.approx(r["long_px"] * 0.5)
    assert r["short_mm"] == pytest.approx(r["short_px"] * 0.5)
    (a, b), (c, d) = (np.array(r["endpoints"][k]) for k in ("long", "short"))
    assert np.linalg.norm(a - b) == pytest.approx(r["long_px"])
    assert np.linalg.norm(c - d) == pytest.approx(r["short_px"])
    # perpendicular, and the long axis runs along 35 degrees
    assert abs(np.dot((b - a) / np.linalg.norm(b - a), (d - c) / np.linalg.norm(d - c))) < 1e-9
    ang = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) % 180
    assert ang == pytest.approx(35, abs=2)


def test_lesion_axes_rectangle_largest_component_and_pixels():
    m = np.zeros((100, 120), np.uint8)
    m[20:31, 10:71] = 1  # 61 x 11 pixels: centres span 60 x 10
    m[80:83, 100:103] = 1  # smaller component, ignored
    r = lesion_axes(m)
    assert r["long_mm"] is None and r["short_mm"] is None
    assert r["long_px"] == pytest.approx(math.hypot(60, 10))  # Feret diameter = the diagonal
    assert r["area_px"] == 61 * 11
    assert 9.5 < r["short_px"] < 12  # chord across the diagonal
    single = np.zeros((20, 20), np.uint8)
    single[5, 7] = 1
    r1 = lesion_axes(single)
    assert r1["long_px"] == 0 and r1["short_px"] == 0 and r1["endpoints"]["long"] == [[7.0, 5.0], [7.0, 5.0]]
    with pytest.raises(InputImageError):
        lesion_axes(np.zeros((20, 20)))


def test_draw_measurements_returns_annotated_rgb():
    img = np.full((400, 500), 40, np.uint8)
    m = _ellipse_mask()
    for result in (head_biometry(m, 0.2), lesion_axes(m), head_biometry(m)):
        out = draw_measurements(img, result)
        assert out.shape == (400, 500, 3) and out.dtype == np.uint8
        assert (out != 40).any(axis=2).sum() > 500
    assert (img == 40).all()  # input untouched
    with pytest.raises(ValueError):
        draw_measurements(img, {"hc_mm": 1.0})


@pytest.mark.skipif(not (DEV / "csv_files" / "fetal_head.csv").is_file(), reason="dev data not available")
def test_hc18_real_masks_match_csv_within_3mm():
    with open(DEV / "csv_files" / "fetal_head.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:8]
    for r in rows:
        mask = read_mask(DEV / "csv_files" / r["mask_path"])
        res = head_biometry(mask, float(r["pixel_size_mm"]))
        assert abs(res["hc_mm"] - float(r["head_circumference_mm"])) < 3.0, r["mask_path"]
        assert res["bpd_mm"] < res["ofd_mm"]
