#!/usr/bin/env bash
# Installs everything modelmon needs on Debian/Ubuntu, idempotently:
#   - as root, the Debian packages that are missing: Prometheus and Alertmanager (the real
#     components the demo and the tests run), for the tests also the Pushgateway, wrk and HAProxy,
#     and python3-venv when venv is unavailable;
#   - a virtual environment in .venv with modelmon and the extras named in $1 (e.g. "test").
# Usage: bash scripts/setup.sh [EXTRAS]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "modelmon needs Python >= 3.11 (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

debs=()
command -v prometheus >/dev/null || debs+=(prometheus)
command -v prometheus-alertmanager >/dev/null || debs+=(prometheus-alertmanager)
if [[ ",$extras," == *",test,"* ]]; then
  # The tests also run a Pushgateway (live training metrics) and wrk (benchmark smoke runs).
  command -v prometheus-pushgateway >/dev/null || debs+=(prometheus-pushgateway)
  command -v wrk >/dev/null || debs+=(wrk)
  # h2load (nghttp2), the gRPC load generator of benchmarks/serving_grpc.py.
  command -v h2load >/dev/null || debs+=(nghttp2-client)
  # HAProxy: the load balancer in front of the fleet test's replicas (tests/fleet).
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || debs+=(haproxy)
fi
"$python" -c 'import ensurepip, venv' 2>/dev/null || debs+=(python3-venv)
if [ ${#debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
  else
    echo "note: missing ${debs[*]}; as root this script installs them (apt-get install --no-install-recommends ${debs[*]})." >&2
    echo "      modelmon works without Prometheus, but the demo then skips it and its tests cannot run." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "installing modelmon${extras:+ with [$extras]} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
.venv/bin/python -c 'import modelmon' # fail here, not later, if the install did not work
