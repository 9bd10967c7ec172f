"""``usam train`` under ``accelerate launch`` with 2 CPU processes (DDP over gloo) vs 1 process.

A tiny real run: LiteMedSAM, cache mode, one detection task (no dropout, loss = batch mean), 2 train + 2 val
images, one step. Both processes see the same 2 rows (a batch is all of them), so the DDP-averaged gradient
equals the 1-process one: after the step the loss must match. ``USAM_DUMP_RANK_STATE`` makes every rank
write the SHA-256 of its trainable tensors and its encoder passes (trainer.py).

Checks: both ranks hold bit-identical weights; each rank computed half of the embedding cache (built in
parallel); the 1-process run (reusing the cache) reaches the same probe loss; only one adapter directory
and one training state are written, with no temporary or duplicate files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
ADAPTER_FILES = {"config.json", "heads.safetensors", "metrics.json", "README.md"}
STATE_FILES = {"optimizer.pt", "state.json", "trainable.safetensors"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, what: str) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hung collective
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s:\n{(exc.stderr or b'')[-3000:]}")
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return r


def _ranks(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("rank*.json"))]


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = {
        "name": "ddp_tiny",
        "data": {"root": str(data_root), "tasks": ["breast_lesion_det"], "limit": 2},
        "mode": "cache",
        "precision": "fp32",
        "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "batch_size_heads": 2, "lr": 0.5, "seed": 0},
        "output": str(tmp / "unused"),
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "USAM_CACHE": str(tmp / "cache"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    env.pop("ACCELERATE_USE_CPU", None)
    # 2 processes: `accelerate launch` starts them with torchrun; on a machine without GPUs usam trains on the CPU (gloo)
    out2 = tmp / "two" / "ddp_tiny"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          "-m", "usam", "train", str(tmp / "cfg.yaml"), "--output", str(out2)],
         {**env, "USAM_DUMP_RANK_STATE": str(tmp / "ranks2")}, "2-process training")
    # 1 process, same config, reusing the embeddings the 2 ranks cached
    out1 = tmp / "one" / "ddp_tiny"
    _run([sys.executable, "-m", "usam", "train", str(tmp / "cfg.yaml"), "--output", str(out1)],
         {**env, "USAM_DUMP_RANK_STATE": str(tmp / "ranks1")}, "1-process training")
    return {"tmp": tmp, "out1": out1, "out2": out2, "ranks1": _ranks(tmp / "ranks1"), "ranks2": _ranks(tmp / "ranks2")}


def test_ranks_agree_and_share_the_cache(runs):
    r2 = runs["ranks2"]
    assert [r["rank"] for r in r2] == [0, 1] and all(r["world_size"] == 2 for r in r2)
    assert r2[0]["trainable_tensors"] > 0
    assert r2[0]["trainable_sha256"] == r2[1]["trainable_sha256"]  # DDP: same weights after the step
    # 4 images (2 train + 2 val), built in parallel: each rank encoded its half, none twice
    assert [r["encoder_calls"] for r in r2] == [2, 2]
    cached = list((runs["tmp"] / "cache" / "embeddings").glob("*/*.safetensors"))
    assert len(cached) == 4
    assert not list((runs["tmp"] / "cache").rglob("*.tmp"))
    r1 = runs["ranks1"]
    assert len(r1) == 1 and r1[0]["world_size"] == 1 and r1[0]["encoder_calls"] == 0  # reused the cache


def test_loss_matches_one_process(runs):
    h2 = json.loads((runs["out2"] / "metrics.json").read_text())["history"]
    h1 = json.loads((runs["out1"] / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in h2] == [h["epoch"] for h in h1] == [0, 1]
    task = "breast_lesion_det"
    p0, p1, p2 = h1[0]["probe_loss"][task], h1[1]["probe_loss"][task], h2[1]["probe_loss"][task]
    assert h2[0]["probe_loss"][task] == pytest.approx(p0, abs=1e-6)  # same start
    assert h2[1]["train_loss"][task] == pytest.approx(h1[1]["train_loss"][task], abs=1e-5)
    assert abs(p1 - p0) > 5e-4  # the step changed the model ...
    assert abs(p2 - p1) <= 1e-5 + 0.01 * abs(p1 - p0), (p0, p1, p2)  # ... in the same way with 2 processes
    # the saved heads agree too
    from safetensors.torch import load_file

    w1, w2 = load_file(str(runs["out1"] / "heads.safetensors")), load_file(str(runs["out2"] / "heads.safetensors"))
    assert set(w1) == set(w2)
    for k in w1:
        assert (w1[k] - w2[k]).abs().max() < 1e-4, k


def test_only_rank0_writes_one_set_of_files(runs):
    out2 = runs["out2"]
    assert sorted(p.name for p in out2.parent.iterdir()) == sorted([out2.name, f".{out2.name}.train_state"])
    assert {p.name for p in out2.iterdir()} == ADAPTER_FILES
    assert {p.name for p in (out2.parent / f".{out2.name}.train_state").iterdir()} == STATE_FILES
    cfg = json.loads((out2 / "config.json").read_text())
    assert cfg["name"] == "ddp_tiny" and set(cfg["tasks"]) == {"breast_lesion_det"}
    # the 1-process run writes the same layout
    assert {p.name for p in runs["out1"].iterdir()} == ADAPTER_FILES
