"""Task heads: every one reads the same image embedding ``(B, 256, 64, 64)``.

``classify`` (class logits), ``detect`` (one xyxy box), ``keypoints`` (N landmarks) and ``automask``
(prompt-free multi-class segmentation through SAM's mask decoder). :func:`run_heads` runs all heads of
the active adapter on one embedded image and returns a :class:`Prediction` in original-image pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import LOW_RES
from ..errors import ConfigError
from ..ops.masks import mask_extent
from .automask import logits_to_classes
from .locate import attach_locators, locate_logits
from .refine import ellipse_axis_points, postprocess_classes, refine_box, refine_with_box

__all__ = ["Prediction", "attach_locators", "ellipse_axis_points", "refine_box", "refine_with_box", "run_heads"]


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
      confidence: ``task_id -> (K - 1,)`` for automatic segmentation: per foreground class, the model's mean
        probability (sigmoid of the winning logit) over the pixels it gives that class, before post-processing;
        0 for a class it does not predict; with ``locate: heatmap`` no more than the learned tokens' own box-refined
        answer gives (:func:`_presence_confidence`: two decoder passes, made when ``confidence`` is first read, not
        by every prediction). :func:`usam.measure.check_confident` reads it.
    """

    adapter: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)
    _confidence: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: task_id -> callable giving a ``(K - 1,)`` cap on its confidence, applied on the first read
    _caps: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def confidence(self) -> dict[str, np.ndarray]:
        for tid in list(self._caps):
            self._confidence[tid] = np.minimum(self._confidence[tid], self._caps.pop(tid)())
        return self._confidence

    def predicted_class(self, task_id: str) -> int:
        return int(np.argmax(self.probabilities[task_id]))


def run_heads(model, embedded) -> Prediction:
    """Run every head of ``model``'s active adapter on one :class:`~usam.embedding.Embedded` image."""
    adapter = model.adapter
    options = adapter.config.head_options
    geo = embedded.geometry
    emb = embedded.embedding.to(model.device)
    rh, rw = geo.resized_hw
    size = model.backbone.input_size
    pred = Prediction(adapter=adapter.name)
    # segmentation first: detection (box_from) and regression (ellipse_from) may read its masks
    order = sorted(adapter.tasks, key=lambda t: adapter.tasks[t].kind != "segmentation")
    with torch.no_grad():
        for tid in order:
            task, head, opts = adapter.tasks[tid], adapter.heads[tid], options.get(tid, {})
            route = opts.get("refine_decoder")
            if task.class_names:
                pred.class_names[tid] = list(task.class_names)
            if task.kind == "classification":
                pred.probabilities[tid] = head(emb).float().softmax(-1)[0].cpu().numpy()
            elif task.kind == "detection":
                box = np.clip(head(emb).float()[0].cpu().numpy(), 0, [rw, rh, rw, rh])
                if opts.get("refine_with_decoder") and adapter.decoder is not None:
                    box = refine_box(adapter.decoder, emb, box, size, route)
                box = geo.boxes_to_original(box)
                source = opts.get("box_from")
                extent = mask_extent(pred.masks[source] > 0) if source in pred.masks else None
                pred.boxes[tid] = box if extent is None else extent
            elif task.kind == "regression":
                _, coords = head(emb)
                pts = geo.points_to_original(np.clip(coords.float()[0].cpu().numpy(), 0, [rw, rh]))
                source = opts.get("ellipse_from")
                axis = ellipse_axis_points(pred.masks[source] > 0) if source in pred.masks else None
                pred.keypoints[tid] = pts if axis is None else axis
            elif task.kind == "segmentation":
                logits = _automatic_logits(model, head, emb, opts, geo)
                if opts.get("refine_with_box"):
                    logits = refine_with_box(model.prompt_decoder(), emb, logits, size, route, opts.get("refine_rounds", 1))
                pred._confidence[tid] = _class_confidence(logits.float(), geo, size)
                if opts.get("locate") == "heatmap":
                    pred._caps[tid] = functools.partial(_presence_confidence, model.prompt_decoder(), head, emb, geo, size)
                full = geo.masks_to_original(logits.float())
                classes = logits_to_classes(full, float(opts.get("mask_threshold", 0.0)))[0].cpu().numpy()
                classes = classes.astype(np.uint8)
                pred.masks[tid] = postprocess_classes(classes, opts)
    return pred


def _automatic_logits(model, head, emb, opts: dict, geo):
    """Low-res automatic logits ``(1, K - 1, 256, 256)``: the learned tokens' answer, or with ``locate: heatmap``
    the best located box of each class through the decoder."""
    if opts.get("locate") != "heatmap":
        return head(model.prompt_decoder(), emb)[0]
    locator = getattr(head, "locator", None)
    if locator is None:
        raise ConfigError(f"head_options: locate 'heatmap' needs a trained localisation head in adapter "
                          f"{model.adapter.name!r} (train one with python -m usam.train.locate)")
    return locate_logits(locator, model.prompt_decoder(), emb, model.backbone.input_size, geo.resized_hw,
                         opts.get("refine_decoder"))


@torch.no_grad()
def _presence_confidence(decoder, head, emb, geo, size: int) -> np.ndarray:
    """``(K - 1,)`` cap on a located mask's confidence: the learned tokens' own answer, re-prompted once with its
    box through the tuned decoder, scored as :func:`_class_confidence`. The localisation head finds a peak on any
    image, a blank one too, and a box prompt makes the decoder sure of what it outlines; the tokens' answer is what
    says an object is there (fetal_head, 40 test images: 0.954 at the lowest; black / white images 0.914; the
    measuring rule's floor, ``usam.measure.MIN_CONFIDENCE``, is 0.93)."""
    answer = refine_with_box(decoder, emb, head(decoder, emb)[0], size, "tuned", 1)
    return _class_confidence(answer.float(), geo, size)


def _class_confidence(logits, geo, input_size: int) -> np.ndarray:
    """``(1, K - 1, 256, 256)`` low-res logits -> ``(K - 1,)`` mean probability of each class over the pixels
    (inside the image, not the padding) where it wins with a positive logit; 0 where it never does."""
    rh, rw = geo.resized_hw
    lh, lw = max(1, -(-rh * LOW_RES // input_size)), max(1, -(-rw * LOW_RES // input_size))
    best, idx = logits[0, :, :lh, :lw].max(dim=0)
    prob, fg = torch.sigmoid(best), best > 0
    out = np.zeros(logits.shape[1], dtype=np.float64)
    for c in range(logits.shape[1]):
        sel = fg & (idx == c)
        if bool(sel.any()):
            out[c] = float(prob[sel].mean())
    return out
