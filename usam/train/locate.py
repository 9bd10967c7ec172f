"""Train an adapter's localisation heads (:class:`usam.heads.locate.LocateHead`) on cached embeddings.

    OMP_NUM_THREADS=1 python -m usam.train.locate adapters/breast [--data DIR] [--epochs 30] [--views 4]

For every segmentation task of the adapter: the embeddings its heads see of the train split
(:class:`~usam.train.cache.EmbeddingStore`: through the adapter's encoder LoRA where it has one, computed once
where missing; with ``--views N`` also of N - 1 augmented views of each train image, as cache-mode training
makes them, cached on disk), targets from the
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

from ..adapters.validate import local_adapter_dir, rewrite_card, write_config
from ..argtypes import positive_int
from ..data.fmc import read_split
from ..errors import UsamError
from ..heads.locate import LocateHead, peak_boxes
from ..ops.metrics import box_iou
from .cache import EmbeddingStore
from .examples import mask_views

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


def load_examples(store, samples, num_foreground: int, views: int = 1, seed: int = 0,
                  desc: str = "locate examples") -> list[LocateExample]:
    """Embeddings (from ``store``, an :class:`~usam.train.cache.EmbeddingStore`) and object boxes of
    segmentation ``samples``; with ``views > 1`` also of views ``1..views-1`` of each image, augmented as cache-mode
    training augments them, the mask moved with the image (:func:`~usam.train.examples.mask_views`, seeded by
    ``seed``)."""
    return [LocateExample(e.embedding[0].half(), object_boxes(mask, e.geometry, num_foreground),
                          tuple(e.geometry.resized_hw))
            for _, e, mask in mask_views(store, samples, views, seed, desc)]


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


#: a new localisation head replaces one the adapter has only when it beats it on val by this much mean peak-box IoU
MIN_GAIN = 0.005


def train_adapter_locators(adapter_dir: str, data: str, epochs: int = 30, limit: int | None = None, views: int = 1,
                           seed: int = 0, log=print) -> dict:
    """Train a localisation head for each segmentation task of the adapter at ``adapter_dir`` and save it there
    (``locate: "off"`` unless already set); ``views``: views per train image (:func:`load_examples`; val is scored
    on the images as read). A task whose adapter already has a head keeps it unless the new one beats it on val by
    :data:`MIN_GAIN` mean peak-box IoU; such an attempt is recorded under ``training.locate_attempt``, the kept heads
    under ``training.locate``, and an adapter where nothing is kept gets its record alone (``heads.safetensors``
    untouched). Returns ``task_id -> {val_peak_iou, val_peak_iou_before, kept, history, ...}``."""
    if views < 1:
        raise UsamError(f"views must be >= 1 (1: the images as read), got {views}")
    if epochs < 1:
        raise UsamError(f"epochs must be >= 1, got {epochs}")
    local_adapter_dir(adapter_dir, "python -m usam.train.locate writes the localisation heads into it")
    import usam  # the facade's load (backbone + adapter), imported here: usam imports this package

    model = usam.load(adapters=[adapter_dir])
    adapter, size = model.adapter, model.backbone.input_size
    seg = [t for t, s in adapter.tasks.items() if s.kind == "segmentation"]
    training = adapter.config.training
    kept_records, attempts = dict(training.get("locate") or {}), dict(training.get("locate_attempt") or {})
    # an adapter with encoder LoRA: its heads see the LoRA embeddings, so its locator learns on them
    store, report = EmbeddingStore(model), {}
    for tid in seg:
        k = adapter.tasks[tid].num_classes - 1
        splits = {name: read_split(Path(data) / name, tasks=[tid])[tid][:limit] for name in ("train", "val")}
        t0 = time.time()
        train = load_examples(store, splits["train"], k, views, seed, f"{tid} train views" if views > 1 else f"{tid} train")
        val = load_examples(store, splits["val"], k, desc=f"{tid} val")
        log(f"{tid}: {len(train)} train ({len(splits['train'])} images x {views} views) / {len(val)} val embeddings "
            f"({time.time() - t0:.0f} s)")
        old = getattr(adapter.heads[tid], "locator", None)
        before = None if old is None else round(peak_iou(old, val, size), 4)
        t0 = time.time()
        locator, history = train_locator(train, val, k, size, epochs=epochs, seed=seed, log=log)
        after = max(h["val_peak_iou"] for h in history)
        kept = before is None or after > before + MIN_GAIN
        opts = adapter.config.head_options.setdefault(tid, {})
        opts.setdefault("locate", "off")
        report[tid] = {"train": len(splits["train"]), "views": views, "val": len(val), "epochs": epochs,
                       "seconds": round(time.time() - t0), "val_peak_iou": after, "val_peak_iou_before": before,
                       "kept": kept, "history": history}
        if kept:
            adapter.heads[tid].locator = locator
            kept_records[tid] = report[tid]
            attempts.pop(tid, None)
            if old is not None:
                log(f"{tid}: the new localisation head beats the one in use on val (peak-box IoU {before} -> {after})"
                    + ("; its automatic masks now follow it: choose the head options again on val "
                       "(scripts/tune_head_options.py)" if opts.get("locate") == "heatmap" else ""))
        else:
            attempts[tid] = report[tid]
            log(f"{tid}: the new localisation head does not beat the one in use on val by {MIN_GAIN} (peak-box IoU "
                f"{before} -> {after}): the adapter keeps it")
    training["locate"] = kept_records
    training.pop("locate_attempt", None)
    if attempts:
        training["locate_attempt"] = attempts
    if any(r["kept"] for r in report.values()):
        adapter.save_pretrained(adapter_dir, model.backbone.image_encoder)
    else:  # the record alone: the weights stay byte for byte
        write_config(adapter_dir, adapter.config)
    rewrite_card(adapter_dir)  # from the config just saved and the adapter's metrics.json
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m usam.train.locate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter", help="a local adapter folder (written in place)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--epochs", type=positive_int, default=30, help="epochs (default 30; the best on val is kept)")
    ap.add_argument("--limit", type=positive_int, default=None, help="at most N images per split (quick check)")
    ap.add_argument("--views", type=positive_int, default=1,
                    help="views per train image: the image as read, then augmented views as cache-mode training "
                         "makes them (cached on disk, shared with a train.views run of the same seed; default 1)")
    ap.add_argument("--seed", type=int, default=0, help="draws of the views' augmentations and of training (default 0)")
    args = ap.parse_args(argv)
    try:
        report = train_adapter_locators(args.adapter, args.data, args.epochs, args.limit, args.views, args.seed)
    except UsamError as exc:
        print(f"usam.train.locate: {exc}", file=sys.stderr)
        return 2
    print({t: {k: r[k] for k in ("val_peak_iou_before", "val_peak_iou", "kept")} for t, r in report.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
