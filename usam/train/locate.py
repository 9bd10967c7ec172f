"""Train an adapter's localisation heads (:class:`usam.heads.locate.LocateHead`) on cached embeddings.

    OMP_NUM_THREADS=1 python -m usam.train.locate adapters/breast [--data DIR] [--epochs 30]

For every segmentation task of the adapter: the embeddings its heads see of the train split
(:class:`~usam.train.cache.EmbeddingStore`: through the adapter's encoder LoRA where it has one, computed once
where missing), targets from the
masks (one object per 8-connected component of a class, components under a tenth of the class's largest
dropped: a Gaussian centre peak of sigma = box side / 6 and the log box size there), CenterNet's focal loss +
L1 on log sizes. The epoch with the best mean peak-box IoU on the val split is kept. The head is saved into
the adapter (``heads.<task>.locator.*`` in ``heads.safetensors``) with ``head_options.<task>.locate: "off"``:
``scripts/tune_head_options.py`` turns it on only where it wins on val. The adapter's other files are kept.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.fmc import read_split
from ..heads.locate import LocateHead, peak_boxes
from ..io import read_mask
from ..ops.metrics import box_iou
from .cache import EmbeddingStore

GRID = 64


@dataclass
class LocateExample:
    """One image: embedding ``(C, 64, 64)`` fp16, per-class object boxes in model-input pixels, resized ``(h, w)``."""

    embedding: torch.Tensor
    boxes: list[np.ndarray]
    resized_hw: tuple[int, int]


def object_boxes(mask: np.ndarray, geo, num_foreground: int, min_fraction: float = 0.1) -> list[np.ndarray]:
    """``(H, W)`` class ids -> per class ``(M, 4)`` xyxy boxes in model-input pixels, one per component
    at least ``min_fraction`` of the class's largest (``(0, 4)`` for an absent class)."""
    out = []
    for c in range(1, num_foreground + 1):
        n, _, stats, _ = cv2.connectedComponentsWithStats((mask == c).astype(np.uint8), connectivity=8)
        stats = stats[1:]
        if n <= 1:
            out.append(np.zeros((0, 4)))
            continue
        area = stats[:, cv2.CC_STAT_AREA]
        keep = stats[area >= min_fraction * area.max()]
        x, y, w, h = (keep[:, i].astype(np.float64) for i in range(4))
        out.append(geo.boxes_to_input(np.stack([x, y, x + w, y + h], axis=1)))
    return out


def centre_targets(boxes: list[np.ndarray], input_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class boxes -> heat targets ``(K, 64, 64)`` in [0, 1] (1 at each centre cell), log sizes
    ``(K, 2, 64, 64)`` and size weights ``(K, 64, 64)`` (the Gaussian where it exceeds 0.3)."""
    k, cell = len(boxes), input_size / GRID
    heat, size = torch.zeros(k, GRID, GRID), torch.zeros(k, 2, GRID, GRID)
    grid = (torch.arange(GRID, dtype=torch.float32) + 0.5) * cell
    for c, bs in enumerate(boxes):
        for x0, y0, x1, y1 in bs:
            w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ix, iy = min(int(cx // cell), GRID - 1), min(int(cy // cell), GRID - 1)
            sx, sy = max(w / 6, 0.75 * cell), max(h / 6, 0.75 * cell)
            g = torch.exp(-((grid[None, :] - (ix + 0.5) * cell) ** 2) / (2 * sx**2)
                          - ((grid[:, None] - (iy + 0.5) * cell) ** 2) / (2 * sy**2))
            near = g > heat[c]
            size[c, 0][near], size[c, 1][near] = math.log(w / input_size), math.log(h / input_size)
            heat[c] = torch.maximum(heat[c], g)
            heat[c, iy, ix] = 1.0
    return heat, size, (heat > 0.3).float() * heat


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def locate_loss(locator: LocateHead, emb: torch.Tensor, heat_t, size_t, weight) -> torch.Tensor:
    """Focal loss on the centre maps + weighted L1 on the log sizes, for a batch ``(B, C, 64, 64)``."""
    heat, size = locator(emb)
    l1 = (F.l1_loss(size, size_t, reduction="none").sum(2) * weight).sum() / weight.sum().clamp(min=1)
    return focal_loss(heat, heat_t) + l1


def load_examples(store, samples, num_foreground: int) -> list[LocateExample]:
    """Embeddings (from ``store``, an :class:`~usam.train.cache.EmbeddingStore`) and object boxes of
    segmentation ``samples``."""
    out = []
    for s in samples:
        e = store.get(s.image_path)
        boxes = object_boxes(read_mask(s.mask_path), e.geometry, num_foreground)
        out.append(LocateExample(e.embedding[0].half(), boxes, tuple(e.geometry.resized_hw)))
    return out


def peak_iou(locator: LocateHead, examples: list[LocateExample], input_size: int) -> float:
    """Mean over images and present classes of the best IoU between the top peak box and a true object box."""
    vals = []
    locator.eval()
    with torch.no_grad():
        for ex in examples:
            heat, size = locator(ex.embedding.float()[None])
            for c, truth in enumerate(ex.boxes):
                if len(truth):
                    box, _ = peak_boxes(heat[0, c], size[0, c], input_size, 1, ex.resized_hw)
                    vals.append(max(box_iou(box[0].numpy(), t) for t in truth))
    return float(np.mean(vals)) if vals else float("nan")


def train_locator(train: list[LocateExample], val: list[LocateExample], num_foreground: int, input_size: int,
                  epochs: int = 30, batch: int = 16, lr: float = 2e-3, seed: int = 0, log=print) -> tuple[LocateHead, list]:
    """Train a :class:`LocateHead`; returns the epoch with the best val peak IoU and the per-epoch history."""
    torch.manual_seed(seed)
    dim = train[0].embedding.shape[0]
    locator = LocateHead(num_foreground, dim)
    targets = [centre_targets(ex.boxes, input_size) for ex in train]
    opt = torch.optim.AdamW(locator.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * math.ceil(len(train) / batch))
    best, history, rng = (-1.0, None), [], np.random.default_rng(seed)
    for epoch in range(epochs):
        locator.train()
        t0, losses, order = time.time(), [], rng.permutation(len(train))
        for start in range(0, len(train), batch):
            idx = order[start:start + batch]
            emb = F.dropout2d(torch.stack([train[i].embedding.float() for i in idx]), 0.1)
            heat_t, size_t, weight = (torch.stack(t) for t in zip(*(targets[i] for i in idx)))
            loss = locate_loss(locator, emb, heat_t, size_t, weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        score = peak_iou(locator, val, input_size)
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "val_peak_iou": round(score, 4)})
        log(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f} val peak-box IoU {score:.4f} ({time.time() - t0:.0f} s)")
        if score > best[0]:
            best = (score, copy.deepcopy(locator.state_dict()))
    locator.load_state_dict(best[1])
    return locator.eval(), history


def train_adapter_locators(adapter_dir: str, data: str, epochs: int = 30, limit: int | None = None, log=print) -> dict:
    """Train a localisation head for each segmentation task of the adapter at ``adapter_dir`` and save it there
    (``locate: "off"`` unless already set). Returns ``task_id -> {val_peak_iou, history, ...}``."""
    import usam  # the facade's load (backbone + adapter), imported here: usam imports this package

    model = usam.load(adapters=[adapter_dir])
    adapter, size = model.adapter, model.backbone.input_size
    seg = [t for t, s in adapter.tasks.items() if s.kind == "segmentation"]
    # an adapter with encoder LoRA: its heads see the LoRA embeddings, so its locator learns on them
    store, report = EmbeddingStore(model), {}
    for tid in seg:
        k = adapter.tasks[tid].num_classes - 1
        splits = {name: read_split(Path(data) / name, tasks=[tid])[tid][:limit] for name in ("train", "val")}
        t0 = time.time()
        train, val = (load_examples(store, splits[n], k) for n in ("train", "val"))
        log(f"{tid}: {len(train)} train / {len(val)} val embeddings ({time.time() - t0:.0f} s)")
        t0 = time.time()
        locator, history = train_locator(train, val, k, size, epochs=epochs, log=log)
        adapter.heads[tid].locator = locator
        opts = adapter.config.head_options.setdefault(tid, {})
        opts.setdefault("locate", "off")
        report[tid] = {"train": len(train), "val": len(val), "epochs": epochs, "seconds": round(time.time() - t0),
                       "val_peak_iou": max(h["val_peak_iou"] for h in history), "history": history}
    adapter.config.training["locate"] = report
    adapter.save_pretrained(adapter_dir, model.backbone.image_encoder)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--limit", type=int, default=None, help="at most N images per split (quick check)")
    args = ap.parse_args(argv)
    report = train_adapter_locators(args.adapter, args.data, args.epochs, args.limit)
    print({t: r["val_peak_iou"] for t, r in report.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
