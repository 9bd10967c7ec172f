#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: install, then segment a bundled
# ultrasound image (HC18, CC BY 4.0) from a box with the bundled LiteMedSAM; writes runs/quickstart/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
mkdir -p runs/quickstart
.venv/bin/usam segment demo/examples/hc18_130_HC.png --box 215 100 510 380 \
  --out runs/quickstart/mask.png --overlay runs/quickstart/overlay.png
echo "wrote runs/quickstart/mask.png and runs/quickstart/overlay.png"
