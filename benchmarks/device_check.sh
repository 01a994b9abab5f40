#!/usr/bin/env bash
# The device check: everything that waits for an NVIDIA GPU, in 8 minutes, or listed as NOT COVERED.
#
#   bash benchmarks/device_check.sh OUT_DIR [--clip REAL.mp4] [--allow-skip PATTERN ...] [--budget SECONDS] [--work DIR]
#
# A preflight says what this machine has (CUDA, TensorRT, GPU ONNX Runtime, GStreamer, Jetson);
# steps that need what is missing are reported NOT COVERED, never passed. Exit status 0 only if
# no step failed and every step or skipped test left unchecked is named by --allow-skip.
# Writes OUT_DIR/device_check.json and OUT_DIR/device_check.md (benchmarks/device_check.py).
# On a Jetson or TensorRT machine, also follow benchmarks/device_check_jetson.md.
# PYTHON picks the interpreter [default: the checkout's .venv, else python3].
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/device_check.sh OUT_DIR [--clip REAL.mp4] [--allow-skip PATTERN ...] [--budget SECONDS] [--work DIR]" >&2
    exit 2
fi
cd "$root"
exec "$python" "$root/benchmarks/device_check.py" "$@"
