"""Clinical measurements from masks: fetal head biometry and lesion axes, plus a drawing helper.

- :func:`head_biometry`: ellipse fitted to the largest contour of a head mask (``cv2.fitEllipse``) ->
  head circumference (HC, Ramanujan perimeter), biparietal diameter (BPD = the ellipse's minor axis) and
  occipito-frontal diameter (OFD = major axis).
- :func:`lesion_axes`: long axis = maximum Feret diameter of the largest connected component; short
  axis = the longest chord of the component perpendicular to the long axis.
- :func:`draw_measurements`: draws either result on the image.

Lengths are distances between pixel centres. Every result has the values in pixels (``*_px``) and in
mm (``*_mm``, ``None`` when no pixel size is given). Points are ``(x, y)`` pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .challenge.metrics import ellipse_perimeter, fit_ellipse
from .errors import InputImageError
from .heads.refine import largest_component
from .io import to_rgb_uint8

__all__ = ["draw_measurements", "head_biometry", "lesion_axes"]


def _check_mask(mask: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3, 4):
        m = m[..., 0]
    if m.ndim != 2:
        raise InputImageError(f"{what} mask has shape {m.shape}: expected an (H, W) mask")
    m = m > 0
    if not m.any():
        raise InputImageError(f"{what} mask is empty (no foreground pixel): nothing to measure")
    return m


def _check_pixel_size(pixel_size_mm: float | None) -> float | None:
    if pixel_size_mm is None:
        return None
    ps = float(pixel_size_mm)
    if not math.isfinite(ps) or ps <= 0:
        raise ValueError(f"pixel_size_mm must be a positive number, got {pixel_size_mm!r}")
    return ps


def _mm(value_px: float, ps: float | None) -> float | None:
    return None if ps is None else float(value_px) * ps


def head_biometry(mask: np.ndarray, pixel_size_mm: float | None = None) -> dict:
    """Fetal head biometry from a head mask.

    Args:
      mask: ``(H, W)`` mask, foreground ``> 0`` (the largest external contour is used).
      pixel_size_mm: isotropic pixel size in mm; ``None`` -> only pixel values.

    Returns:
      ``{"kind": "head", "hc_mm", "bpd_mm", "ofd_mm", "hc_px", "bpd_px", "ofd_px",
      "ellipse": (cx, cy, major, minor, angle_deg), "ofd_endpoints": [[x, y], [x, y]],
      "bpd_endpoints": [[x, y], [x, y]], "pixel_size_mm"}``; the angle is that of the major axis from
      +x towards +y (image down), degrees.

    Raises:
      InputImageError: the mask is empty or too small to fit an ellipse (fewer than 5 contour points).
    """
    m = _check_mask(mask, "head")
    ps = _check_pixel_size(pixel_size_mm)
    e = fit_ellipse(m.astype(np.uint8))
    if e is None:
        raise InputImageError("head mask is too small to fit an ellipse (fewer than 5 contour points)")
    cx, cy, major, minor, angle = e
    t = math.radians(angle)
    d = np.array([math.cos(t), math.sin(t)])
    n = np.array([-math.sin(t), math.cos(t)])
    c = np.array([cx, cy])
    ofd = [(c - d * major / 2).tolist(), (c + d * major / 2).tolist()]
    bpd = [(c - n * minor / 2).tolist(), (c + n * minor / 2).tolist()]
    hc = ellipse_perimeter(major, minor)
    return {
        "kind": "head",
        "hc_mm": _mm(hc, ps),
        "bpd_mm": _mm(minor, ps),
        "ofd_mm": _mm(major, ps),
        "hc_px": hc,
        "bpd_px": minor,
        "ofd_px": major,
        "ellipse": (cx, cy, major, minor, angle),
        "ofd_endpoints": ofd,
        "bpd_endpoints": bpd,
        "pixel_size_mm": ps,
    }


def lesion_axes(mask: np.ndarray, pixel_size_mm: float | None = None) -> dict:
    """Long and short axes of the largest connected component (8-connected) of a lesion mask.

    The long axis is the maximum Feret diameter: the largest distance between two pixel centres of the
    component (found on its convex hull). The short axis is the longest chord of the component
    perpendicular to the long axis: pixels are binned by their position along the long axis (1-pixel
    bins) and the largest spread across it within one bin is taken.

    Args:
      mask: ``(H, W)`` mask, foreground ``> 0``.
      pixel_size_mm: isotropic pixel size in mm; ``None`` -> only pixel values.

    Returns:
      ``{"kind": "lesion", "long_mm", "short_mm", "long_px", "short_px",
      "endpoints": {"long": [[x, y], [x, y]], "short": [[x, y], [x, y]]}, "area_px", "area_mm2",
      "pixel_size_mm"}``.

    Raises:
      InputImageError: the mask is empty.
    """
    m = largest_component(_check_mask(mask, "lesion"))
    ps = _check_pixel_size(pixel_size_mm)
    ys, xs = np.nonzero(m)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    area = int(len(pts))
    if area == 1:
        p = pts[0].tolist()
        long_px, short_px, long_ends, short_ends = 0.0, 0.0, [p, p], [p, p]
    else:
        hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        if len(hull) < 2:  # pragma: no cover - degenerate
            hull = pts
        dist = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
        i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
        a, b = hull[i], hull[j]
        if (a[0], a[1]) > (b[0], b[1]):
            a, b = b, a
        long_px = float(dist[i, j])
        long_ends = [a.tolist(), b.tolist()]
        d = (b - a) / long_px
        n = np.array([-d[1], d[0]])
        rel = pts - a
        u = rel @ d
        v = rel @ n
        bins = np.round(u).astype(np.int64)
        order = np.argsort(bins, kind="stable")
        bs, vs = bins[order], v[order]
        starts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
        vmin = np.minimum.reduceat(vs, starts)
        vmax = np.maximum.reduceat(vs, starts)
        k = int(np.argmax(vmax - vmin))
        short_px = float(vmax[k] - vmin[k])
        uc = float(bs[starts[k]])
        short_ends = [(a + uc * d + vmin[k] * n).tolist(), (a + uc * d + vmax[k] * n).tolist()]
    return {
        "kind": "lesion",
        "long_mm": _mm(long_px, ps),
        "short_mm": _mm(short_px, ps),
        "long_px": long_px,
        "short_px": short_px,
        "endpoints": {"long": long_ends, "short": short_ends},
        "area_px": area,
        "area_mm2": None if ps is None else area * ps * ps,
        "pixel_size_mm": ps,
    }


def _fmt(result: dict, key: str) -> str:
    mm = result.get(f"{key}_mm")
    if mm is not None:
        return f"{mm:.1f} mm"
    return f"{float(result[f'{key}_px']):.1f} px"


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_measurements(image: np.ndarray, result: dict) -> np.ndarray:
    """Draw a :func:`head_biometry` or :func:`lesion_axes` result on an image.

    Args:
      image: ``(H, W)`` or ``(H, W, 3|4)`` image (any dtype :func:`usam.io.to_rgb_uint8` accepts).
      result: the dict returned by :func:`head_biometry` (ellipse, OFD and BPD lines, HC / BPD / OFD text)
        or :func:`lesion_axes` (long and short axis lines, their lengths).

    Returns:
      A new ``(H, W, 3)`` uint8 RGB image.
    """
    out = to_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    th = max(1, int(round(min(h, w) / 300)))
    scale = max(0.4, min(h, w) / 700)
    green, yellow, cyan = (0, 255, 0), (255, 220, 0), (0, 220, 255)
    lines: list[str] = []
    if "ellipse" in result:
        cx, cy, major, minor, angle = (float(v) for v in result["ellipse"])
        cv2.ellipse(out, ((cx, cy), (major, minor), angle), green, th, cv2.LINE_AA)
        a, b = result["ofd_endpoints"]
        cv2.line(out, _pt(a), _pt(b), yellow, th, cv2.LINE_AA)
        a, b = result["bpd_endpoints"]
        cv2.line(out, _pt(a), _pt(b), cyan, th, cv2.LINE_AA)
        lines = [f"HC {_fmt(result, 'hc')}", f"OFD {_fmt(result, 'ofd')}", f"BPD {_fmt(result, 'bpd')}"]
        colours = [green, yellow, cyan]
    elif "endpoints" in result:
        a, b = result["endpoints"]["long"]
        cv2.line(out, _pt(a), _pt(b), yellow, th, cv2.LINE_AA)
        a, b = result["endpoints"]["short"]
        cv2.line(out, _pt(a), _pt(b), cyan, th, cv2.LINE_AA)
        for p in (*result["endpoints"]["long"], *result["endpoints"]["short"]):
            cv2.circle(out, _pt(p), th + 1, (255, 0, 0), -1, cv2.LINE_AA)
        lines = [f"long {_fmt(result, 'long')}", f"short {_fmt(result, 'short')}"]
        colours = [yellow, cyan]
    else:
        raise ValueError("result must come from head_biometry (has 'ellipse') or lesion_axes (has 'endpoints')")
    y = int(20 * scale) + 4
    for text, colour in zip(lines, colours):
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)
        y += int(26 * scale) + 4
    return out
