#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the main job: `modelmon demo`. Extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh plot  # matplotlib, for the HTML report
exec .venv/bin/modelmon demo "$@"
