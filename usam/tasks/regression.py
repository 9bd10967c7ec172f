"""Regression (keypoints): ``N`` landmarks per image, scored by mean radial error.

CSV: ``point_1_xy ... point_N_xy`` (JSON ``[x, y]`` pixels, ``N = num_classes``; the CSV's ``task_name`` is
``Regression``). Head: :class:`~usam.heads.spatial.KeypointHead`. Target: the points in model-input pixels.
Loss: mean Euclidean distance (:func:`keypoint_loss`). Output: ``regression_predictions.json`` entries
``{"predicted_points_normalized", "predicted_points_pixels"}`` (``[x1, y1, x2, y2, ...]``; normalised =
pixels / (W, H)). Four points with ``head_circumference_mm`` are fetal-head biometry (OFD ends, then BPD ends:
:func:`usam.ops.masks.points_biometry`).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from ..heads.spatial import KeypointHead
from ..ops import metrics as M
from ..ops.masks import points_biometry
from .cells import finite, mean, numbers, parse_point
from .kind import PredictionSource, RowCheck, Target, TaskKind

__all__ = ["POINT_MARGIN_FRAC", "REGRESSION", "Regression", "keypoint_loss"]

#: With ``check_geometry``, points may lie this fraction of the image's longer side outside it: points
#: derived from an ellipse cut by the image border (HC18) legitimately fall just outside.
POINT_MARGIN_FRAC = 0.05

_POINT_COLUMN = re.compile(r"^point_(\d+)_xy$")


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, size: float) -> torch.Tensor:
    """Mean Euclidean distance between ``(B, N, 2)`` points, normalised by ``size``."""
    return ((pred - target) / size).norm(dim=-1).mean()


class Regression(TaskKind):
    name = "regression"
    count_noun = "points"
    hflip = False
    pred_file = "regression_predictions.json"
    answer_keys = ("predicted_points_pixels", "predicted_points_normalized")
    main_metrics = ("mre_px", "mre_mm", "hc_abs_err_mm")
    prediction_field = "keypoints"
    pipeline_tag = "keypoint-detection"

    def csv_columns(self, num_classes: int) -> list[str]:
        return [f"point_{k}_xy" for k in range(1, num_classes + 1)]

    def is_own_column(self, column: str) -> bool:
        return bool(_POINT_COLUMN.match(column))

    def header_problems(self, header: list[str], num_classes: int) -> list[str]:
        problems = super().header_problems(header, num_classes)
        point_cols = {int(m.group(1)): h for h in header if (m := _POINT_COLUMN.match(h))}
        extra = sorted(k for k in point_cols if k > num_classes or k < 1)
        if extra:
            problems.append(f"has point column(s) {[point_cols[k] for k in extra]} but num_classes={num_classes}: "
                            f"the number of point_k_xy columns must equal num_classes")
        return problems

    def parse_row(self, sample, row: dict, check: RowCheck) -> None:
        n = sample.num_classes
        pts = []
        for k in range(1, n + 1):
            col = f"point_{k}_xy"
            if not row[col]:
                check.problem(f"{col} is empty: expected JSON [x, y] ({n} points for num_classes={n})")
                continue
            pt = parse_point(row[col])
            if pt is None:
                check.problem(f"{col} {row[col]!r} is not JSON [x, y] with two finite numbers")
            else:
                pts.append(pt)
        if len(pts) == n:
            sample.points = np.asarray(pts, dtype=np.float64).reshape(n, 2)
            if check.size is not None:
                _check_inside(sample.points, check)

    def build_head(self, spec, input_size: int, embed_dim: int = 256):
        return KeypointHead(spec.num_classes, embed_dim, input_size=input_size)

    def target(self, sample, geo, mask=None, box=None, points=None) -> Target:
        p = np.asarray(points if points is not None else sample.points, dtype=np.float64)
        return Target(self.name, points=geo.points_to_input(p))

    def loss(self, head, emb, targets: list[Target], size: float, decoder=None):
        target = torch.tensor(np.stack([t.points for t in targets]), dtype=torch.float32, device=emb.device)
        return keypoint_loss(head(emb)[1], target, size)

    def output_entry(self, sample, pred, hw, out_rel=None) -> dict:
        h, w = hw
        pts = np.asarray(pred.keypoints[sample.task_id], dtype=np.float64).reshape(-1, 2)
        return {"predicted_points_normalized": [float(v) for v in (pts / np.array([w, h], dtype=np.float64)).reshape(-1)],
                "predicted_points_pixels": [float(v) for v in pts.reshape(-1)]}

    def truth_entry(self, sample, image_size) -> dict:
        w, h = image_size()
        pts = np.asarray(sample.points, dtype=np.float64)
        return {"predicted_points_normalized": (pts / np.array([w, h])).reshape(-1).tolist(),
                "predicted_points_pixels": pts.reshape(-1).tolist()}

    def evaluate(self, samples: list, source: PredictionSource) -> dict:
        cases = [_case(s, source) for s in samples]
        metrics = {"mre_px": mean(c["mre_px"] for c in cases)}
        if all(c["mre_mm"] is not None for c in cases):
            metrics["mre_mm"] = mean(c["mre_mm"] for c in cases)
        hc = [c["hc_abs_err_mm"] for c in cases if "hc_abs_err_mm" in c]
        if hc:
            metrics["hc_abs_err_mm"] = float(np.mean(hc))
            metrics["hc_n"] = len(hc)
        return {"metrics": metrics, "cases": cases, "missing": sum(c["missing"] for c in cases)}


def _check_inside(p: np.ndarray, check: RowCheck) -> None:
    """Points must lie inside the image, give or take :data:`POINT_MARGIN_FRAC` of its longer side."""
    w, h = check.size
    m = POINT_MARGIN_FRAC * max(w, h)
    out = ~((p[:, 0] >= -m) & (p[:, 0] <= w - 1 + m) & (p[:, 1] >= -m) & (p[:, 1] <= h - 1 + m))
    if out.any():
        check.problem(f"point(s) {[f'point_{k + 1}_xy' for k in np.flatnonzero(out)]} lie outside the {w}x{h} image")


def _answer(e: dict | None, s, source: PredictionSource, where: str) -> np.ndarray | None:
    """The predicted ``(N, 2)`` points in pixels (``..._pixels``, else ``..._normalized`` times the image size)."""
    n = s.num_classes
    if e is None:
        return None
    if e.get("predicted_points_pixels") is not None:
        return numbers(e["predicted_points_pixels"], 2 * n, "predicted_points_pixels", where).reshape(n, 2)
    if e.get("predicted_points_normalized") is not None:
        w, h = source.image_size(s)
        pts = numbers(e["predicted_points_normalized"], 2 * n, "predicted_points_normalized", where).reshape(n, 2)
        return pts * np.array([w, h])
    return None


def _case(s, source: PredictionSource) -> dict:
    """One row scored: radial error per point (the image diagonal each when missing), HC error when known."""
    index, e = source.entry(s)
    pts = _answer(e, s, source, source.where(s, index))
    if pts is None:
        w, h = source.image_size(s)
        errs = np.full(s.num_classes, math.hypot(w, h))
    else:
        errs = M.radial_errors(pts, s.points)
    row = {
        "image_path": s.rel_image_path,
        "image_file": str(s.image_path),
        "points_true": s.points.tolist(),
        "points_pred": None if pts is None else pts.tolist(),
        "errors_px": [float(v) for v in errs],
        "mre_px": float(errs.mean()),
        "mre_mm": float(errs.mean() * s.pixel_size_mm) if s.pixel_size_mm else None,
        "missing": pts is None,
    }
    hc_true = finite(s.extra.get("head_circumference_mm"))
    if hc_true is not None and s.pixel_size_mm and s.num_classes == 4:
        hc_pred = points_biometry(pts)[2] * s.pixel_size_mm if pts is not None else 0.0
        row.update(hc_true_mm=hc_true, hc_pred_mm=float(hc_pred), hc_abs_err_mm=abs(hc_pred - hc_true))
    return row


REGRESSION = Regression()
