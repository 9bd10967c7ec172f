"""The trainer behind ``usam train``: multi-task adapter training on a frozen SAM backbone.

Three modes:

- ``cache``: the encoder is frozen; embeddings are computed once (progress bar), stored fp16 on disk
  (:mod:`usam.train.cache`) and reused. Heads and the tuned decoder train on them: practical on a CPU. The encoder
  is bare, or, when ``init`` is an adapter with encoder LoRA (e.g. trained in ``lora`` mode on a GPU), carries that
  LoRA frozen: the embeddings are the ones through it and the saved adapter keeps it.
- ``lora``: LoRA in the encoder's attention; images are augmented and encoded every step.
- ``tail``: LoRA in the last ``lora.stages`` encoder stages only; what enters them is computed once for
  ``train.views`` views of each image (the first as read, the others augmented) and cached on disk, so each step
  runs forward + backward through those stages alone (LiteMedSAM stage 3: ~0.5 s per image on one CPU thread,
  ~8x less than ``lora``). It saves the same peft LoRA as ``lora``.

Each step samples one task (``sqrt`` of its size by default) and a batch of its rows (:mod:`usam.train.module` gives
the loss). Validation (:mod:`usam.train.validate`) runs each epoch; the best adapter is kept; an interrupted run
resumes from its last epoch (:mod:`usam.train.state`). Built on ``accelerate``: the same command runs under
``accelerate launch``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from ..adapters.adapter import CLICKS_PREFIX, Adapter, PromptDecoder, attach_adapter
from ..adapters.card import adapter_card
from ..adapters.config import INFERENCE_CHOICES, AdapterConfig
from ..adapters.layout import HEADS_NAME, output_problem
from ..adapters.lora import LoraSettings, add_lora, load_lora_state, lora_parameters, merged_copy
from ..adapters.validate import validate_adapter_dir
from ..data.fmc import Sample
from ..errors import ConfigError
from ..heads.locate import attach_locators
from ..io import dumps_json
from ..model import UsamModel, resolve_precision
from ..tasks.spec import TaskSpec
from .cache import ActivationStore, EmbeddingStore
from .config import TrainConfig, load_config
from .examples import ExampleSource
from .module import TrainModule
from .rows import load_data, task_specs
from .state import ENCODER_LORA_MODES, dump_rank_state, load_state, save_state, state_dir, update_history
from .validate import validate

#: tail mode without ``lora.stages``: LoRA in the last encoder stage only
DEFAULT_TAIL_STAGES = 1


@dataclass
class Run:
    """Everything one training run holds (built by :func:`build_run`)."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: UsamModel
    adapter: Adapter
    specs: dict[str, TaskSpec]
    train_rows: dict[str, list[Sample]]
    val_rows: dict[str, list[Sample]]
    source: ExampleSource
    module: TrainModule
    optimizer: torch.optim.Optimizer
    scheduler: object
    steps: int
    log: object = print
    cache_seconds: float = 0.0  # building the embedding / stage-input cache (one-off; 0 when it was all there)
    best: float = -float("inf")
    history: list = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def out(self) -> Path:
        return Path(self.cfg.output)


def train(config: str | os.PathLike | dict | TrainConfig, overrides: list[str] = (), restart: bool = False,
          log=print, model: UsamModel | None = None) -> Path:
    """Train an adapter as the config says; returns the adapter directory (best validation score)."""
    cfg = config if isinstance(config, TrainConfig) else load_config(config, overrides)
    check_output(cfg)  # before any work: never replace a folder (or file) that is not usam's
    run = build_run(cfg, log, model)
    start = resume(run, restart)
    if not run.history:
        run.history.append({"epoch": 0, "probe_loss": probe_loss(run)})
    t0 = time.time()
    for epoch in range(start, cfg.train["epochs"]):
        losses = run_epoch(run, epoch)
        elapsed = time.time() - t0
        end_epoch(run, epoch, losses, elapsed, eta(elapsed, epoch + 1 - start, cfg.train["epochs"] - epoch - 1))
    if run.main:
        log(f"usam train: done in {time.time() - t0:.0f} s; best val score {run.best:.4f} -> {run.out}")
    if os.environ.get("USAM_DUMP_RANK_STATE"):  # tests: every rank records what it holds after training
        dump_rank_state(Path(os.environ["USAM_DUMP_RANK_STATE"]), run.accelerator, run.model, run.adapter, cfg, run.history)
    run.model.eval()
    run.model.set_adapter(cfg.name)
    return run.out


def check_output(cfg: TrainConfig) -> None:
    """Refuse, before any work, an output that is not a new or empty folder or an adapter usam wrote
    (:func:`usam.adapters.layout.output_problem`); the adapter it replaces is kept until the new one is complete."""
    problem = output_problem(cfg.output)
    if problem:
        raise ConfigError(f"{cfg.source}: output {str(cfg.output)!r} is refused: {problem}")


# ------------------------------------------------------------------------------------------- build
def make_accelerator(cfg: TrainConfig) -> Accelerator:
    mp = cfg.train["mixed_precision"]
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # launched as several processes (accelerate launch / torchrun) on a machine without GPUs: DDP over gloo on the
    # CPU. accelerate only does that when asked for the CPU; otherwise every process would train on its own.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    no_gpu = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    return Accelerator(mixed_precision=mp, cpu=distributed and no_gpu,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def tail_start(cfg: TrainConfig, backbone) -> int | None:
    """First encoder stage that gets LoRA (``lora.stages`` from the end), ``None`` for every stage."""
    stages = cfg.lora.get("stages")
    if cfg.mode == "tail" and stages is None:
        stages = DEFAULT_TAIL_STAGES
    if stages is None or cfg.mode == "cache":
        return None
    if not hasattr(backbone, "encode_from"):
        raise ConfigError(f"{cfg.source}: mode {cfg.mode} with lora.stages needs a backbone whose encoder runs in stages "
                          f"(litemedsam), not {backbone.name!r}")
    total = backbone.num_stages
    if not 1 <= stages < total:
        raise ConfigError(f"{cfg.source}: lora.stages must be 1..{total - 1} for {backbone.name} (its first stage has no attention)")
    return total - stages


def encoder_lora(cfg: TrainConfig, backbone) -> LoraSettings | None:
    """The encoder LoRA of ``lora`` / ``tail`` mode: ``cfg.lora``, its targets restricted to the trained stages."""
    if cfg.mode not in ENCODER_LORA_MODES:
        return None
    settings = cfg.lora.settings()
    start = tail_start(cfg, backbone)
    if start is not None:
        if cfg.lora.targets is not None:
            raise ConfigError(f"{cfg.source}: give lora.stages or lora.targets, not both")
        settings.targets = backbone.stage_targets(start)
    return settings


def build_adapter(cfg: TrainConfig, model: UsamModel, specs: dict[str, TaskSpec]) -> Adapter:
    decoder = None
    if cfg.decoder.tune and any(s.kind == "segmentation" for s in specs.values()):
        decoder = cfg.decoder.to_adapter()
    training = {"mode": cfg.mode, "data_root": str(cfg.data_root), "train": dict(cfg.train), "config": cfg.source}
    start = tail_start(cfg, model.backbone)
    if start is not None:
        training["lora_stages"] = model.backbone.num_stages - start
    if cfg.init:
        training["init"] = str(cfg.init)
    config = AdapterConfig(
        name=cfg.name, backbone=model.backbone.name, backbone_checksum=model.backbone.checksum, tasks=specs,
        lora=encoder_lora(cfg, model.backbone), decoder=decoder, input_size=model.backbone.input_size, training=training,
    )
    return Adapter(config, model.backbone)


def init_from(adapter: Adapter, directory: Path, backbone, given: set = frozenset(),
              log=lambda *_: None) -> tuple[LoraSettings | None, dict | None]:
    """Copy heads / tuned-decoder weights of an existing adapter directory (its tasks must match). A click decoder
    (``decoder.clicks: separate``) the old adapter lacks starts from the backbone's prompt encoder + mask decoder.
    The old adapter's head options and its :data:`~usam.adapters.config.INFERENCE_CHOICES` (chosen on val) come
    along, except the decoder keys in ``given`` (those the training config sets; ``log`` says where one replaces a
    different choice). Returns the old adapter's encoder
    LoRA settings and peft tensors (``None, None`` without one).

    When the new adapter tunes its decoder without LoRA but the old one carried decoder LoRA, the old decoder is
    rebuilt, its LoRA merged into the weights, and the merged weights copied (continue training a LoRA-tuned
    decoder as a fully tuned one).
    """
    check = validate_adapter_dir(Path(directory))
    config, heads = check.config, check.heads
    if set(config.tasks) != set(adapter.tasks):
        raise ConfigError(f"init adapter {str(directory)!r} has tasks {sorted(config.tasks)}, this config {sorted(adapter.tasks)}")
    adapter.config.head_options = dict(config.head_options)
    attach_locators(adapter.heads, adapter.config.head_options)  # the old adapter's localisation heads come along
    new_dec, old_dec = adapter.config.decoder or {}, config.decoder or {}
    if adapter.decoder is not None and old_dec.get("boxes") == "separate" and adapter.decoder.boxes is None:
        # the old adapter's box decoder (usam.train.boxes) comes along: this training never changes it
        new_dec["boxes"] = "separate"
        adapter.decoder.boxes = PromptDecoder(backbone).requires_grad_(False)
    if adapter.decoder is not None:
        for key in INFERENCE_CHOICES:
            if key not in given and key in old_dec:
                new_dec[key] = old_dec[key]
                setattr(adapter.decoder, key, old_dec[key])
            elif key in old_dec and new_dec.get(key) != old_dec[key]:
                log(f"usam train: decoder.{key} {new_dec.get(key)!r} from the config replaces {str(directory)!r}'s "
                    f"{old_dec[key]!r} (chosen on val: leave it out of the config to keep it)")
    if adapter.decoder is not None and old_dec.get("lora") and not new_dec.get("lora"):
        old = Adapter(config, backbone)
        old.load_head_state(heads, str(Path(directory) / HEADS_NAME))
        with torch.no_grad():
            adapter.heads.load_state_dict(old.heads.state_dict(), strict=True)
            adapter.decoder.prompt_encoder.load_state_dict(old.decoder.prompt_encoder.state_dict(), strict=True)
            adapter.decoder.mask_decoder.load_state_dict(merged_copy(old.decoder.mask_decoder).state_dict(), strict=True)
            if old.decoder.boxes is not None:  # then this adapter got one above
                adapter.decoder.boxes.load_state_dict(old.decoder.boxes.state_dict(), strict=True)
    else:
        if adapter.decoder is not None and adapter.decoder.clicks is not None and old_dec.get("clicks") != "separate":
            # a new click decoder on an adapter without one: it starts from the backbone's own weights
            heads = {**{f"decoder.{k}": v for k, v in adapter.decoder.trainable_state().items()
                        if k.startswith(CLICKS_PREFIX)}, **heads}
        adapter.load_head_state(heads, str(Path(directory) / HEADS_NAME))
    return config.lora, check.lora


def setup_adapter(cfg: TrainConfig, model: UsamModel, specs: dict[str, TaskSpec], log) -> tuple[Adapter, list]:
    """Build the adapter (from ``init`` if given), attach it, inject the encoder LoRA; returns it and the trained
    parameters (adapter + encoder LoRA; the backbone frozen)."""
    adapter = build_adapter(cfg, model, specs)
    old_lora = old_state = None
    if cfg.init is not None:
        given = cfg.raw.get("decoder") if isinstance(cfg.raw.get("decoder"), dict) else {}
        old_lora, old_state = init_from(adapter, cfg.init, model.backbone, set(given), log)
        log(f"usam train: starting from the weights of {cfg.init}")
    if cfg.mode == "cache" and old_lora is not None:
        # cache mode on an adapter with encoder LoRA: the LoRA comes along, frozen; the embedding cache holds the
        # embeddings through it (keyed by its weights), so the heads and decoders train on what they will see
        adapter.config.lora, adapter.lora_name = old_lora, cfg.name
        adapter.config.training["encoder_lora"] = f"frozen, from {cfg.init}"
    attach_adapter(model, adapter, cfg.name)
    if adapter.config.lora is not None:
        add_lora(model.backbone.image_encoder, cfg.name, adapter.config.lora)
        if old_state is not None and old_lora == adapter.config.lora:  # the init's encoder LoRA goes on training
            load_lora_state(model.backbone.image_encoder, cfg.name, old_state)
        elif old_state is not None:
            log(f"usam train: {cfg.init}'s encoder LoRA (rank {old_lora.rank}, targets {old_lora.targets!r}) is not "
                "this config's: the encoder LoRA starts afresh")
    model.set_adapter(cfg.name)
    if cfg.train["freeze_heads"]:
        if adapter.decoder is None:
            raise ConfigError(f"{cfg.source}: train.freeze_heads leaves nothing to train without a tuned decoder "
                              "(decoder.tune: true and a segmentation task)")
        adapter.heads.requires_grad_(False)
        if adapter.decoder.clicks is not None:  # the tuned decoder serves the frozen heads: it stays too
            adapter.decoder.requires_grad_(False)
            adapter.decoder.clicks.requires_grad_(True)
    if cfg.train["freeze_decoder"] and adapter.decoder is not None:  # (with freeze_heads: refused by the config)
        adapter.decoder.requires_grad_(False)
    trainable = list(adapter.parameters())
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    if cfg.mode in ENCODER_LORA_MODES:
        lp = lora_parameters(model.backbone.image_encoder, cfg.name)
        for p in lp:
            p.requires_grad_(True)
        trainable += lp
    trainable = [p for p in trainable if p.requires_grad]
    if not trainable:
        raise ConfigError("nothing to train: the config leaves no trainable parameter")
    return adapter, trainable


def build_source(cfg: TrainConfig, model: UsamModel, accelerator: Accelerator, rows: tuple[dict, dict]) -> ExampleSource:
    """The example source of the mode, its cache built first (see :func:`build_across_ranks`)."""
    t, (train_rows, val_rows) = cfg.train, rows
    rank = accelerator.process_index
    if cfg.mode == "lora":
        return ExampleSource(model, "lora", None, augment=bool(t["augment"]), seed=int(t["seed"]) + rank,
                             scale=t["augment_scale"])
    paths = sorted({str(s.image_path) for r in (*train_rows.values(), *val_rows.values()) for s in r})
    if cfg.mode == "tail":
        model.set_adapter(None)  # the stage inputs are the bare encoder's (what enters the LoRA stages)
    # cache mode: the embeddings of the adapter's encoder (bare, or through the frozen LoRA of init: EmbeddingStore)
    no_flip = {str(s.image_path) for r in train_rows.values() for s in r if s.kind == "regression"}
    train_paths = {str(s.image_path) for r in train_rows.values() for s in r}
    views = int(t["views"] or (1 if cfg.mode == "cache" else 4))
    if cfg.mode == "cache":
        store, what = EmbeddingStore(model), "embedding cache"
    else:
        store, what = ActivationStore(model, tail_start(cfg, model.backbone)), "stage-input cache"
    # views are drawn from the config's seed on every rank, so that ranks share one cache; steps draw from seed + rank
    source = ExampleSource(model, cfg.mode, store, augment=bool(t["augment"]), seed=int(t["seed"]), views=views,
                           no_flip=no_flip, scale=t["augment_scale"])
    source.rng = np.random.default_rng(int(t["seed"]) + rank)
    if cfg.mode == "cache" and source.views == 1:
        build_across_ranks(accelerator, paths, lambda ps, desc: source.store.build(ps, desc=desc), what)
    else:
        items = [(p, source.views if p in train_paths else 1) for p in paths]  # validation images: view 0 only
        build_across_ranks(accelerator, items, source.build_views, what)
    model.set_adapter(cfg.name)
    return source


def build_across_ranks(accelerator: Accelerator, items: list, build, desc: str) -> None:
    """``build(items, desc)`` split across ranks (each computes its share), then completed by each rank (nodes without
    a shared cache folder compute what the others wrote elsewhere; with a shared one there is nothing left)."""
    rank, ranks = accelerator.process_index, accelerator.num_processes
    build(items[rank::ranks], f"{desc} (rank {rank})" if ranks > 1 else desc)
    accelerator.wait_for_everyone()
    if ranks > 1:
        build(items, f"{desc} (rank {rank}, not shared)")


def build_run(cfg: TrainConfig, log=print, model: UsamModel | None = None) -> Run:
    """Model, data, adapter, example source, optimizer and schedule of a run, prepared by ``accelerate``."""
    t = cfg.train
    accelerator = make_accelerator(cfg)
    set_seed(int(t["seed"]))
    if model is None:
        model = UsamModel.from_pretrained(cfg.backbone, checkpoint=cfg.checkpoint, precision=cfg.precision)
        if cfg.precision == "auto" and model.precision == "int8":  # adapters learn on the float encoder's outputs
            model.precision = resolve_precision("auto", model.device)
    model.to(accelerator.device)
    train_rows, val_rows = load_data(cfg)
    specs = task_specs(train_rows)
    main_log = log if accelerator.is_main_process else (lambda *_: None)
    main_log(f"usam train: {cfg.name}: mode {cfg.mode}, tasks " + ", ".join(
        f"{k} ({v.kind}, {len(train_rows[k])} train / {len(val_rows.get(k, []))} val)" for k, v in specs.items()))
    adapter, trainable = setup_adapter(cfg, model, specs, main_log)
    t0 = time.perf_counter()
    source = build_source(cfg, model, accelerator, (train_rows, val_rows))
    cache_seconds = time.perf_counter() - t0
    module = TrainModule(model, adapter, t, cfg.mode, tail_start(cfg, model.backbone) if cfg.mode == "tail" else None)
    optimizer = torch.optim.AdamW(trainable, lr=t["lr"], weight_decay=t["weight_decay"])
    n_total = sum(len(r) for r in train_rows.values())
    steps = int(t["steps_per_epoch"] or max(1, math.ceil(n_total / t["batch_size"])))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t["lr"], total_steps=steps * t["epochs"], pct_start=0.1)
    module, optimizer = accelerator.prepare(module, optimizer)
    return Run(cfg, accelerator, model, adapter, specs, train_rows, val_rows, source, module, optimizer, scheduler,
               steps, log, cache_seconds)


# ------------------------------------------------------------------------------------------- epochs
def resume(run: Run, restart: bool) -> int:
    """Load the training state of an interrupted run of this config (unless ``restart``); the first epoch to run."""
    directory = state_dir(run.out)
    if restart or not directory.is_dir():
        return 0
    progress = load_state(directory, run.model, run.adapter, run.cfg, run.optimizer, run.scheduler)
    if progress is None:
        if run.main:
            run.log("usam train: found a training state for a different config: starting afresh (use --restart to silence)")
        return 0
    run.best, run.history = progress["best"], progress["history"]
    if run.main:
        run.log(f"usam train: resuming after epoch {progress['epoch'] + 1} (best score {run.best:.4f})")
    return progress["epoch"] + 1


def task_weights(run: Run) -> tuple[list[str], np.ndarray]:
    """Task ids and their sampling probabilities (``train.sampling`` x ``train.task_weights``); with
    ``train.freeze_heads`` only the segmentation tasks (the others' losses reach no trained weight)."""
    t = run.cfg.train
    sizes = {tid: len(rows) for tid, rows in run.train_rows.items()
             if not t["freeze_heads"] or run.specs[tid].kind == "segmentation"}  # frozen heads: only the decoder learns
    weights = np.array([{"sqrt": math.sqrt, "uniform": lambda n: 1.0, "proportional": float}[t["sampling"]](sizes[k]) for k in sizes])
    weights = weights * np.array([float(t["task_weights"].get(k, 1.0)) for k in sizes])
    if weights.sum() <= 0:
        raise ConfigError("train.task_weights leave every task with weight 0")
    return list(sizes), weights / weights.sum()


def batch_size(run: Run, tid: str) -> int:
    t = run.cfg.train
    return t["batch_size"] if run.specs[tid].kind == "segmentation" else t["batch_size_heads"]


@torch.no_grad()
def probe_loss(run: Run) -> dict[str, float]:
    """Loss on a fixed batch per task, in eval mode with fixed prompts: comparable across epochs."""
    m = run.accelerator.unwrap_model(run.module)
    m.eval()
    out = {}
    for tid, rows in run.train_rows.items():
        batch, inputs = run.source.batch(rows[: batch_size(run, tid)], train=False)
        out[tid] = float(m(run.specs[tid], batch, inputs, 12345))
    m.train()
    return out


def run_epoch(run: Run, epoch: int) -> dict[str, list[float]]:
    """One epoch of ``run.steps`` optimizer steps; the training losses per task."""
    task_ids, weights = task_weights(run)
    rng = np.random.default_rng(int(run.cfg.train["seed"]) * 1000003 + run.accelerator.process_index + epoch)
    run.module.train()
    losses = {k: [] for k in task_ids}
    bar = tqdm(range(run.steps), desc=f"epoch {epoch + 1}/{run.cfg.train['epochs']}", disable=not run.main, leave=False)
    for _ in bar:
        tid = task_ids[int(rng.choice(len(task_ids), p=weights))]
        rows = run.train_rows[tid]
        idx = rng.choice(len(rows), size=min(batch_size(run, tid), len(rows)), replace=False)
        batch, inputs = run.source.batch([rows[i] for i in idx], train=True)
        with run.accelerator.autocast():
            loss = run.module(run.specs[tid], batch, inputs, int(rng.integers(2**31)))
        run.accelerator.backward(loss)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        losses[tid].append(float(loss.detach()))
        bar.set_postfix(task=tid, loss=f"{losses[tid][-1]:.3f}")
    return losses


def eta(seconds: float, done: int, left: int) -> str:
    """``'ETA 12 min'``: the epochs ``left`` at the mean pace of the ``done`` ones of this process (validation included)."""
    if left <= 0:
        return "last epoch"
    rest = seconds / max(done, 1) * left
    return f"ETA {rest / 60:.0f} min" if rest >= 90 else f"ETA {rest:.0f} s"


def end_epoch(run: Run, epoch: int, losses: dict[str, list[float]], seconds: float, eta_text: str = "") -> None:
    """Validate, record the epoch, save the adapter if it improved and the training state (rank 0)."""
    unwrapped = run.accelerator.unwrap_model(run.module)
    val = validate(unwrapped, run.source, run.val_rows, run.specs) if run.val_rows else {}
    score = float(np.mean([m["score"] for m in val.values()])) if val else -float(np.mean([np.mean(v) for v in losses.values() if v]))
    record = {"epoch": epoch + 1, "train_loss": {k: float(np.mean(v)) for k, v in losses.items() if v},
              "probe_loss": probe_loss(run), "val": val, "score": score, "seconds": round(seconds, 1)}
    run.history.append(record)
    if run.main:
        run.log(f"usam train: epoch {epoch + 1}/{run.cfg.train['epochs']} ({seconds / 60:.1f} min{', ' + eta_text if eta_text else ''}): loss " + ", ".join(f"{k} {v:.4f}" for k, v in record["train_loss"].items())
                + f"; val score {score:.4f} " + dumps_json({k: {m: round(x, 4) for m, x in v.items()} for k, v in val.items()}))
        if score > run.best:
            run.best = score
            save_adapter(run, val, epoch)
        else:
            update_history(run.out, run.history)
        save_state(state_dir(run.out), run.model, run.adapter, run.cfg, run.optimizer, run.scheduler,
                   {"epoch": epoch, "best": run.best, "history": run.history})
    run.accelerator.wait_for_everyone()


def save_adapter(run: Run, val: dict, epoch: int) -> None:
    """Write the adapter (best so far): heads, tuned decoder, encoder LoRA; detection boxes refined by the decoder
    where that scored better on validation (with ``train.freeze_heads`` the heads and their options stay init's)."""
    adapter = run.adapter
    if not run.cfg.train["freeze_heads"]:  # init's other options (a localisation head, ...) are kept
        options = {tid: dict(o) for tid, o in adapter.config.head_options.items()}
        for tid, m in val.items():
            if "iou_refined" in m:
                opts = options.setdefault(tid, {})
                if m["iou_refined"] > m["iou"]:
                    opts.update(refine_with_decoder=True, refine_decoder="tuned")
                else:
                    opts.pop("refine_with_decoder", None), opts.pop("refine_decoder", None)
        adapter.config.head_options = {tid: o for tid, o in options.items() if o}
    metrics = {"best_epoch": epoch + 1, "val": val, "history": run.history}
    adapter.save_pretrained(run.out, run.model.backbone.image_encoder, metrics=metrics, card=adapter_card(adapter.config, metrics))
