"""Validation during training: per-task metrics in model space (fast), one ``score`` per task (higher is better).

The official metrics come from ``usam evaluate``; these choose the best epoch. Classification: AUC (accuracy
when AUC is undefined); detection: box IoU, raw and refined by the tuned decoder; regression: ``exp(-MRE / 50)``
(MRE in original pixels); segmentation: mean of the automatic Dice, the GT-box Dice and the Dice-vs-clicks curve.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..backbones import LOW_RES
from ..data.fmc import Sample
from ..heads.automask import logits_to_classes
from ..heads.refine import refine_box
from ..ops import clicks
from ..ops.masks import dice, mask_box
from ..tasks.spec import TaskSpec
from .examples import ExampleSource
from .module import TrainModule


@torch.no_grad()
def validate(module: TrainModule, source: ExampleSource, val: dict[str, list[Sample]], specs: dict[str, TaskSpec]) -> dict:
    """``{task id: {metric: value, "score": s}}`` on the validation rows (images as read, view 0 in tail mode)."""
    module.eval()
    results = {}
    for tid, rows in val.items():
        outs = []
        for s in rows:
            batch, inputs = source.batch([s], train=False)
            outs.append((batch[0], module.embeddings(batch, inputs)))
        results[tid] = _METRICS.get(specs[tid].kind, _segmentation)(module, outs, specs[tid])
    module.train()
    return results


def _classification(module: TrainModule, outs, spec: TaskSpec) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score  # scikit-learn is slow to import: only when validating

    head = module.adapter.heads[spec.task_id]
    probs = np.concatenate([head(e).softmax(-1).cpu().numpy() for _, e in outs])
    y = np.array([ex.target.label for ex, _ in outs])
    metrics = {"accuracy": float(accuracy_score(y, probs.argmax(1)))}
    try:
        metrics["auc"] = float(roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else
                               roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))
    except ValueError:
        metrics["auc"] = float("nan")
    metrics["score"] = metrics["auc"] if math.isfinite(metrics["auc"]) else metrics["accuracy"]
    return metrics


def _detection(module: TrainModule, outs, spec: TaskSpec) -> dict:
    from torchvision.ops import box_iou  # torchvision's detection ops load lazily

    adapter, head = module.adapter, module.adapter.heads[spec.task_id]
    ious, refined = [], []
    for ex, e in outs:
        raw = head(e).float().cpu()
        truth = torch.tensor(ex.target.box[None], dtype=torch.float32)
        ious.append(float(box_iou(raw, truth)[0, 0]))
        if adapter.decoder is not None:
            box = refine_box(adapter.decoder, e, raw[0].numpy(), module.model.backbone.input_size, route="tuned")
            refined.append(float(box_iou(torch.tensor(box[None], dtype=torch.float32), truth)[0, 0]))
    metrics = {"iou": float(np.mean(ious))}
    if refined:
        metrics["iou_refined"] = float(np.mean(refined))
    metrics["score"] = max(metrics["iou"], metrics.get("iou_refined", 0.0))
    return metrics


def _regression(module: TrainModule, outs, spec: TaskSpec) -> dict:
    head = module.adapter.heads[spec.task_id]
    errs = []
    for ex, e in outs:
        pred = ex.geometry.points_to_original(head(e)[1][0].float().cpu().numpy())
        truth = ex.geometry.points_to_original(ex.target.points)
        errs.append(float(np.linalg.norm(pred - truth, axis=1).mean()))
    mre = float(np.mean(errs))
    return {"mre_px": mre, "score": float(math.exp(-mre / 50))}


def _segmentation(module: TrainModule, outs, spec: TaskSpec) -> dict:
    adapter, model = module.adapter, module.model
    decoder = adapter.decoder or model.backbone
    scale = model.backbone.input_size / LOW_RES
    auto, box_d, click_d = [], [], []
    n_clicks = int(module.settings["val_clicks"])
    for ex, e in outs:
        truth = ex.target.class_map
        logits, _ = adapter.heads[spec.task_id](decoder, e)
        pred = logits_to_classes(logits)[0].cpu().numpy()
        auto.append(np.mean([dice(pred == c, truth == c) for c in range(1, spec.num_classes)]))
        if adapter.decoder is None:
            continue
        for c in range(1, spec.num_classes):
            t = truth == c
            if not t.any():
                continue
            b = torch.tensor(mask_box(t)[None] * scale, dtype=torch.float32, device=e.device)
            lg, _ = decoder.decode(e, boxes=b, multimask_output=False)
            box_d.append(dice(lg[0, 0].cpu().numpy() > 0, t))
            click_d.append(_click_curve(decoder, e, t, scale, n_clicks))
    out = {"dice_auto": float(np.mean(auto))}
    parts = [out["dice_auto"]]
    if box_d:
        out["dice_box"] = float(np.mean(box_d))
        curve = np.mean(click_d, axis=0)
        out["dice_1click"] = float(curve[0])
        for k in range(1, n_clicks):
            out[f"dice_{k + 1}click"] = float(curve[k])
        parts += [out["dice_box"], float(curve.mean())]
    out["score"] = float(np.mean(parts))
    return out


def _click_curve(decoder, emb: torch.Tensor, truth: np.ndarray, scale: float, n_clicks: int) -> list[float]:
    """Dice after each of ``n_clicks`` simulated clicks (standard protocol) on one ``(1, C, h, w)`` embedding,
    in model space (``truth`` is the ``(256, 256)`` low-res mask, clicks are scaled to the input by ``scale``)."""
    pts, labels, prev, out = [clicks.innermost_point(truth)], [1], None, []
    for k in range(n_clicks):
        coords = torch.tensor([pts], dtype=torch.float32, device=emb.device) * scale
        lg, iou = decoder.decode(emb, points=(coords, torch.tensor([labels], device=emb.device)), mask_input=prev,
                                 multimask_output=k == 0)
        best = lg[:, int(iou[0].argmax())][:, None]
        pred = best[0, 0].cpu().numpy() > 0
        out.append(dice(pred, truth))
        nxt = clicks.next_click(pred, truth)
        if nxt is None:
            return out + [out[-1]] * (n_clicks - k - 1)
        pts.append(nxt[0])
        labels.append(nxt[1])
        prev = best
    return out


_METRICS = {"classification": _classification, "detection": _detection, "regression": _regression}
