"""Task heads: every one reads the same image embedding ``(B, 256, 64, 64)``.

``classify`` (class logits), ``detect`` (one xyxy box), ``keypoints`` (N landmarks) and ``automask``
(prompt-free multi-class segmentation through SAM's mask decoder). :func:`run_heads` runs all heads of
the active adapter on one embedded image and returns a :class:`Prediction` in original-image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """Everything one adapter says about one image, in original-image pixels (x, y).

    Attributes:
      adapter: adapter name.
      masks: ``task_id -> (H, W) uint8`` class-id map (0 = background) from automatic segmentation.
      probabilities: ``task_id -> (K,)`` class probabilities summing to 1.
      class_names: ``task_id -> [K names]`` for classification and segmentation tasks.
      boxes: ``task_id -> (4,)`` xyxy box.
      keypoints: ``task_id -> (N, 2)`` (x, y) landmarks.
    """

    adapter: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)

    def predicted_class(self, task_id: str) -> int:
        return int(np.argmax(self.probabilities[task_id]))


def refine_box(decoder, embedding, box: np.ndarray, input_size: int) -> np.ndarray:
    """Refine a regressed ``(4,)`` box (model-input pixels): prompt the decoder with it and take the
    extent of the mask it returns; the regressed box is kept when the mask is empty."""
    import torch

    from ..backbones import LOW_RES

    logits, _ = decoder.decode(embedding, boxes=torch.as_tensor(box[None], dtype=torch.float32, device=embedding.device),
                               multimask_output=False)
    mask = (logits[0, 0] > 0).cpu().numpy()
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return box
    s = input_size / LOW_RES
    return np.array([xs.min() * s, ys.min() * s, (xs.max() + 1) * s, (ys.max() + 1) * s], dtype=np.float64)


def refine_with_box(decoder, embedding, logits, input_size: int):
    """Refine automatic per-class logits ``(1, K - 1, 256, 256)``: the box around each class's largest
    component is given to the decoder as a box prompt, and its mask replaces the class's logits."""
    import cv2
    import torch

    from ..backbones import LOW_RES
    from .automask import logits_to_classes

    classes = logits_to_classes(logits)[0].cpu().numpy()
    out = logits.clone()
    s = input_size / LOW_RES
    for c in range(logits.shape[1]):
        m = (classes == c + 1).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n <= 1:
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[k, :4]
        box = torch.tensor([[x * s, y * s, (x + w) * s, (y + h) * s]], dtype=torch.float32, device=embedding.device)
        refined, _ = decoder.decode(embedding, boxes=box, multimask_output=False)
        out[:, c] = refined[:, 0]
    return out


def run_heads(model, embedded) -> Prediction:
    """Run every head of ``model``'s active adapter on one :class:`~usam.embedding.Embedded` image."""
    import torch

    from .automask import logits_to_classes

    adapter = model.adapter
    geo = embedded.geometry
    emb = embedded.embedding.to(model.device)
    rh, rw = geo.resized_hw
    pred = Prediction(adapter=adapter.name)
    with torch.no_grad():
        for tid, task in adapter.tasks.items():
            head = adapter.heads[tid]
            if task.class_names:
                pred.class_names[tid] = list(task.class_names)
            if task.kind == "classification":
                pred.probabilities[tid] = head(emb).float().softmax(-1)[0].cpu().numpy()
            elif task.kind == "detection":
                box = np.clip(head(emb).float()[0].cpu().numpy(), 0, [rw, rh, rw, rh])
                if adapter.config.head_options.get(tid, {}).get("refine_with_decoder") and adapter.decoder is not None:
                    box = refine_box(adapter.decoder, emb, box, model.backbone.input_size)
                pred.boxes[tid] = geo.boxes_to_original(box)
            elif task.kind == "regression":
                _, coords = head(emb)
                pts = np.clip(coords.float()[0].cpu().numpy(), 0, [rw, rh])
                pred.keypoints[tid] = geo.points_to_original(pts)
            elif task.kind == "segmentation":
                logits, _ = head(model.prompt_decoder(), emb)
                if adapter.config.head_options.get(tid, {}).get("refine_with_box"):
                    logits = refine_with_box(model.prompt_decoder(), emb, logits, model.backbone.input_size)
                full = geo.masks_to_original(logits.float())
                pred.masks[tid] = logits_to_classes(full)[0].cpu().numpy().astype(np.uint8)
    for tid, opts in adapter.config.head_options.items():
        source = opts.get("ellipse_from")
        if source and tid in pred.keypoints and source in pred.masks:
            points = ellipse_axis_points(pred.masks[source] > 0)
            if points is not None:
                pred.keypoints[tid] = points
    return pred


def ellipse_axis_points(mask: np.ndarray) -> np.ndarray | None:
    """``(4, 2)`` ends of the major axis (left -> right) then of the minor axis (top -> bottom) of the
    ellipse fitted to a head mask: fetal biometry's OFD and BPD landmarks. ``None`` for an empty mask."""
    from ..measure import head_biometry

    if mask.sum() < 5:
        return None
    try:
        result = head_biometry(mask)
    except Exception:
        return None
    ofd = sorted(map(tuple, result["ofd_endpoints"]), key=lambda p: p[0])
    bpd = sorted(map(tuple, result["bpd_endpoints"]), key=lambda p: p[1])
    return np.array([*ofd, *bpd], dtype=np.float64)
