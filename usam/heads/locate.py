"""Find the object before outlining it: a CenterNet-style localisation head for automatic segmentation.

:class:`LocateHead` reads the image embedding ``(B, C, 64, 64)`` and gives, per foreground class, an
object-centre heatmap (logits) and the object's box size (log of width / height over the model input side)
on the same grid. Its top peaks are candidate boxes; each goes to the decoder as a box prompt (the
backbone's own box path by default: LiteMedSAM was trained on boxes) and the candidate with the best
``sigmoid(peak) * predicted IoU`` gives the class's mask (:func:`locate_logits`).

It is switched per task by the adapter's ``head_options`` (``usam/heads/refine.py``):
``locate: "heatmap"`` uses it, ``locate: "off"`` keeps a trained head in ``heads.safetensors`` unused
(what ``python -m usam.train.locate`` writes; ``scripts/tune_head_options.py`` chooses on val).
The head lives as ``AutoMaskHead.locator`` (tensors ``heads.<task>.locator.*``), built by
:func:`attach_locators` wherever the heads are built from a config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .refine import decode_box

#: candidate peaks per class tried through the decoder
DEFAULT_CANDIDATES = 3


class LocateHead(nn.Module):
    """``(B, C, h, w)`` embedding -> centre logits ``(B, K, h, w)`` and log box size ``(B, K, 2, h, w)``.

    ``K`` foreground classes. Sizes are ``log(width / input_size)``, ``log(height / input_size)``.
    Dilated 3x3 convolutions (1, 2, 4) give each cell a 15-cell (60 model-input pixel) view on top of the
    encoder's own context.
    """

    def __init__(self, num_foreground: int, in_channels: int = 256, hidden: int = 32):
        super().__init__()
        layers = [nn.Conv2d(in_channels, hidden, 1), nn.GroupNorm(8, hidden), nn.GELU()]
        for d in (1, 2, 4):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d), nn.GroupNorm(8, hidden), nn.GELU()]
        self.trunk = nn.Sequential(*layers)
        self.heat = nn.Conv2d(hidden, num_foreground, 1)
        self.size = nn.Conv2d(hidden, 2 * num_foreground, 1)
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.01) / 0.01))  # CenterNet's prior: p = 0.01
        nn.init.constant_(self.size.bias, math.log(0.25))

    @property
    def num_foreground(self) -> int:
        return self.heat.out_channels

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(embedding)
        b, _, h, w = x.shape
        return self.heat(x), self.size(x).view(b, self.num_foreground, 2, h, w)


def attach_locators(heads, head_options: dict) -> None:
    """Give each automatic-segmentation head whose options name ``locate`` a :class:`LocateHead`.

    ``heads``: ``task_id -> head`` (a ``ModuleDict`` or a dict); ``head_options``: the adapter's.
    """
    for tid, opts in (head_options or {}).items():
        head = dict(heads.items()).get(tid)  # a ModuleDict has no .get
        if head is not None and "locate" in (opts or {}) and hasattr(head, "num_foreground"):
            head.locator = LocateHead(head.num_foreground, head.tokens.shape[-1])


def peak_boxes(heat: torch.Tensor, size: torch.Tensor, input_size: int, k: int = DEFAULT_CANDIDATES,
               limit: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` local maxima of one class's maps -> boxes ``(k, 4)`` xyxy in model-input pixels and scores ``(k,)``.

    ``heat``: ``(h, w)`` logits; ``size``: ``(2, h, w)`` log sizes; ``limit``: ``(rh, rw)`` the resized image
    inside the input (boxes are clipped to it; peaks in the padding are skipped).
    """
    h, w = heat.shape
    cell = input_size / w
    prob = torch.sigmoid(heat.float())
    if limit is not None:
        lh, lw = max(1, math.ceil(limit[0] / cell)), max(1, math.ceil(limit[1] / cell))
        prob = prob.clone()
        prob[lh:], prob[:, lw:] = 0, 0
    keep = prob == F.max_pool2d(prob[None, None], 3, stride=1, padding=1)[0, 0]
    scores, idx = (prob * keep).flatten().topk(min(k, h * w))
    ys, xs = (idx // w).float(), (idx % w).float()
    wh = size.float().flatten(1)[:, idx].exp() * input_size  # (2, k)
    cx, cy = (xs + 0.5) * cell, (ys + 0.5) * cell
    boxes = torch.stack([cx - wh[0] / 2, cy - wh[1] / 2, cx + wh[0] / 2, cy + wh[1] / 2], dim=1)
    hi = torch.tensor([limit[1], limit[0]] * 2 if limit else [input_size] * 4, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), hi), scores


def locate_logits(locator: LocateHead, decoder, embedding: torch.Tensor, input_size: int,
                  limit: tuple[int, int] | None = None, route: str | None = None,
                  k: int = DEFAULT_CANDIDATES) -> torch.Tensor:
    """Automatic per-class logits ``(1, K, 256, 256)`` from the best located box of each class.

    ``embedding``: ``(1, C, h, w)``; each class's top ``k`` peak boxes are decoded as box prompts (``route``:
    ``"base"`` / ``"tuned"`` / ``"boxes"``, as ``refine_decoder``) and the one with the highest
    ``sigmoid(peak) * predicted IoU`` is kept.
    """
    heat, size = locator(embedding)
    out = []
    for c in range(heat.shape[1]):
        boxes, scores = peak_boxes(heat[0, c], size[0, c], input_size, k, limit)
        logits, iou = decode_box(decoder, embedding.expand(len(boxes), -1, -1, -1), boxes.to(embedding.dtype), route)
        best = int((scores.to(iou.device) * iou[:, 0].float()).argmax())
        out.append(logits[best, 0])
    return torch.stack(out)[None]
