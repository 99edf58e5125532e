#!/usr/bin/env bash
# GPU overhead run through the device tool (see BENCHMARKS.md). Wheels the GPU image lacks travel in .whl/.
# Usage: bash benchmarks/gpu.sh [extra args for overhead.py]
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
python3 - <<'PY'
# Sanity first: identical greedy tokens on the GPU (fp32 tiny model) with and without the instrumentation.
import torch
from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm
m = tiny_causal_lm("llama").cuda()
p = torch.randint(3, 250, (4, 16), device="cuda")
kw = dict(attention_mask=torch.ones_like(p), max_new_tokens=32, do_sample=False)
plain = m.generate(p, **kw)
reports = []
CoreVitalInstrumentor().instrument(on_report=reports.append)
inst = m.generate(p, **kw)
CoreVitalInstrumentor().uninstrument()
print("gpu sanity: identical tokens:", torch.equal(plain, inst), "risk:", round(reports[0].summary.risk_score, 4),
      "ttft_s:", round(reports[0].timings.time_to_first_token_s, 5))
PY
python3 benchmarks/overhead.py --device cuda --json-out "$OUT/gpu.json" "$@"
