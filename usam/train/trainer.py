"""The trainer behind ``usam train``: multi-task adapter training on a frozen SAM backbone.

Two modes:

- ``cache``: the encoder stays bare; embeddings are computed once (progress bar), stored fp16 on disk
  (:mod:`usam.train.cache`) and reused. Heads and the tuned decoder train on them: practical on a CPU.
- ``lora``: LoRA in the encoder's attention; images are augmented and encoded every step.

Each step samples one task (``sqrt`` of its size by default) and a batch of its rows. Segmentation trains
the automatic head and, when the decoder is tuned, interactive prompts simulated as a person gives them
(:mod:`usam.ops.clicks`). Validation runs each epoch; the best adapter is kept; an interrupted run
resumes from its last epoch. Built on ``accelerate``: the same command runs under ``accelerate launch``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..adapters.adapter import Adapter, AdapterConfig, attach_adapter
from ..backbones import LOW_RES
from ..data.fmc import Sample, read_split
from ..tasks.spec import TaskSpec
from ..errors import ConfigError, DataError
from ..io import dumps_json, read_image, read_mask, write_text_atomic
from ..adapters.lora import LoraSettings, add_lora, lora_parameters, merged_copy
from ..model import UsamModel
from ..ops import clicks
from ..ops.masks import dice, mask_box
from .cache import EmbeddingStore
from .config import TrainConfig, load_config
from .losses import box_loss, keypoint_loss, mask_loss, prompted_mask_loss
from .targets import Target, make_target

STATE_DIR = ".train_state"


# ------------------------------------------------------------------------------------------- data
def _limit(split: dict[str, list[Sample]], limit: int | None) -> dict[str, list[Sample]]:
    return {t: rows[:limit] if limit else rows for t, rows in split.items()}


def load_data(cfg: TrainConfig) -> tuple[dict[str, list[Sample]], dict[str, list[Sample]]]:
    """Train and validation rows per task from an FMC_UIA root, a split dir or an images/+masks/ folder."""
    root = cfg.data_root
    if (root / cfg.train_split / "csv_files").is_dir():
        train = read_split(root / cfg.train_split, tasks=cfg.tasks)
        val = read_split(root / cfg.val_split, tasks=cfg.tasks) if (root / cfg.val_split / "csv_files").is_dir() else {}
    elif (root / "csv_files").is_dir():
        train, val = read_split(root, tasks=cfg.tasks), {}
    elif (root / "images").is_dir():
        from ..data.folder import read_folder

        train, val = read_folder(root), {}
        if cfg.tasks:
            train = {t: r for t, r in train.items() if t in cfg.tasks}
    else:
        raise DataError(f"data root {str(root)!r} has neither {cfg.train_split}/csv_files, csv_files nor images/")
    if not train:
        raise DataError(f"no training rows found under {str(root)!r} for tasks {cfg.tasks or 'all'}")
    if cfg.tasks:
        missing = [t for t in cfg.tasks if t not in train]
        if missing:
            raise DataError(f"tasks {missing} are not in the training data at {str(root)!r} (found {sorted(train)})")
    if not val:  # hold out a fixed 15 % of the images for validation
        rng = random.Random(cfg.train["seed"])
        new_train, val = {}, {}
        for t, rows in train.items():
            idx = list(range(len(rows)))
            rng.shuffle(idx)
            n_val = max(1, round(0.15 * len(rows))) if len(rows) > 3 else 0
            val[t] = [rows[i] for i in sorted(idx[:n_val])]
            new_train[t] = [rows[i] for i in sorted(idx[n_val:])]
        train = new_train
    val = {t: rows for t, rows in val.items() if t in train and rows}
    val_limit = cfg.train.get("val_limit")
    return _limit(train, cfg.limit), _limit(val, val_limit or cfg.limit)


def task_specs(train: dict[str, list[Sample]]) -> dict[str, TaskSpec]:
    specs = {}
    for tid, rows in train.items():
        r = rows[0]
        n = max(max((s.num_classes for s in rows), default=1), r.num_classes)
        specs[tid] = TaskSpec(task_id=tid, kind=r.kind, num_classes=n, class_names=r.class_names)
    return specs


@dataclass
class Example:
    sample: Sample
    target: Target
    embedding: torch.Tensor | None  # (C, h, w), cache mode
    geometry: object


class ExampleSource:
    """Turns rows into (embedding or image tensor, target) examples; cache mode memoises them."""

    def __init__(self, model: UsamModel, mode: str, store: EmbeddingStore | None, augment: bool, seed: int):
        self.model, self.mode, self.store = model, mode, store
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._memo: dict[int, Example] = {}

    def cached(self, sample: Sample) -> Example:
        key = id(sample)
        if key not in self._memo:
            emb = self.store.get(sample.image_path)
            self._memo[key] = Example(sample, make_target(sample, emb.geometry), emb.embedding[0].to(torch.float16), emb.geometry)
        return self._memo[key]

    def fresh(self, sample: Sample, augment: bool) -> tuple[torch.Tensor, Example]:
        """Read (and augment) the image; returns the model input ``(1, 3, S, S)`` and the example."""
        image = read_image(sample.image_path)
        mask = read_mask(sample.mask_path) if sample.kind == "segmentation" else None
        box = np.asarray(sample.box, dtype=np.float64) if sample.box is not None else None
        points = sample.points
        if augment:
            from ..data.augment import Augment

            flip = sample.kind not in ("regression", "detection")
            image, mask, box, points = Augment(p=0.5, flip=flip, rng=self.rng)(image, mask=mask, box=box, points=points)
        x, geo = self.model.backbone.preprocess(image)
        return x, Example(sample, make_target(sample, geo, mask=mask, box=box, points=points), None, geo)


# ------------------------------------------------------------------------------------------- module
class TrainModule(nn.Module):
    """Adapter + backbone wrapped for ``accelerate``: ``forward`` returns the loss of one task batch."""

    def __init__(self, model: UsamModel, adapter: Adapter, settings: dict):
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.settings = settings

    def embeddings(self, batch: list[Example], inputs: torch.Tensor | None) -> torch.Tensor:
        if inputs is not None:
            return self.model.backbone.encode(inputs)
        return torch.stack([e.embedding for e in batch]).to(self.model.device).float()

    def forward(self, task: TaskSpec, batch: list[Example], inputs: torch.Tensor | None, seed: int) -> torch.Tensor:
        emb = self.embeddings(batch, inputs)
        head = self.adapter.heads[task.task_id]
        dev = emb.device
        size = float(self.model.backbone.input_size)
        if task.kind == "classification":
            labels = torch.tensor([e.target.label for e in batch], device=dev)
            return nn.functional.cross_entropy(head(emb), labels)
        if task.kind == "detection":
            target = torch.tensor(np.stack([e.target.box for e in batch]), dtype=torch.float32, device=dev)
            return box_loss(head(emb), target, size)
        if task.kind == "regression":
            target = torch.tensor(np.stack([e.target.points for e in batch]), dtype=torch.float32, device=dev)
            return keypoint_loss(head(emb)[1], target, size)
        return self.segmentation_loss(task, batch, emb, np.random.default_rng(seed))

    def segmentation_loss(self, task: TaskSpec, batch: list[Example], emb: torch.Tensor, rng) -> torch.Tensor:
        dev = emb.device
        maps = np.stack([e.target.class_map for e in batch])  # (B, 256, 256)
        k = task.num_classes - 1
        onehot = torch.tensor(np.stack([maps == c for c in range(1, k + 1)], axis=1), dtype=torch.float32, device=dev)
        decoder = self.adapter.decoder or self.model.backbone
        logits, _ = self.adapter.heads[task.task_id](decoder, emb)
        loss = self.settings["auto_weight"] * mask_loss(logits, onehot).mean()
        if self.adapter.decoder is not None:
            loss = loss + self.prompted_loss(maps, emb, rng)
        return loss

    def prompted_loss(self, maps: np.ndarray, emb: torch.Tensor, rng) -> torch.Tensor:
        """Simulated interaction on one random present class per image: a jittered box, or clicks with refinement."""
        dev = emb.device
        scale = self.model.backbone.input_size / LOW_RES
        truths, keep = [], []
        for i, m in enumerate(maps):
            present = [c for c in np.unique(m) if c != 0]
            if present:
                truths.append(m == rng.choice(present))
                keep.append(i)
        if not keep:
            return emb.sum() * 0.0
        emb = emb[keep]
        target = torch.tensor(np.stack(truths)[:, None], dtype=torch.float32, device=dev)
        decoder = self.adapter.decoder
        lo = int(self.settings["click_iters_min"] or self.settings["click_iters"])
        hi = int(self.settings["click_iters"])
        boxes = None
        if rng.random() < self.settings["box_prob"]:
            # a jittered box, followed by 0..box_click_iters corrective clicks (the box stays in the prompt)
            boxes = np.stack([clicks.jitter_box(mask_box(t), t.shape, rng) for t in truths]) * scale
            boxes = torch.tensor(boxes, dtype=torch.float32, device=dev)
            iters = 1 + int(rng.integers(0, int(self.settings["box_click_iters"]) + 1))
            pts, labels = [[] for _ in truths], [[] for _ in truths]
        else:
            iters = int(rng.integers(lo, hi + 1))
            pts = [[clicks.innermost_point(t, rng, top_fraction=0.3)] for t in truths]
            labels = [[1] for _ in truths]
        prev, total, n_loss = None, 0.0, 0
        for it in range(iters):
            points = None
            if pts[0]:
                coords = torch.tensor(np.array(pts, dtype=np.float32) * scale, device=dev)
                points = (coords, torch.tensor(np.array(labels), device=dev))
            multimask = it == 0 and boxes is None
            # gradients through the first and the last interaction; the ones between only place clicks
            grad = it == 0 or it + 1 == iters
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                logits, iou = decoder.decode(emb, points=points, boxes=boxes, mask_input=prev, multimask_output=multimask)
            if grad:
                total = total + prompted_mask_loss(logits, iou, target)
                n_loss += 1
            with torch.no_grad():
                pick = iou.argmax(dim=1)
                best = logits[torch.arange(len(keep)), pick][:, None]
            prev = best.detach()
            if it + 1 < iters:
                pred = (best[:, 0] > 0).cpu().numpy()
                for i, t in enumerate(truths):
                    nxt = clicks.next_click(pred[i], t)
                    if nxt is None:  # already perfect: repeat the last click (or a centre click after a box)
                        nxt = ((pts[i][-1][0], pts[i][-1][1]), labels[i][-1]) if pts[i] else (clicks.innermost_point(t), 1)
                    pts[i].append(nxt[0])
                    labels[i].append(nxt[1])
        return total / n_loss


# ------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(module: TrainModule, source: ExampleSource, val: dict[str, list[Sample]], specs: dict[str, TaskSpec]) -> dict:
    """Per-task validation metrics in model space (fast); the official metrics come from ``usam evaluate``."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    module.eval()
    model, adapter = module.model, module.adapter
    results = {}
    for tid, rows in val.items():
        spec = specs[tid]
        head = adapter.heads[tid]
        outs, metrics = [], {}
        for s in rows:
            if source.mode == "cache":
                ex = source.cached(s)
                emb = ex.embedding[None].float().to(model.device)
            else:
                x, ex = source.fresh(s, augment=False)
                emb = model.backbone.encode(x.to(model.device))
            outs.append((ex, emb))
        if spec.kind == "classification":
            probs = np.concatenate([head(e).softmax(-1).cpu().numpy() for _, e in outs])
            y = np.array([ex.target.label for ex, _ in outs])
            metrics["accuracy"] = float(accuracy_score(y, probs.argmax(1)))
            try:
                metrics["auc"] = float(roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else
                                       roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))
            except ValueError:
                metrics["auc"] = float("nan")
            metrics["score"] = metrics["auc"] if math.isfinite(metrics["auc"]) else metrics["accuracy"]
        elif spec.kind == "detection":
            from torchvision.ops import box_iou

            from ..heads.refine import refine_box

            ious, refined = [], []
            for ex, e in outs:
                raw = head(e).float()
                truth = torch.tensor(ex.target.box[None], dtype=torch.float32)
                ious.append(float(box_iou(raw, truth)[0, 0]))
                if adapter.decoder is not None:
                    box = refine_box(adapter.decoder, e, raw[0].cpu().numpy(), model.backbone.input_size, route="tuned")
                    refined.append(float(box_iou(torch.tensor(box[None], dtype=torch.float32), truth)[0, 0]))
            metrics["iou"] = float(np.mean(ious))
            if refined:
                metrics["iou_refined"] = float(np.mean(refined))
            metrics["score"] = max(metrics["iou"], metrics.get("iou_refined", 0.0))
        elif spec.kind == "regression":
            errs = []
            for ex, e in outs:
                pred = ex.geometry.points_to_original(head(e)[1][0].float().cpu().numpy())
                truth = ex.geometry.points_to_original(ex.target.points)
                errs.append(float(np.linalg.norm(pred - truth, axis=1).mean()))
            metrics["mre_px"] = float(np.mean(errs))
            metrics["score"] = float(math.exp(-metrics["mre_px"] / 50))
        else:
            metrics.update(_validate_segmentation(module, outs, spec))
        results[tid] = metrics
    module.train()
    return results


def _validate_segmentation(module: TrainModule, outs, spec: TaskSpec) -> dict:
    from ..heads.automask import logits_to_classes

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
            b = torch.tensor(mask_box(t)[None] * scale, dtype=torch.float32)
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
        coords = torch.tensor([pts], dtype=torch.float32) * scale
        lg, iou = decoder.decode(emb, points=(coords, torch.tensor([labels])), mask_input=prev, multimask_output=k == 0)
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


# ------------------------------------------------------------------------------------------- training
def _config_hash(cfg: TrainConfig) -> str:
    raw = {k: v for k, v in cfg.raw.items() if k not in ("output",)}
    raw["_train"] = {k: v for k, v in cfg.train.items() if k != "epochs"}
    return hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_adapter(cfg: TrainConfig, model: UsamModel, specs: dict[str, TaskSpec]) -> Adapter:
    decoder = None
    if cfg.decoder.tune and any(s.kind == "segmentation" for s in specs.values()):
        decoder = cfg.decoder.to_adapter()
    config = AdapterConfig(
        name=cfg.name, backbone=model.backbone.name, backbone_checksum=model.backbone.checksum, tasks=specs,
        lora=cfg.lora.settings() if cfg.mode == "lora" else None, decoder=decoder,
        input_size=model.backbone.input_size,
        training={"mode": cfg.mode, "data_root": str(cfg.data_root), "train": dict(cfg.train), "config": cfg.source,
                  **({"init": str(cfg.init)} if cfg.init else {})},
    )
    return Adapter(config, model.backbone)


def train(config: str | os.PathLike | dict | TrainConfig, overrides: list[str] = (), restart: bool = False,
          log=print, model: UsamModel | None = None) -> Path:
    """Train an adapter as the config says; returns the adapter directory (best validation score)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, TrainConfig) else load_config(config, overrides)
    check_output(cfg)  # before any work: never replace a folder (or file) that is not usam's
    t = cfg.train
    mp = t["mixed_precision"]
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # launched as several processes (accelerate launch / torchrun) on a machine without GPUs: DDP over gloo on the
    # CPU. accelerate only does that when asked for the CPU; otherwise every process would train on its own.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    no_gpu = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    accelerator = Accelerator(mixed_precision=mp, cpu=distributed and no_gpu,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accelerator.is_main_process
    set_seed(int(t["seed"]))
    if model is None:
        model = UsamModel.from_pretrained(cfg.backbone, checkpoint=cfg.checkpoint, precision=cfg.precision)
    model.to(accelerator.device)
    train_rows, val_rows = load_data(cfg)
    specs = task_specs(train_rows)
    if main:
        log(f"usam train: {cfg.name}: mode {cfg.mode}, tasks " + ", ".join(f"{k} ({v.kind}, {len(train_rows[k])} train / {len(val_rows.get(k, []))} val)" for k, v in specs.items()))
    adapter = build_adapter(cfg, model, specs)
    if cfg.init is not None:
        _init_from(adapter, cfg.init, model.backbone)
        if main:
            log(f"usam train: starting from the weights of {cfg.init}")
    attach_adapter(model, adapter, cfg.name)
    if cfg.mode == "lora":
        add_lora(model.backbone.image_encoder, cfg.name, adapter.config.lora)
    model.set_adapter(cfg.name)
    trainable = [p for p in adapter.parameters()]
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    if cfg.mode == "lora":
        lp = lora_parameters(model.backbone.image_encoder, cfg.name)
        for p in lp:
            p.requires_grad_(True)
        trainable += lp
    trainable = [p for p in trainable if p.requires_grad]
    if not trainable:
        raise ConfigError("nothing to train: the config leaves no trainable parameter")

    store = None
    if cfg.mode == "cache":
        store = EmbeddingStore(model)
        paths = sorted({str(s.image_path) for rows in (*train_rows.values(), *val_rows.values()) for s in rows})
        mine = paths[accelerator.process_index::accelerator.num_processes]
        model.set_adapter(None)
        store.build(mine, desc=f"embedding cache (rank {accelerator.process_index})" if accelerator.num_processes > 1 else "embedding cache")
        accelerator.wait_for_everyone()
        if accelerator.num_processes > 1:  # nodes without a shared cache folder: compute what the others wrote elsewhere
            store.build(paths, desc=f"embedding cache (rank {accelerator.process_index}, not shared)")
        model.set_adapter(cfg.name)
    source = ExampleSource(model, cfg.mode, store, augment=bool(t["augment"]), seed=int(t["seed"]) + accelerator.process_index)

    module = TrainModule(model, adapter, t)
    optimizer = torch.optim.AdamW(trainable, lr=t["lr"], weight_decay=t["weight_decay"])
    n_total = sum(len(r) for r in train_rows.values())
    steps = int(t["steps_per_epoch"] or max(1, math.ceil(n_total / t["batch_size"])))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t["lr"], total_steps=steps * t["epochs"], pct_start=0.1)
    module, optimizer = accelerator.prepare(module, optimizer)

    # resume
    out = Path(cfg.output)
    state_dir = out.parent / f".{out.name}{STATE_DIR}"
    start_epoch, best, history = 0, -float("inf"), []
    chash = _config_hash(cfg)
    if state_dir.is_dir() and not restart:
        meta = json.loads((state_dir / "state.json").read_text())
        if meta.get("config_hash") == chash:
            params = load_file(str(state_dir / "trainable.safetensors"))
            named = dict(_trainable_named(model, adapter, cfg))
            with torch.no_grad():
                for k, v in params.items():
                    named[k].copy_(v)
            optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", map_location="cpu", weights_only=True))
            scheduler.load_state_dict(meta["scheduler"])
            start_epoch, history = meta["epoch"] + 1, meta["history"]
            best = -float("inf") if meta.get("best") is None else float(meta["best"])  # -inf is stored as null
            if main:
                log(f"usam train: resuming after epoch {meta['epoch'] + 1} (best score {best:.4f})")
        elif main:
            log("usam train: found a training state for a different config: starting afresh (use --restart to silence)")

    sizes = {tid: len(rows) for tid, rows in train_rows.items()}
    weights = np.array([{"sqrt": math.sqrt, "uniform": lambda n: 1.0, "proportional": float}[t["sampling"]](sizes[k]) for k in sizes])
    weights = weights * np.array([float(t["task_weights"].get(k, 1.0)) for k in sizes])
    if weights.sum() <= 0:
        raise ConfigError("train.task_weights leave every task with weight 0")
    weights = weights / weights.sum()
    task_ids = list(sizes)
    base_seed = int(t["seed"]) * 1000003 + accelerator.process_index
    probe = {tid: rows[: (t["batch_size"] if specs[tid].kind == "segmentation" else t["batch_size_heads"])]
             for tid, rows in train_rows.items()}

    @torch.no_grad()
    def probe_loss() -> dict[str, float]:
        """Loss on a fixed batch per task, in eval mode with fixed prompts: comparable across epochs."""
        m = accelerator.unwrap_model(module)
        m.eval()
        out = {}
        for tid, rows in probe.items():
            if cfg.mode == "cache":
                batch, inputs = [source.cached(r) for r in rows], None
            else:
                pairs = [source.fresh(r, augment=False) for r in rows]
                batch, inputs = [p[1] for p in pairs], torch.cat([p[0] for p in pairs]).to(accelerator.device)
            out[tid] = float(m(specs[tid], batch, inputs, 12345))
        m.train()
        return out

    if not history:
        history.append({"epoch": 0, "probe_loss": probe_loss()})
    t0 = time.time()
    for epoch in range(start_epoch, t["epochs"]):
        rng = np.random.default_rng(base_seed + epoch)
        module.train()
        losses = {k: [] for k in task_ids}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{t['epochs']}", disable=not main, leave=False)
        for step in bar:
            tid = task_ids[int(rng.choice(len(task_ids), p=weights))]
            rows = train_rows[tid]
            bs = t["batch_size"] if specs[tid].kind == "segmentation" else t["batch_size_heads"]
            idx = rng.choice(len(rows), size=min(bs, len(rows)), replace=False)
            if cfg.mode == "cache":
                batch, inputs = [source.cached(rows[i]) for i in idx], None
            else:
                pairs = [source.fresh(rows[i], augment=bool(t["augment"])) for i in idx]
                batch, inputs = [p[1] for p in pairs], torch.cat([p[0] for p in pairs]).to(accelerator.device)
            with accelerator.autocast():
                loss = module(specs[tid], batch, inputs, int(rng.integers(2**31)))
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses[tid].append(float(loss.detach()))
            bar.set_postfix(task=tid, loss=f"{losses[tid][-1]:.3f}")
        unwrapped = accelerator.unwrap_model(module)
        val = validate(unwrapped, source, val_rows, specs) if val_rows else {}
        score = float(np.mean([m["score"] for m in val.values()])) if val else -float(np.mean([np.mean(v) for v in losses.values() if v]))
        record = {"epoch": epoch + 1, "train_loss": {k: float(np.mean(v)) for k, v in losses.items() if v},
                  "probe_loss": probe_loss(), "val": val,
                  "score": score, "seconds": round(time.time() - t0, 1)}
        history.append(record)
        if main:
            log(f"usam train: epoch {epoch + 1}: loss " + ", ".join(f"{k} {v:.4f}" for k, v in record["train_loss"].items())
                + f"; val score {score:.4f} " + dumps_json({k: {m: round(x, 4) for m, x in v.items()} for k, v in val.items()}))
            improved = score > best
            if improved:
                best = score
                adapter.config.head_options = {
                    tid: {"refine_with_decoder": True, "refine_decoder": "tuned"} for tid, m in val.items()
                    if "iou_refined" in m and m["iou_refined"] > m["iou"]
                }
                metrics = {"best_epoch": epoch + 1, "val": val, "history": history}
                adapter.save_pretrained(out, model.backbone.image_encoder if cfg.mode == "lora" else None, metrics=metrics,
                                        card=_card(cfg, adapter, metrics))
            else:
                _update_history(out, history)
            _save_state(state_dir, model, adapter, cfg, optimizer, scheduler, epoch, best, history, chash)
        accelerator.wait_for_everyone()
    if main:
        log(f"usam train: done in {time.time() - t0:.0f} s; best val score {best:.4f} -> {out}")
    if os.environ.get("USAM_DUMP_RANK_STATE"):  # tests: every rank records what it holds after training
        _dump_rank_state(Path(os.environ["USAM_DUMP_RANK_STATE"]), accelerator, model, adapter, cfg, history)
    model.eval()
    model.set_adapter(cfg.name)
    return out


def check_output(cfg: TrainConfig) -> None:
    """Refuse, before any work, an output that is not a new or empty folder or an adapter usam wrote
    (:func:`usam.adapters.adapter.output_problem`); the adapter it replaces is kept until the new one is complete."""
    from ..adapters.layout import output_problem

    problem = output_problem(cfg.output)
    if problem:
        raise ConfigError(f"{cfg.source}: output {str(cfg.output)!r} is refused: {problem}")


def _init_from(adapter: Adapter, directory: Path, backbone) -> None:
    """Copy heads / tuned-decoder weights of an existing adapter directory (its tasks must match).

    When the new adapter tunes its decoder without LoRA but the old one carried decoder LoRA, the old decoder is
    rebuilt, its LoRA merged into the weights, and the merged weights copied (continue training a LoRA-tuned
    decoder as a fully tuned one).
    """
    from ..adapters.layout import HEADS_NAME
    from ..adapters.validate import validate_adapter_dir

    check = validate_adapter_dir(Path(directory))
    config, heads = check.config, check.heads
    if set(config.tasks) != set(adapter.tasks):
        raise ConfigError(f"init adapter {str(directory)!r} has tasks {sorted(config.tasks)}, this config {sorted(adapter.tasks)}")
    new_dec, old_dec = adapter.config.decoder or {}, config.decoder or {}
    if adapter.decoder is not None and old_dec.get("lora") and not new_dec.get("lora"):
        old = Adapter(config, backbone)
        old.load_head_state(heads, str(Path(directory) / HEADS_NAME))
        with torch.no_grad():
            adapter.heads.load_state_dict(old.heads.state_dict(), strict=True)
            adapter.decoder.prompt_encoder.load_state_dict(old.decoder.prompt_encoder.state_dict(), strict=True)
            adapter.decoder.mask_decoder.load_state_dict(merged_copy(old.decoder.mask_decoder).state_dict(), strict=True)
    else:
        adapter.load_head_state(heads, str(Path(directory) / HEADS_NAME))
    adapter.config.head_options = dict(config.head_options)


def _trainable_named(model, adapter, cfg):
    for n, p in adapter.named_parameters():
        if p.requires_grad:
            yield f"adapter.{n}", p
    if cfg.mode == "lora":
        for n, p in model.backbone.image_encoder.named_parameters():
            if "lora_" in n and f".{cfg.name}." in n:
                yield f"encoder.{n}", p


def _dump_rank_state(directory: Path, accelerator, model, adapter, cfg, history) -> None:
    """``directory/rank<i>.json``: SHA-256 of this rank's trainable tensors, its encoder passes and its history."""
    digest = hashlib.sha256()
    named = sorted(_trainable_named(model, adapter, cfg), key=lambda kv: kv[0])
    for k, p in named:
        digest.update(k.encode())
        digest.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    directory.mkdir(parents=True, exist_ok=True)
    rank = accelerator.process_index
    write_text_atomic(directory / f"rank{rank}.json", dumps_json({
        "rank": rank, "world_size": accelerator.num_processes, "trainable_sha256": digest.hexdigest(),
        "trainable_tensors": len(named), "encoder_calls": model.encoder_calls, "history": history,
    }, default=float))


def _save_state(state_dir: Path, model, adapter, cfg, optimizer, scheduler, epoch, best, history, chash) -> None:
    from safetensors.torch import save_file

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: p.detach().cpu().contiguous() for k, p in _trainable_named(model, adapter, cfg)}, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(dumps_json({"epoch": epoch, "best": best, "history": history, "config_hash": chash,
                                                "scheduler": scheduler.state_dict()}, default=float))
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def _update_history(out: Path, history: list) -> None:
    f = out / "metrics.json"
    if f.exists():
        m = json.loads(f.read_text())
        m["history"] = history
        write_text_atomic(f, dumps_json(m, indent=2) + "\n")


def _card(cfg: TrainConfig, adapter: Adapter, metrics: dict) -> str:
    from ..adapters.card import adapter_card

    return adapter_card(adapter.config, metrics)
