#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the quick ones.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m pytest -q --durations=10 "$@"
