#!/usr/bin/env bash
# GPU fast path in one script: LiteMedSAM encoder images/s at batch 1 / 8 / 32 (eager fp32; bf16 + channels-last;
# + torch.compile) and click -> mask latency, via benchmarks/bench_gpu.py. Runs to completion anywhere: without an
# NVIDIA GPU (or a CUDA torch) the GPU rows are skipped with a message and the click rows run on the CPU.
#   benchmarks/gpu.sh                                   # batches 1 8 32, 10 reps, 50 clicks
#   benchmarks/gpu.sh --batches 1 8 --reps 3 --clicks 10 --no-compile
# Needs the FMC_UIA dev data (default ../shared/data/fmc_uia_dev, else --data DIR): the encoder rows use its test images.
# Extra arguments go to bench_gpu.py (PYTHON=... picks the interpreter; default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: nvidia-smi works but this torch build sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)')): GPU rows skipped"
  fi
else
  echo "gpu.sh: no NVIDIA GPU here (nvidia-smi missing or failing): GPU rows skipped"
fi
exec "$PY" benchmarks/bench_gpu.py "$@"
