"""Interactive-segmentation evaluation: Dice from a ground-truth box, from 1..N simulated clicks, and without prompts.

The click protocol is the standard NoC one (as in RITM / SAM): the first click at the innermost point of the
object, each further click at the innermost point of the larger error region (positive in a miss, negative in
a false positive), the previous best low-res logits fed back as ``mask_input``. Everything is computed at the
original resolution on the binary mask of each foreground class.
"""

from __future__ import annotations

import numpy as np

from ..data.fmc import Sample
from ..io import read_image, read_mask
from ..predictor import Predictor
from ..train import clicks as sim


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    s = int(pred.sum()) + int(truth.sum())
    return 1.0 if s == 0 else float(2 * int((pred & truth).sum()) / s)


def click_dices(predictor: Predictor, truth: np.ndarray, n_clicks: int) -> list[float]:
    """Dice after each of ``n_clicks`` simulated clicks on the binary ``(H, W)`` ``truth``."""
    pts, labels, out = [], [], []
    first = sim.innermost_point(truth)
    pts.append(first)
    labels.append(1)
    logits = None
    for k in range(n_clicks):
        masks, scores, low = predictor.predict(
            point_coords=np.array(pts), point_labels=np.array(labels),
            mask_input=None if logits is None else logits[None], multimask_output=(k == 0),
        )
        best = int(np.argmax(scores))
        pred, logits = masks[best], low[best]
        out.append(dice(pred, truth))
        if k + 1 < n_clicks:
            nxt = sim.next_click(pred, truth)
            if nxt is None:
                out += [out[-1]] * (n_clicks - k - 1)
                break
            pts.append(nxt[0])
            labels.append(nxt[1])
    return out


def evaluate_prompts(model, adapter: str | None, samples: list[Sample], n_clicks: int = 3, progress: bool = True) -> dict:
    """Per-image and mean Dice (box, 1..n clicks, automatic) of ``adapter`` on segmentation ``samples``.

    Returns ``{"n": ..., "mean": {"box": .., "click_1": .., ..., "auto": ..}, "cases": [{image, class, ...}]}``;
    multi-class tasks are scored per foreground class present in the truth (means over classes and images).
    """
    from tqdm.auto import tqdm

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
            box = sim.mask_box(truth)
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
