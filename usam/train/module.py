"""The training module: backbone + adapter wrapped for ``accelerate``; ``forward`` is the loss of one task batch.

Embeddings come from the cached ones (``mode: cache``, ``(B, C, h, w)`` on the examples), the encoder on images
(``lora``, input ``(B, 3, S, S)``) or the encoder's last stages on cached stage inputs (``tail``, ``(B, N, C)``).
Segmentation trains the automatic head and, with a tuned decoder, a simulated interaction
(:mod:`usam.ops.clicks`): a jittered box followed by corrective clicks, or 1..N clicks with the previous logits fed back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..adapters.adapter import Adapter
from ..backbones import LOW_RES
from ..model import UsamModel
from ..ops import clicks
from ..ops.masks import mask_box
from ..tasks import KINDS
from ..tasks.segmentation import prompted_mask_loss
from ..tasks.spec import TaskSpec
from .examples import Example


class TrainModule(nn.Module):
    """Adapter + backbone wrapped for ``accelerate``: ``forward`` returns the loss of one task batch.

    Args:
      settings: the config's ``train`` section (loss weights, click simulation).
      mode: ``cache``, ``lora`` or ``tail``; ``start``: tail mode's first trained encoder stage.
    """

    def __init__(self, model: UsamModel, adapter: Adapter, settings: dict, mode: str = "cache", start: int | None = None):
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.settings = settings
        self.mode, self.start = mode, start

    def embeddings(self, batch: list[Example], inputs: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, h, w)`` embeddings of a batch (see the module docstring for ``inputs``)."""
        if self.mode == "tail":
            return self.model.backbone.encode_from(inputs, self.start)
        if inputs is not None:
            return self.model.backbone.encode(inputs)
        return torch.stack([e.embedding for e in batch]).to(self.model.device).float()

    def forward(self, task: TaskSpec, batch: list[Example], inputs: torch.Tensor | None, seed: int) -> torch.Tensor:
        emb = self.embeddings(batch, inputs)
        head = self.adapter.heads[task.task_id]
        size = float(self.model.backbone.input_size)
        decoder = self.adapter.decoder or self.model.backbone
        if task.kind == "segmentation" and self.adapter.decoder is not None and not self.settings["auto_weight"]:
            loss = emb.sum() * 0.0  # auto_weight 0: the automatic masks are not run at all
        else:
            loss = KINDS[task.kind].loss(head, emb, [e.target for e in batch], size, decoder)
        if task.kind != "segmentation":
            return loss
        return self.segmentation_loss(loss, batch, emb, np.random.default_rng(seed))

    def segmentation_loss(self, auto_loss: torch.Tensor, batch: list[Example], emb: torch.Tensor, rng) -> torch.Tensor:
        """The automatic masks' loss (``auto_weight``) plus, with a tuned decoder, the simulated interaction's."""
        loss = self.settings["auto_weight"] * auto_loss
        if self.adapter.decoder is not None:
            maps = np.stack([e.target.class_map for e in batch])  # (B, 256, 256)
            loss = loss + self.prompted_loss(maps, emb, rng)
        return loss

    def prompted_loss(self, maps: np.ndarray, emb: torch.Tensor, rng) -> torch.Tensor:
        """Simulated interaction on one random present class per image: a jittered box, or clicks with refinement."""
        truths, keep = [], []
        for i, m in enumerate(maps):
            present = [c for c in np.unique(m) if c != 0]
            if present:
                truths.append(m == rng.choice(present))
                keep.append(i)
        if not keep:
            return emb.sum() * 0.0
        prompt = self._first_prompt(truths, rng, emb.device)
        return self._interaction(emb[keep], truths, prompt, rng)

    def _first_prompt(self, truths: list[np.ndarray], rng, dev) -> dict:
        """``boxes (P, 4)`` or ``None``, the clicks so far per image, and how many decoder passes to run."""
        scale = self.model.backbone.input_size / LOW_RES
        if rng.random() < self.settings["box_prob"]:
            # a jittered box, followed by 0..box_click_iters corrective clicks (the box stays in the prompt)
            boxes = np.stack([clicks.jitter_box(mask_box(t), t.shape, rng) for t in truths]) * scale
            iters = 1 + int(rng.integers(0, int(self.settings["box_click_iters"]) + 1))
            return {"boxes": torch.tensor(boxes, dtype=torch.float32, device=dev), "iters": iters,
                    "pts": [[] for _ in truths], "labels": [[] for _ in truths]}
        lo = int(self.settings["click_iters_min"] or self.settings["click_iters"])
        hi = int(self.settings["click_iters"])
        return {"boxes": None, "iters": int(rng.integers(lo, hi + 1)),
                "pts": [[clicks.innermost_point(t, rng, top_fraction=0.3)] for t in truths], "labels": [[1] for _ in truths]}

    def _interaction(self, emb: torch.Tensor, truths: list[np.ndarray], prompt: dict, rng) -> torch.Tensor:
        """Run the decoder ``iters`` times, adding a corrective click each time; the loss of the passes
        ``train.click_loss`` names (first and last, last, or all), averaged."""
        dev = emb.device
        scale = self.model.backbone.input_size / LOW_RES
        target = torch.tensor(np.stack(truths)[:, None], dtype=torch.float32, device=dev)
        boxes, iters, pts, labels = prompt["boxes"], prompt["iters"], prompt["pts"], prompt["labels"]
        prev, total, n_loss = None, 0.0, 0
        for it in range(iters):
            points = None
            if pts[0]:
                coords = torch.tensor(np.array(pts, dtype=np.float32) * scale, device=dev)
                points = (coords, torch.tensor(np.array(labels), device=dev))
            multimask = it == 0 and boxes is None
            # gradients through the passes click_loss names; the others only place clicks
            grad = _carries_loss(self.settings["click_loss"], it, iters)
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                logits, iou = self.adapter.decoder.decode(emb, points=points, boxes=boxes, mask_input=prev,
                                                          multimask_output=multimask)
            if grad:
                total = total + prompted_mask_loss(logits, iou, target)
                n_loss += 1
            with torch.no_grad():
                best = logits[torch.arange(len(truths)), iou.argmax(dim=1)][:, None]
            prev = best.detach()
            if it + 1 < iters:
                _add_clicks((best[:, 0] > 0).cpu().numpy(), truths, pts, labels)
        return total / n_loss


def _carries_loss(rule: str, it: int, iters: int) -> bool:
    """Whether decoder pass ``it`` (0-based) of ``iters`` carries the loss under ``train.click_loss`` ``rule``."""
    last = it + 1 == iters
    return {"all": True, "last": last, "first_last": it == 0 or last}[rule]


def _add_clicks(pred: np.ndarray, truths: list[np.ndarray], pts: list[list], labels: list[list]) -> None:
    """Append the next corrective click of each image (``pred`` ``(P, 256, 256)`` bool) to ``pts`` / ``labels``."""
    for i, t in enumerate(truths):
        nxt = clicks.next_click(pred[i], t)
        if nxt is None:  # already perfect: repeat the last click (or a centre click after a box)
            nxt = ((pts[i][-1][0], pts[i][-1][1]), labels[i][-1]) if pts[i] else (clicks.innermost_point(t), 1)
        pts[i].append(nxt[0])
        labels[i].append(nxt[1])
