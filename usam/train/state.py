"""Training state beside the adapter output (``.<name>.train_state/``): resume an interrupted run.

``trainable.safetensors`` (every trained tensor: adapter heads / decoder, encoder LoRA), ``optimizer.pt`` and
``state.json`` (epoch, best score, history, scheduler, a hash of the config), replaced atomically each epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import dumps_json, write_text_atomic
from .config import TrainConfig

STATE_DIR = ".train_state"
#: modes whose encoder carries trained LoRA
ENCODER_LORA_MODES = ("lora", "tail")


def state_dir(output: Path) -> Path:
    out = Path(output)
    return out.parent / f".{out.name}{STATE_DIR}"


def config_hash(cfg: TrainConfig) -> str:
    """Hash of everything in the config but the output and the number of epochs (a run may be extended)."""
    raw = {k: v for k, v in cfg.raw.items() if k not in ("output",)}
    raw["_train"] = {k: v for k, v in cfg.train.items() if k != "epochs"}
    return hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trainable_named(model, adapter, cfg: TrainConfig):
    """``(name, parameter)`` of every trained tensor: ``adapter.*`` and, with encoder LoRA, ``encoder.*``."""
    for n, p in adapter.named_parameters():
        if p.requires_grad:
            yield f"adapter.{n}", p
    if cfg.mode in ENCODER_LORA_MODES:
        for n, p in model.backbone.image_encoder.named_parameters():
            if "lora_" in n and f".{cfg.name}." in n:
                yield f"encoder.{n}", p


def save_state(directory: Path, model, adapter, cfg: TrainConfig, optimizer, scheduler, progress: dict) -> None:
    """Write the state of the run after an epoch; ``progress``: ``epoch`` (0-based), ``best``, ``history``."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: p.detach().cpu().contiguous() for k, p in trainable_named(model, adapter, cfg)}, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(dumps_json({**progress, "config_hash": config_hash(cfg),
                                                "scheduler": scheduler.state_dict()}, default=float))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_state(directory: Path, model, adapter, cfg: TrainConfig, optimizer, scheduler) -> dict | None:
    """Restore the trained tensors, optimizer and scheduler of a state of the same config; returns its progress
    (``epoch`` last finished, 0-based; ``best``; ``history``), or ``None`` when it belongs to another config."""
    meta = json.loads((directory / "state.json").read_text())
    if meta.get("config_hash") != config_hash(cfg):
        return None
    named = dict(trainable_named(model, adapter, cfg))
    with torch.no_grad():
        for k, v in load_file(str(directory / "trainable.safetensors")).items():
            named[k].copy_(v)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(meta["scheduler"])
    best = -float("inf") if meta.get("best") is None else float(meta["best"])  # -inf is stored as null
    return {"epoch": meta["epoch"], "best": best, "history": meta["history"]}


def update_history(out: Path, history: list) -> None:
    """Rewrite the history in the adapter's ``metrics.json`` (an epoch that did not improve it)."""
    f = out / "metrics.json"
    if f.exists():
        m = json.loads(f.read_text())
        m["history"] = history
        write_text_atomic(f, dumps_json(m, indent=2) + "\n")


def dump_rank_state(directory: Path, accelerator, model, adapter, cfg: TrainConfig, history) -> None:
    """``directory/rank<i>.json``: SHA-256 of this rank's trainable tensors, its encoder passes and its history
    (``$USAM_DUMP_RANK_STATE``: the DDP test compares ranks with it)."""
    digest = hashlib.sha256()
    named = sorted(trainable_named(model, adapter, cfg), key=lambda kv: kv[0])
    for k, p in named:
        digest.update(k.encode())
        digest.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    directory.mkdir(parents=True, exist_ok=True)
    rank = accelerator.process_index
    write_text_atomic(directory / f"rank{rank}.json", dumps_json({
        "rank": rank, "world_size": accelerator.num_processes, "trainable_sha256": digest.hexdigest(),
        "trainable_tensors": len(named), "encoder_calls": model.encoder_calls, "history": history,
    }, default=float))
