#!/usr/bin/env bash
# GPU overhead run through the device tool (see BENCHMARKS.md). Wheels the GPU image lacks travel in .whl/.
# Usage: bash benchmarks/gpu.sh [overhead.py|profile_capture.py] [its arguments]
set -euo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-.bench}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Correctness first (identical tokens, complete reports), then the timing given as arguments:
#   bash benchmarks/gpu.sh overhead.py --models ...   or   bash benchmarks/gpu.sh profile_capture.py --model ...
python3 benchmarks/gpu_check.py
script=${1:-overhead.py}; shift || true
if [ "$script" = overhead.py ]; then
  python3 benchmarks/overhead.py --device cuda --json-out "$OUT/gpu.json" "$@"
else
  python3 "benchmarks/$script" --device cuda "$@"
fi
