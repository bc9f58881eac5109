#!/usr/bin/env bash
# Sets up the environment, lints, and runs the whole test suite (slow end-to-end tests and the
# docstring Examples included). Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`
# for the quick tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q --durations=10 "$@"
