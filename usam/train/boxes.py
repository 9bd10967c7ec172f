"""A box decoder of an adapter's own: the backbone's mask decoder fine-tuned on ground-truth boxes alone.

LiteMedSAM was trained on boxes, and a box alone is what a user draws most; yet its answer to a tight box is not the
best it can give on a given organ (on breast val it gains 0.003 Dice from boxes 5 % larger: MedSAM's training boxes
were 0-20 px larger than the object, at 1024 px). This stage fine-tunes a copy of the backbone's mask decoder on the
segmentation tasks' ground-truth boxes of the adapter's train split, each side of a box moved out by a random
-5 %..+10 % of its length every time it is shown (:data:`BOX_JITTER`), on the bare encoder's embeddings (cached:
:class:`~usam.train.cache.EmbeddingStore`), with SAM's losses (BCE + Dice on the low-res mask, MSE of the predicted
IoU). The step with the best val Dice is kept; then the box decoder answers a user's box alone
(``decoder.box_prompts: boxes``, on the bare encoder's embedding, see :class:`~usam.adapters.config.DecoderSettings`)
only if, through :class:`~usam.predictor.Predictor`, it beats the adapter's present box route on val by
:data:`MIN_GAIN`; otherwise the adapter's weights stay as they were. The figures go to ``training.box_decoder`` of
its ``config.json`` and its card.

    python -m usam.train.boxes adapters/NAME [--data ../shared/data/fmc_uia_dev] [--steps 300] [--lr 3e-5]

It answers a first click's ``box_refine`` too (each candidate re-answered from its own box, as a box alone is);
the heads' automatic masks keep the decoders they use.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..adapters.adapter import PromptDecoder
from ..adapters.validate import local_adapter_dir, rewrite_card, write_config
from ..argtypes import positive_int
from ..backbones.sam_style import sam_decode
from ..errors import UsamError
from ..heads.refine import pin_box_route
from ..io import read_image, read_mask
from ..ops.masks import dice, mask_box
from ..backbones import LOW_RES
from ..predictor import Predictor
from .cache import EmbeddingStore
from .examples import mask_views
from .rows import segmentation_rows

#: how far each side of a ground-truth box moves outward in training, as a fraction of the box's width / height,
#: drawn anew each time it is shown (inward where negative); MedSAM's boxes were 0-20 px larger at 1024 px
BOX_JITTER = (-0.05, 0.10)


@dataclass
class BoxExample:
    """One object of a segmentation sample (or of an augmented view of it): ``embedding (1, C, h, w)`` fp16 of the
    bare encoder with its ``geometry``,
    its tight ground-truth ``box (4,)`` xyxy in original pixels, its mask in model space ``target (1, 1, 256, 256)``
    (the low-res frame, padding 0) and at the original size ``truth (H, W)`` bool."""

    embedding: torch.Tensor
    geometry: object
    box: np.ndarray
    target: torch.Tensor
    truth: np.ndarray


def box_examples(store: EmbeddingStore, samples: list, desc: str = "box examples", views: int = 1,
                 seed: int = 0) -> list[BoxExample]:
    """Every object (foreground class present) of segmentation ``samples``, on ``store``'s embeddings; with
    ``views > 1`` also on views ``1..views-1`` of each image, augmented as cache-mode training augments them
    (:func:`~usam.train.examples.mask_views`, seeded by ``seed``: the views a ``train.views`` run with
    that seed cached are reused), the mask moved with the image. Embeddings are kept in fp16, one per image view."""
    out = []
    for s, emb, gt in mask_views(store, samples, views, seed, desc):
        embedding = emb.embedding.to(torch.float16)
        for c in range(1, s.num_classes):
            truth = gt == c
            if truth.any():
                target = emb.geometry.mask_to_input(truth.astype(np.float32), LOW_RES) > 0.5
                out.append(BoxExample(embedding, emb.geometry, np.asarray(mask_box(truth), np.float64),
                                      target.float()[None, None], truth))
    return out


def jitter_box(box: np.ndarray, hw: tuple[int, int], rng: np.random.Generator,
               jitter: tuple[float, float] = BOX_JITTER) -> np.ndarray:
    """``box (4,)`` xyxy with each side moved outward by ``U(jitter)`` of its width / height, clipped to the
    ``(H, W)`` image."""
    w, h = box[2] - box[0], box[3] - box[1]
    move = rng.uniform(*jitter, size=4) * np.array([w, h, w, h]) * np.array([-1, -1, 1, 1])
    return np.clip(box + move, 0, [hw[1] - 1, hw[0] - 1, hw[1] - 1, hw[0] - 1])


def box_loss(low_res: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's losses for single-mask box answers: BCE + soft Dice of the low-res logits ``(B, 1, 256, 256)``
    against ``target (B, 1, 256, 256)``, plus the MSE of the predicted IoU ``(B, 1)`` against the mask's IoU."""
    low_res = low_res.float()
    bce = F.binary_cross_entropy_with_logits(low_res, target)
    p = low_res.sigmoid()
    soft = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    with torch.no_grad():
        hard = low_res > 0
        inter = (hard & (target > 0.5)).sum((1, 2, 3)).float()
        union = (hard | (target > 0.5)).sum((1, 2, 3)).float().clamp(min=1)
    return bce + soft.mean() + F.mse_loss(iou_pred.float()[:, 0], inter / union)


def _decode_boxes(decoder: PromptDecoder, examples: list[BoxExample], boxes: list[np.ndarray]):
    emb = torch.cat([e.embedding for e in examples]).float()
    b = torch.tensor(np.stack([e.geometry.boxes_to_input(bx[None])[0] for e, bx in zip(examples, boxes)]),
                     dtype=torch.float32)
    return sam_decode(decoder.prompt_encoder, decoder.mask_decoder, emb, boxes=b, multimask_output=False)


@torch.no_grad()
def box_dice(decoder: PromptDecoder, examples: list[BoxExample]) -> float:
    """Mean Dice of ``decoder``'s answers to the tight ground-truth boxes of ``examples``, at the original size."""
    vals = []
    for e in examples:
        low, _ = _decode_boxes(decoder, [e], [e.box])
        vals.append(dice(e.geometry.masks_to_original(low.float())[0, 0].numpy() > 0, e.truth))
    return float(np.mean(vals))


def check_settings(steps: int, lr: float, batch: int, eval_every: int) -> None:
    """Refuse training settings that cannot run (before any model is loaded or image encoded)."""
    if steps < 1 or batch < 1 or eval_every < 1 or not lr > 0:
        raise UsamError(f"steps, batch and eval_every must be >= 1 and lr > 0, got {steps}, {batch}, {eval_every}, {lr}")


def fit_box_decoder(decoder: PromptDecoder, train: list[BoxExample], val: list[BoxExample], steps: int = 300,
                    lr: float = 3e-5, batch: int = 8, seed: int = 0, eval_every: int = 50,
                    log=print) -> tuple[PromptDecoder, list[dict]]:
    """Fine-tune ``decoder``'s mask decoder (its prompt encoder stays) on jittered boxes of ``train`` (AdamW,
    one-cycle), val Dice every ``eval_every`` steps; returns a copy with the best val step's weights (step 0: the
    weights given) and the history (``{"step", "loss", "val_dice"}``, then ``{"kept_step": s}``)."""
    check_settings(steps, lr, batch, eval_every)
    if not train or not val:
        raise UsamError(f"fitting a box decoder needs train and val objects, got {len(train)} and {len(val)}")
    decoder = copy.deepcopy(decoder).float()
    rng = np.random.default_rng(seed)
    decoder.requires_grad_(False)
    params = list(decoder.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    decoder.eval()  # SAM's decoder has no dropout / batch norm: eval changes nothing but is explicit
    best = (box_dice(decoder, val), copy.deepcopy(decoder.state_dict()), 0)
    history = [{"step": 0, "val_dice": round(best[0], 4)}]
    log(f"box decoder: step 0 val Dice {best[0]:.4f} ({len(train)} train / {len(val)} val objects)")
    for step in range(1, steps + 1):
        idx = rng.choice(len(train), min(batch, len(train)), replace=False)
        chosen = [train[i] for i in idx]
        low, iou = _decode_boxes(decoder, chosen, [jitter_box(e.box, e.geometry.original_hw, rng) for e in chosen])
        loss = box_loss(low, iou, torch.cat([e.target for e in chosen]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            score = box_dice(decoder, val)
            history.append({"step": step, "loss": round(float(loss.detach()), 5), "val_dice": round(score, 4)})
            log(f"box decoder: step {step}/{steps} loss {float(loss.detach()):.4f} val Dice {score:.4f}")
            if score > best[0]:
                best = (score, copy.deepcopy(decoder.state_dict()), step)
    decoder.load_state_dict(best[1])
    return decoder.requires_grad_(False), history + [{"kept_step": best[2]}]


def box_dices(model, samples: list, route: str) -> list[float]:
    """Dice of the active adapter's answer to the ground-truth box of every object (foreground class present) of
    segmentation ``samples`` under ``box_prompts: route``, through :class:`~usam.predictor.Predictor` as a user's
    box is answered (the image set, its embeddings cached by content)."""
    predictor, vals = Predictor(model), []
    with model.adapter.decoder.using(box_prompts=route):
        for s in samples:
            gt = read_mask(s.mask_path)
            predictor.set_image(read_image(s.image_path))
            for c in range(1, s.num_classes):
                if (gt == c).any():
                    m, _, _ = predictor.predict(box=mask_box(gt == c), multimask_output=False)
                    vals.append(dice(m[0], gt == c))
    return vals


def route_dice(model, samples: list, route: str) -> float:
    """Mean of :func:`box_dices`."""
    return float(np.mean(box_dices(model, samples, route)))


#: where a box decoder's fine-tuning starts: the backbone's prompt encoder + mask decoder, the adapter's tuned decoder
#: (its LoRA merged; its answers are what ``box_prompts: tuned`` gives), or the adapter's box decoder in use
INITS = ("backbone", "tuned", "boxes")


def initial_box_decoder(model, init: str = "backbone") -> PromptDecoder:
    """A :class:`PromptDecoder` (no gradients) to fine-tune from: a copy of the weights ``init`` names (:data:`INITS`)
    of ``model``'s active adapter; the adapter is not touched."""
    from ..adapters.lora import merged_copy

    out = PromptDecoder(model.backbone).requires_grad_(False)
    decoder = model.adapter.decoder
    if init == "tuned":
        out.prompt_encoder = copy.deepcopy(decoder.prompt_encoder)
        out.mask_decoder = merged_copy(decoder.mask_decoder, ["decoder"] if decoder.lora is not None else [])
    elif init == "boxes":
        if decoder.boxes is None:
            raise UsamError("init 'boxes' needs an adapter with a box decoder (decoder.boxes: separate)")
        out.load_state_dict(decoder.boxes.state_dict())
    elif init != "backbone":
        raise UsamError(f"init must be one of {list(INITS)}, got {init!r}")
    return out.float().requires_grad_(False)


#: how much a box decoder must beat the adapter's box route by on val (mean Dice) to replace it: a re-run of breast
#: with 4 views per image gave 0.9382 -> 0.9384, noise that would have moved every box figure
MIN_GAIN = 0.001

#: fewer val objects than this and the stage warns that its keep-or-not comparison is noisy
FEW_VAL_OBJECTS = 20


def train_box_decoder(adapter_dir: str, data: str, steps: int = 300, lr: float = 3e-5, batch: int = 8,
                      limit: int | None = None, seed: int = 0, eval_every: int = 50, precision: str = "auto",
                      views: int = 1, init: str = "backbone", log=print) -> dict:
    """Fine-tune a box decoder for the adapter in the local folder ``adapter_dir`` on its segmentation tasks' train
    split under ``data`` (:func:`fit_box_decoder`; ``views``: views per train image, see :func:`box_examples`;
    ``init``: where it starts, one of :data:`INITS`), compare it on val with the adapter's box route, and save the
    adapter there (the box decoder and ``box_prompts: boxes`` only if it wins: a fine-tuning step beat the weights
    it started from, and the result beats the route by :data:`MIN_GAIN`). Returns the report, written to
    ``training.box_decoder``; an attempt that loses to a box decoder already in use goes to
    ``training.box_decoder_attempt`` instead, so the record of the one in use stays."""
    check_settings(steps, lr, batch, eval_every)
    if views < 1:
        raise UsamError(f"views must be >= 1 (1: the images as read), got {views}")
    if init not in INITS:
        raise UsamError(f"init must be one of {list(INITS)}, got {init!r}")
    if limit is not None and limit < 1:
        raise UsamError(f"limit must be >= 1 images per task and split (or none), got {limit}")
    local_adapter_dir(adapter_dir, "python -m usam.train.boxes writes the box decoder into it")
    import usam  # the facade's load (backbone + adapter), imported here: usam imports this package

    model = usam.load(adapters=[adapter_dir], precision=precision)
    adapter = model.adapter
    if adapter.decoder is None:
        raise UsamError(f"{adapter_dir} has no tuned decoder (decoder: null) to hold a box decoder")
    if init == "boxes" and adapter.decoder.boxes is None:
        raise UsamError(f"{adapter_dir} has no box decoder to start from (--init boxes); use --init backbone or tuned")
    seg, splits = segmentation_rows(adapter_dir, adapter.tasks, data, limit, "to take boxes from")
    t0 = time.time()
    with model.using_adapter(None):
        store = EmbeddingStore(model)  # the bare encoder's: what a box decoder answers on
    train = box_examples(store, splits["train"], "train boxes", views=views, seed=seed)
    val = box_examples(store, splits["val"], "val boxes")
    if len(val) < FEW_VAL_OBJECTS:
        log(f"warning: {len(val)} val objects only: keeping the box decoder or not is decided on few boxes")
    start = initial_box_decoder(model, init)
    fitted, history = fit_box_decoder(start, train, val, steps, lr, batch, seed, eval_every, log)
    route, old_boxes = adapter.decoder.box_prompts, adapter.decoder.boxes
    present = f"{route!r}" + (" (the box decoder in use)" if route == "boxes" else "")
    before = route_dice(model, splits["val"], route)
    after = None
    if history[-1]["kept_step"] == 0:
        log(f"no fine-tuning step beat the weights it started from ({init}) on val: nothing to keep")
    else:
        adapter.decoder.boxes = fitted
        after = route_dice(model, splits["val"], "boxes")
    kept = after is not None and after > before + MIN_GAIN
    following = [t for t, o in (adapter.config.head_options or {}).items() if o.get("refine_decoder") == "boxes"]
    if kept:
        heads_route = adapter.decoder.heads_box_route
        pinned = pin_box_route(adapter.config.head_options or {}, heads_route)
        adapter.decoder.box_prompts = "boxes"
        adapter.config.decoder["boxes"] = "separate"
        adapter.config.decoder["box_prompts"] = "boxes"
        if pinned:
            log(f"the heads' own boxes keep the '{heads_route}' decoder (refine_decoder set for {pinned})")
        if following:
            log(f"warning: the head options of {following} name the box decoder (refine_decoder: boxes): their "
                "automatic outputs now come from the new one; choose them again on val "
                "(scripts/tune_head_options.py)")
        log(f"the box decoder beats the box route {present} on val ({before:.4f} -> {after:.4f}): a box alone now "
            "goes to it (box_prompts: boxes)")
    else:
        adapter.decoder.boxes = old_boxes
        if after is not None:
            log(f"the box decoder does not beat the box route {present} on val by {MIN_GAIN} "
                f"({before:.4f} -> {after:.4f}): the adapter keeps its box route and weights")
    report = {"tasks": seg, "data": str(data), "limit": limit, "train_images": len(splits["train"]),
              "val_images": len(splits["val"]), "views": views, "init": init, "train_objects": len(train),
              "val_objects": len(val), "steps": steps, "lr": lr, "batch": batch, "eval_every": eval_every, "seed": seed, "jitter": list(BOX_JITTER),
              "precision": model.precision, "val_route_before": route, "val_dice_before": round(before, 4),
              "val_dice_box_decoder": None if after is None else round(after, 4), "kept": kept,
              **({"heads_following": following} if kept and following else {}),
              "seconds": round(time.time() - t0), "history": history}
    key = "box_decoder_attempt" if (not kept and old_boxes is not None) else "box_decoder"
    adapter.config.training[key] = report
    if key == "box_decoder":
        adapter.config.training.pop("box_decoder_attempt", None)
    if kept:
        adapter.save_pretrained(adapter_dir, model.backbone.image_encoder)
    else:  # the record alone: the weights stay byte for byte
        write_config(adapter_dir, adapter.config)
    rewrite_card(adapter_dir)  # from the config just saved and the adapter's metrics.json
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m usam.train.boxes",
        description="Fine-tune a box decoder for an adapter (a mask decoder, the backbone's unless --init says "
                    "otherwise, on jittered ground-truth boxes of its segmentation tasks' train split, on the bare "
                    "encoder's embeddings) and keep it only if it beats the adapter's box route on val by "
                    f"{MIN_GAIN} Dice; the result is recorded in the adapter's config.json "
                    "(training.box_decoder) and card.")
    ap.add_argument("adapter", help="a local adapter folder (written in place)")
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "fmc_uia_dev"
    ap.add_argument("--data", default=str(data), help=f"FMC_UIA root with train/ and val/ (default {data})")
    ap.add_argument("--steps", type=positive_int, default=300, help="optimizer steps (default 300)")
    ap.add_argument("--lr", type=float, default=3e-5, help="peak learning rate, one-cycle (default 3e-5)")
    ap.add_argument("--batch", type=positive_int, default=8, help="boxes per step (default 8)")
    ap.add_argument("--eval-every", type=positive_int, default=50,
                    help="val Dice every N steps; the best step is kept (default 50)")
    ap.add_argument("--limit", type=positive_int, default=None, help="at most N images per task and split (a quick try)")
    ap.add_argument("--seed", type=int, default=0,
                    help="draws of boxes, their jitter and the views' augmentations (default 0)")
    ap.add_argument("--views", type=positive_int, default=1,
                    help="views per train image: the image as read, then augmented views as cache-mode training "
                         "makes them, cached on disk (default 1)")
    ap.add_argument("--precision", default="auto", help="encoder precision of the cached embeddings (default auto)")
    ap.add_argument("--init", choices=INITS, default="backbone",
                    help="start from the backbone's decoder (default), the adapter's tuned decoder (LoRA merged) or "
                         "its box decoder in use")
    args = ap.parse_args(argv)
    try:
        report = train_box_decoder(args.adapter, args.data, args.steps, args.lr, args.batch, args.limit, args.seed,
                                   args.eval_every, args.precision, args.views, args.init)
    except UsamError as exc:
        print(f"usam.train.boxes: {exc}", file=sys.stderr)
        return 2
    print({k: report[k] for k in ("val_route_before", "val_dice_before", "val_dice_box_decoder", "kept")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
