#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest (e.g. -m "not slow" for the quick ones only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
