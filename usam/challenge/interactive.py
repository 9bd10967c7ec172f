"""Interactive-segmentation evaluation: Dice from a ground-truth box, from 1..N simulated clicks, and without prompts.

The click protocol is the standard NoC one (as in RITM / SAM): the first click at the innermost point of the
object, each further click at the innermost point of the larger error region (positive in a miss, negative in
a false positive), the previous best low-res logits fed back as ``mask_input``. Everything is computed at the
original resolution on the binary mask of each foreground class.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..data.fmc import Sample
from ..io import read_image, read_mask
from ..ops.clicks import innermost_point, next_click
from ..ops.masks import dice, iou, mask_box
from ..predictor import Predictor


def click_session(predictor: Predictor, truth: np.ndarray, n_clicks: int, first_point=None, on_pass=None) -> dict:
    """Run the standard click protocol for ``n_clicks`` clicks on the binary ``(H, W)`` ``truth``.

    Returns ``{"dice": [n_clicks], "iou": [n_clicks], "predicted_iou": [n_clicks], "quality": [n_clicks]}``: after
    click ``k`` the Dice and IoU of the chosen mask against ``truth``, the decoder's predicted IoU of that mask (its
    score: it chose the first click's candidate) and the quality estimate shown with it
    (:meth:`usam.predictor.Predictor.quality`, the adapter's ``decoder.quality``). When the
    mask becomes perfect no further click is possible and the last values are repeated. ``first_point``: ``(x, y)``
    of the first click instead of the innermost point; ``on_pass(k, masks, scores)``: called after every decoder pass
    with all the masks it returned (three on the first click, one after).
    """
    pts, labels = [innermost_point(truth) if first_point is None else first_point], [1]
    out = {"dice": [], "iou": [], "predicted_iou": [], "quality": []}
    logits = None
    for k in range(n_clicks):
        masks, scores, low = predictor.predict(
            point_coords=np.array(pts), point_labels=np.array(labels),
            mask_input=None if logits is None else logits[None], multimask_output=(k == 0),
        )
        if on_pass is not None:
            on_pass(k, masks, scores)
        best = int(np.argmax(scores))
        pred, logits = masks[best], low[best]
        out["dice"].append(dice(pred, truth))
        out["iou"].append(iou(pred, truth))
        out["predicted_iou"].append(float(scores[best]))
        out["quality"].append(float(predictor.quality(scores, low)[best]))
        if k + 1 < n_clicks:
            nxt = next_click(pred, truth)
            if nxt is None:
                for v in out.values():
                    v += [v[-1]] * (n_clicks - k - 1)
                break
            pts.append(nxt[0])
            labels.append(nxt[1])
    return out


def click_dices(predictor: Predictor, truth: np.ndarray, n_clicks: int) -> list[float]:
    """Dice after each of ``n_clicks`` simulated clicks on the binary ``(H, W)`` ``truth``."""
    return click_session(predictor, truth, n_clicks)["dice"]


def noc(ious: list[float], threshold: float, cap: int = 20) -> int:
    """Number of clicks to reach IoU ``threshold`` (1-based); ``cap`` when the curve never reaches it."""
    for k, v in enumerate(ious[:cap], start=1):
        if v >= threshold:
            return k
    return cap


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (NaN when either is constant)."""
    from scipy.stats import spearmanr  # lazy: scipy.stats is heavy and only the benchmark's summary needs it

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def evaluate_clicks(model, adapter: str | None, samples: list[Sample], n_clicks: int = 20, progress: bool = True) -> dict:
    """The interactive benchmark of ``adapter`` on segmentation ``samples`` (every foreground class present).

    Returns ``{"n_objects", "n_clicks", "dice_curve": [n_clicks] (mean Dice after 1..n clicks), "noc85", "noc90"
    (mean clicks to IoU 0.85 / 0.90, unreached counted as ``n_clicks``), "iou_error" (mean |estimated - measured|
    IoU of the chosen first-click mask, the estimate being the quality shown with it: the adapter's
    ``decoder.quality``), "iou_spearman" (rank correlation of the two over objects), "predicted_iou_error" /
    "predicted_iou_spearman" (the same for the decoder's raw predicted IoU), "cases": [...]}``.
    """
    model.set_adapter(adapter)
    predictor = Predictor(model)
    cases = []
    for s in tqdm(samples, desc="clicks", disable=not progress, unit="img"):
        gt = read_mask(s.mask_path)
        predictor.set_image(read_image(s.image_path))
        for c in range(1, s.num_classes):
            truth = gt == c
            if truth.any():
                run = click_session(predictor, truth, n_clicks)
                cases.append({"image": s.rel_image_path, "class": c, **run,
                              "noc85": noc(run["iou"], 0.85, n_clicks), "noc90": noc(run["iou"], 0.90, n_clicks)})
    if not cases:
        return {"n_objects": 0, "n_clicks": n_clicks, "cases": []}
    first_shown = [c["quality"][0] for c in cases]
    first_pred = [c["predicted_iou"][0] for c in cases]
    first_true = [c["iou"][0] for c in cases]
    return {
        "n_objects": len(cases), "n_clicks": n_clicks,
        "dice_curve": np.mean([c["dice"] for c in cases], axis=0).tolist(),
        "noc85": float(np.mean([c["noc85"] for c in cases])), "noc90": float(np.mean([c["noc90"] for c in cases])),
        "iou_error": float(np.mean(np.abs(np.subtract(first_shown, first_true)))),
        "iou_spearman": spearman(first_shown, first_true),
        "predicted_iou_error": float(np.mean(np.abs(np.subtract(first_pred, first_true)))),
        "predicted_iou_spearman": spearman(first_pred, first_true), "cases": cases,
    }


def evaluate_prompts(model, adapter: str | None, samples: list[Sample], n_clicks: int = 3, progress: bool = True) -> dict:
    """Per-image and mean Dice (box, 1..n clicks, automatic) of ``adapter`` on segmentation ``samples``.

    Returns ``{"n": ..., "mean": {"box": .., "click_1": .., ..., "auto": ..}, "cases": [{image, class, ...}]}``;
    multi-class tasks are scored per foreground class present in the truth (means over classes and images).
    """
    model.set_adapter(adapter)
    predictor = Predictor(model)
    cases = []
    for s in tqdm(samples, desc="prompts", disable=not progress, unit="img"):
        image = read_image(s.image_path)
        gt = read_mask(s.mask_path)
        predictor.set_image(image)
        auto = None
        if adapter is not None and s.task_id in model.adapter.heads:
            auto = model.predict(image).masks[s.task_id]
        for c in range(1, s.num_classes):
            truth = gt == c
            if not truth.any():
                continue
            box = mask_box(truth)
            m, _, _ = predictor.predict(box=box, multimask_output=False)
            row = {"image": s.rel_image_path, "class": c, "box": dice(m[0], truth)}
            for k, d in enumerate(click_dices(predictor, truth, n_clicks), start=1):
                row[f"click_{k}"] = d
            if auto is not None:
                row["auto"] = dice(auto == c, truth)
            cases.append(row)
    keys = [k for k in cases[0] if k not in ("image", "class")] if cases else []
    return {"n_images": len(samples), "n_objects": len(cases),
            "mean": {k: float(np.mean([r[k] for r in cases])) for k in keys}, "cases": cases}
