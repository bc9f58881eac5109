#!/usr/bin/env bash
# Sets up the environment, lints, and runs the whole test suite (slow end-to-end tests and the
# docstring Examples included). Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`
# for the quick tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The explorer's browser tests (tests/browser.py) drive a real headless Chromium.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: the browser tests need Chromium: run 'sudo apt-get install -y chromium chromium-driver'" >&2
    exit 1
  fi
  # apt-get update only when the package lists are too old or missing to find them.
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two processes (pytest-xdist), a test module's tests in one of them (their module fixtures are
# built once): the suite waits on subprocesses, kernels and files much of the time.
exec .venv/bin/python -m pytest -q -rs --durations=25 -n 2 --dist loadfile "$@"
