"""Clinical measurements from masks: fetal head biometry and lesion axes, plus a drawing helper.

- :func:`head_biometry`: ellipse fitted to the largest contour of a head mask (``cv2.fitEllipse``) ->
  head circumference (HC, Ramanujan perimeter), biparietal diameter (BPD = the ellipse's minor axis) and
  occipito-frontal diameter (OFD = major axis).
- :func:`lesion_axes`: long axis = maximum Feret diameter of the largest connected component; short
  axis = the longest chord of the component perpendicular to the long axis.
- :func:`draw_measurements`: draws either result on the image.

Lengths are distances between pixel centres. Every result has the values in pixels (``*_px``) and in
mm (``*_mm``, ``None`` when no pixel size is given). Points are ``(x, y)`` pixels.

No measurement without a confident mask (:func:`check_confident`, applied by ``usam measure`` through
:func:`refuse_unconfident`): a mask is measured only when it has at least :data:`MIN_MASK_PIXELS` pixels and the
model's confidence in it (the mean probability over its pixels, :attr:`usam.heads.Prediction.confidence`) is at
least :data:`MIN_CONFIDENCE`. Otherwise the measurement is refused with the reason, never reported.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import InputImageError
from .io import to_rgb_uint8, write_text_atomic
from .ops.masks import ellipse_axis_ends, ellipse_perimeter, fit_ellipse, largest_component
from .ops.overlay import BOX_RGB, KEYPOINT_RGB, NEGATIVE_RGB, POSITIVE_RGB
from .tasks.segmentation import head_class

__all__ = ["MIN_CONFIDENCE", "MIN_MASK_PIXELS", "check_confident", "draw_measurements", "head_biometry",
           "lesion_axes", "refuse_unconfident"]

#: Fewest mask pixels measured (about 10 x 10): a smaller mask is a speck, not a head or a lesion.
MIN_MASK_PIXELS = 100
#: Lowest model confidence measured: the mean foreground probability over the mask's pixels. On the dev data the
#: fetal_head adapter scores real HC18 heads 0.955-0.986 and a blank (all-black, all-white) image 0.907.
MIN_CONFIDENCE = 0.93


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
    ofd, bpd = ellipse_axis_ends(e)
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


def check_confident(mask: np.ndarray, confidence: float | None = None, what: str = "mask") -> np.ndarray:
    """The rule for measuring a model's mask: refuse unless it is confident.

    Args:
      mask: ``(H, W)`` mask, foreground ``> 0``.
      confidence: the model's mean probability over the mask's pixels (``None``: unknown, not checked).
      what: what the mask shows, for the message ("head", "lesion").

    Returns:
      The boolean mask.

    Raises:
      InputImageError: the mask is empty, has fewer than :data:`MIN_MASK_PIXELS` pixels, or ``confidence`` is
        below :data:`MIN_CONFIDENCE`.
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3, 4):
        m = m[..., 0]
    m = m > 0
    n = int(m.sum())
    if n == 0:
        raise InputImageError(f"no {what} found (empty mask): nothing to measure")
    if n < MIN_MASK_PIXELS:
        raise InputImageError(f"no {what} found: the mask has {n} pixels, fewer than {MIN_MASK_PIXELS}")
    if confidence is not None and not float(confidence) >= MIN_CONFIDENCE:
        raise InputImageError(
            f"the model is not confident of the {what} mask (mean probability {float(confidence):.3f}, below "
            f"{MIN_CONFIDENCE}): not measured; is this an image of a {what}?"
        )
    return m


def measured_class(spec, kind: str) -> int | None:
    """The class ``usam measure`` measures as a ``kind`` (``"head"`` or ``"lesion"``) in a segmentation task
    (``None``: every foreground class): the head class (:func:`usam.tasks.segmentation.head_class`), or class 1
    of a binary task."""
    if kind == "head":
        return head_class(spec)
    return 1 if spec.num_classes == 2 else None


def refuse_unconfident(adapter, pred, results: list[dict]) -> list[dict]:
    """Apply :func:`check_confident` to measurements of one :class:`~usam.heads.Prediction`.

    ``results`` are ``usam measure``'s per-task measurements (``{"task_id", "kind", ...}``). A head / lesion
    measurement whose mask fails the rule becomes ``{"task_id", "kind", "error"}``; so does a 4-point measurement
    read from such a mask (head option ``ellipse_from``). Returns the new list.
    """
    refused: dict[str, str] = {}
    out = []
    for r in results:
        tid, kind = r.get("task_id"), r.get("kind")
        spec = adapter.tasks.get(tid)
        if kind in ("head", "lesion") and "error" not in r and spec is not None and tid in pred.masks:
            labels = np.asarray(pred.masks[tid])
            cls = measured_class(spec, kind)
            mask = labels == cls if cls is not None else labels > 0
            conf = getattr(pred, "confidence", {}).get(tid)
            value = None
            if conf is not None:
                conf = np.asarray(conf, dtype=np.float64)
                value = float(conf[cls - 1]) if cls is not None else float(conf[conf > 0].mean()) if (conf > 0).any() else 0.0
            try:
                check_confident(mask, value, kind)
            except InputImageError as exc:
                refused[tid] = str(exc)
                out.append({"task_id": tid, "kind": kind, "error": str(exc)})
                continue
        out.append(r)
    final = []
    for r in out:
        source = adapter.config.head_options.get(r.get("task_id"), {}).get("ellipse_from")
        if r.get("kind") == "points" and source in refused:
            r = {"task_id": r["task_id"], "kind": "points",
                 "error": f"not measured: its points come from the {source} mask, which is refused"}
        final.append(r)
    return final


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
    green, yellow, cyan = POSITIVE_RGB, BOX_RGB, KEYPOINT_RGB
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
            cv2.circle(out, _pt(p), th + 1, NEGATIVE_RGB, -1, cv2.LINE_AA)
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


#: Columns of the per-frame measurement CSV (:func:`loop_measurements`, ``usam track``).
LOOP_COLUMNS = ("frame", "tracked", "lost", "confidence", "predicted_iou", "area_px", "major_axis_px", "minor_axis_px",
                "circumference_px", "area_mm2", "major_axis_mm", "minor_axis_mm", "circumference_mm")


def loop_measurements(result, pixel_size_mm: float | None = None) -> list[dict]:
    """One row per frame of a tracked loop (:class:`usam.tracker.TrackResult`): the tracker's confidence and lost flag,
    the mask's area and the ellipse fitted to its largest contour (major / minor axis and circumference, the latter is
    the HC of a fetal head: the same ellipse as :func:`head_biometry`). Lengths and areas in mm when ``pixel_size_mm``
    is given, else ``None`` there. A frame with an empty (or too small) mask has zero area and ``None`` axes."""
    ps = _check_pixel_size(pixel_size_mm)
    rows = []
    for t, mask in enumerate(result.masks):
        area = int(np.count_nonzero(mask))
        e = head_biometry(mask, ps) if area and fit_ellipse(np.asarray(mask, np.uint8)) is not None else None
        rows.append({
            "frame": t, "tracked": bool(result.tracked[t]), "lost": bool(result.lost[t]),
            "confidence": float(result.confidence[t]), "predicted_iou": float(result.scores[t]), "area_px": area,
            "major_axis_px": e["ofd_px"] if e else None, "minor_axis_px": e["bpd_px"] if e else None,
            "circumference_px": e["hc_px"] if e else None,
            "area_mm2": area * ps * ps if ps else None, "major_axis_mm": e["ofd_mm"] if e else None,
            "minor_axis_mm": e["bpd_mm"] if e else None, "circumference_mm": e["hc_mm"] if e else None,
        })
    return rows


def write_measurements_csv(path, rows: list[dict]) -> None:
    """Write :func:`loop_measurements` rows as CSV (atomically): empty cells where a value is ``None`` / NaN."""
    def cell(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    lines = [",".join(LOOP_COLUMNS), *(",".join(cell(r[c]) for c in LOOP_COLUMNS) for r in rows)]
    write_text_atomic(path, "\n".join(lines) + "\n")
