#!/usr/bin/env bash
# Create .venv and install usam with what its tests need. Idempotent; no network beyond the package registries.
# torch 2.14.1 + torchvision 0.29.1 are the pair that imports together here (pip finds them on this disk).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import usam, torch, torchvision, segment_anything; print('usam', usam.__version__, 'torch', torch.__version__)"
