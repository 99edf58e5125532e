"""Our host time per decoding step on the logit-only path (what a compiled forward keeps), on the CPU.

    python benchmarks/step_host.py [--tokens 128] [--batch 1] [--runs 12]

Times the step recorder (everything we do per step) and, inside it, the reduce's own torch operations, which
on a GPU are one CUDA-graph replay instead: the difference is the per-step Python and bookkeeping that a
host-bound (compiled) decode pays as wall time. Prints the median over generations of each generation's
mean (the logit-only path reduces up to 16 steps at once, so single steps are uneven). Not a timed test: run it
before and after a change to the per-step path, on a quiet core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import build_model, telemetry_providers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
    from opentelemetry_instrumentation_corevital.capture import _recorder, _reduce

    steps: list[float] = []
    reduces: list[float] = []

    def timed(fn: Any, into: list[float]) -> Any:
        depth = [0]  # a ring's reduce calls reduce_step again per chunk: only the outermost call counts

        def wrapper(*a: Any) -> Any:
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*a)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    into.append(time.perf_counter() - start)

        return wrapper

    _recorder.StepRecorder.__call__ = timed(_recorder.StepRecorder.__call__, steps)
    _reduce.reduce_step = timed(_reduce.reduce_step, reduces)
    torch.set_num_threads(1)
    model, vocab = build_model("tiny-llama", "cpu", torch.float32)
    providers = telemetry_providers()
    # Layers past the model's: no layer taps, the logit-only path a compiled forward falls back to.
    CoreVitalInstrumentor().instrument(
        tracer_provider=providers["tracer_provider"], meter_provider=providers["meter_provider"], layers="1000"
    )
    prompt = torch.randint(3, vocab, (args.batch, 16), generator=torch.Generator().manual_seed(1))
    totals, ours = [], []
    with torch.inference_mode():
        for run in range(args.runs + 1):
            steps.clear()
            reduces.clear()
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
            )
            if run:  # the first is a warm-up
                totals.append(statistics.fmean(steps) * 1e6)
                ours.append((sum(steps) - sum(reduces)) / len(steps) * 1e6)
    print(
        f"per step, µs (median over {args.runs} generations of the mean): recorder {statistics.median(totals):.1f}, "
        f"of which outside the reduce's torch ops {statistics.median(ours):.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
