"""Where the instrumentation's host time goes, per capture mode: a cProfile of a few generations.

    python benchmarks/profile_capture.py --device cuda --model qwen2-0.5b --mode full --tokens 64

Prints the plain and instrumented generation times and the functions of this
package (and the torch calls they make) ranked by their own time. Not a
benchmark of record (cProfile slows Python down); it tells which calls to cut.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import build_model, set_mode, telemetry_providers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--mode", default="summary")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, vocab = build_model(args.model, args.device, dtype)
    prompt = torch.randint(3, min(vocab, 32000), (1, 32), generator=torch.Generator().manual_seed(1)).to(args.device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt), max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
    )
    providers = telemetry_providers()

    def timed() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for mode in args.mode.split(","):
        with torch.inference_mode():
            set_mode("plain", providers)
            timed()
            plain = min(timed() for _ in range(args.runs))
            set_mode(mode, providers)
            timed()
            instrumented = min(timed() for _ in range(args.runs))
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.runs):
                timed()
            profiler.disable()
        set_mode("plain", providers)
        print(
            f"{args.model} {args.device} {mode}: plain {plain:.3f} s, instrumented {instrumented:.3f} s, "
            f"ratio {instrumented / plain:.3f} (best of {args.runs})"
        )
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats("corevital|torch|built-in", args.top)
        print(out.getvalue())
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats("corevital", 25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
