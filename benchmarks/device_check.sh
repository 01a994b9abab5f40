#!/usr/bin/env bash
# One device checklist: everything that waits for an NVIDIA GPU, in 8 minutes or less.
#
#   bash benchmarks/device_check.sh OUT_DIR [--skip-gpu] [--budget SECONDS] [--work DIR]
#
# Runs, each step isolated (a failure is recorded and the rest still run): pytest -m "gpu or
# tensorrt"; AMP and compile training steps; fp16/int8 exports; engine builds at fp32, fp16 and
# int8; uda-adapt check; run BUNDLE on a clip (and on a bundle with no engine: the first-run
# build); TensorRT vs ONNX Runtime CUDA vs PyTorch latency; the pipeline/model-only ratio.
# Writes OUT_DIR/device_check.json and OUT_DIR/device_check.md; exits 1 if a step failed.
# PYTHON picks the interpreter [default: the checkout's .venv, else python3].
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/device_check.sh OUT_DIR [--skip-gpu] [--budget SECONDS] [--work DIR]" >&2
    exit 2
fi
cd "$root"
exec "$python" "$root/benchmarks/device_check.py" all "$@"
