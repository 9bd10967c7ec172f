#!/usr/bin/env bash
# Install what the browser tests (tests/test_demo_browser.py) need:
#   - Debian's chromium (Playwright's own browser download is not used: the tests launch
#     /usr/bin/chromium through executable_path);
#   - the playwright pip package into the project venv (.venv, or $VENV).
# Idempotent: skips what is already there. Usage: bash scripts/install_browser.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "error: installing chromium needs root (or sudo)" >&2; exit 1
    fi
  fi
  echo "installing chromium with apt-get..."
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi

if [ ! -x "$PY" ]; then
  echo "error: no python at $PY: create the venv first (python -m venv .venv && .venv/bin/pip install -e '.[test]')" >&2
  exit 1
fi
if "$PY" -c "import playwright" 2>/dev/null; then
  echo "playwright already installed: $("$PY" -m pip show playwright 2>/dev/null | sed -n 's/^Version: //p')"
else
  echo "installing playwright into $VENV..."
  "$PY" -m pip install "playwright>=1.45"
fi
echo "browser tests ready: .venv/bin/python -m pytest -m browser tests/test_demo_browser.py"
