#!/usr/bin/env bash
# Run benchmarks/bench_speed.py on an NVIDIA GPU when one is available (nvidia-smi works and torch sees CUDA).
#   benchmarks/gpu.sh                    # default rows, 8 images
#   benchmarks/gpu.sh --images 50 --vit-images 10
# Extra arguments go to bench_speed.py. Exits 0 with a note when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU here (nvidia-smi missing or failing): nothing run. CPU numbers: $PY benchmarks/bench_speed.py"
  exit 0
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: nvidia-smi works but this torch build sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)')): nothing run"
  exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
exec "$PY" benchmarks/bench_speed.py --device cuda "$@"
