#!/usr/bin/env bash
# Regenerates src/modelmon/serving/grpc_v2/grpc_predict_v2_pb2.py (and its .pyi, for mypy) from
# grpc_predict_v2.proto beside it. The generated module is checked in, so that installing
# modelmon needs no protoc; run this after changing the .proto and commit both.
#
# - grpcio-tools is pinned to 1.76.0 (protoc 31.1): its code needs protobuf >= 6.31.1 at run
#   time (the floor of the `grpc` extra in pyproject.toml); a newer grpcio-tools would raise
#   that floor. It runs from a throwaway virtual environment, so the project's own stays as it
#   is.
# - The file is registered in a descriptor pool of its own, not protobuf's default pool:
#   tritonclient (and KServe's client) register the same message names (`inference.*`) there
#   from their own .proto files, and one process that imports both would fail with
#   "duplicate symbol". The messages are the same on the wire either way.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/modelmon/serving/grpc_v2
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q --disable-pip-version-check grpcio-tools==1.76.0
"$tools/venv/bin/python" -m grpc_tools.protoc -I "$out" --python_out="$out" --pyi_out="$out" "$out/grpc_predict_v2.proto"
# A private pool (see above): the one line of the generated module that names the pool.
sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' "$out/grpc_predict_v2_pb2.py"
grep -q '_descriptor_pool.DescriptorPool().AddSerializedFile' "$out/grpc_predict_v2_pb2.py" || { echo "the generated module no longer has the line this script rewrites" >&2; exit 1; }
echo "regenerated $out/grpc_predict_v2_pb2.py and .pyi"
