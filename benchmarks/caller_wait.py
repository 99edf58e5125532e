"""How long the caller waits for the GIL right after ``generate`` returns, with the report built in the background.

    python benchmarks/caller_wait.py [--batch 8] [--tokens 64] [--runs 20]

With ``background_emit`` the emission thread builds and emits the report while the caller goes on; a caller
that then releases the GIL (here ``time.sleep(0)``, in real code a device sync or a socket write) waits for it
to be given back. Prints the median and largest wait over the runs, with the report built in the background
and, for reference, on the caller (no thread to wait for). Each run's telemetry is drained before the next.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import build_model, flush_reports, telemetry_providers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    torch.set_num_threads(1)
    model, vocab = build_model("tiny-llama", "cpu", torch.float32)
    prompt = torch.randint(3, vocab, (args.batch, 16), generator=torch.Generator().manual_seed(1))
    providers = {k: v for k, v in telemetry_providers().items() if not k.startswith("_")}
    for background in (True, False):
        CoreVitalInstrumentor().instrument(capture="summary", background_emit=background, **providers)
        waits = []
        with torch.inference_mode():
            for _ in range(args.runs + 3):
                model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens,
                    do_sample=False,
                )
                start = time.perf_counter()
                time.sleep(0)
                waits.append((time.perf_counter() - start) * 1000)
                flush_reports()
        CoreVitalInstrumentor().uninstrument()
        waits = waits[3:]  # warm-up
        where = "background" if background else "caller"
        print(f"report built on the {where}: wait median {statistics.median(waits):.2f} ms, max {max(waits):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
