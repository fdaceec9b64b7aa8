#!/usr/bin/env bash
# Sets up (see setup.sh), runs the gates (ruff, mypy, import-linter) and the whole test
# suite, slow end-to-end tests included.
# Extra arguments go to pytest (e.g. -m "not slow" for the quick ones only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The gates first: lint (bug-finding rules), types, and the packages' layers.
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
