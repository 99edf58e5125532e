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
from overhead import build_model, flush_reports, set_mode, telemetry_providers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--mode", default="summary")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--cache", default=None, choices=["static"], help="static: transformers compiles the forward")
    parser.add_argument("--background", action="store_true", help="background_emit=True (drained after each run)")
    parser.add_argument("--diff", action="store_true", help="also profile plain runs; rank functions by added time")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, vocab = build_model(args.model, args.device, dtype)
    prompt = torch.randint(
        3, min(vocab, 32000), (args.batch, args.prompt_len), generator=torch.Generator().manual_seed(1)
    ).to(args.device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt), max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
    )
    if args.cache:
        kwargs["cache_implementation"] = args.cache
    providers = telemetry_providers()
    providers["_background"] = args.background
    providers["_compiled"] = bool(args.cache)  # plain runs keep the attention registry wrapped (overhead.set_mode)

    def timed() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        took = time.perf_counter() - start
        return took

    def drained() -> float:
        took = timed()
        flush_reports()  # the emission thread's work, outside the timing and the profile
        return took

    def profiled() -> cProfile.Profile:
        profiler = cProfile.Profile()
        for _ in range(args.runs):
            profiler.enable()
            timed()
            profiler.disable()
            flush_reports()
        return profiler

    for mode in args.mode.split(","):
        with torch.inference_mode():
            set_mode("plain", providers)
            timed()
            plain = min(drained() for _ in range(args.runs))
            set_mode(mode, providers)
            timed()
            instrumented = min(drained() for _ in range(args.runs))
            profiler = profiled()
            if args.diff:
                set_mode("plain", providers)
                print_added(profiler, profiled(), args.runs, args.top)
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


def print_added(instrumented: cProfile.Profile, plain: cProfile.Profile, runs: int, top: int) -> None:
    """Functions ranked by the own time the instrumented runs spent in them beyond the plain runs (ms a run)."""
    a = pstats.Stats(instrumented).stats  # type: ignore[attr-defined]
    b = pstats.Stats(plain).stats  # type: ignore[attr-defined]
    rows = []
    for key in set(a) | set(b):
        ta, na = (a[key][2], a[key][1]) if key in a else (0.0, 0)
        tb, nb = (b[key][2], b[key][1]) if key in b else (0.0, 0)
        name = f"{key[0].rsplit('/', 2)[-1]}:{key[1]}({key[2]})"
        rows.append(((ta - tb) * 1000 / runs, na // runs, nb // runs, name))
    rows.sort(reverse=True)
    total_a = sum(v[2] for v in a.values()) * 1000 / runs
    total_b = sum(v[2] for v in b.values()) * 1000 / runs
    print(f"own time a run, profiled: instrumented {total_a:.1f} ms, plain {total_b:.1f} ms")
    print("  added ms  calls (instrumented / plain)  function")
    for added, na, nb, name in rows[:top]:
        print(f"  {added:8.2f}  {na:6d} / {nb:6d}  {name}")


if __name__ == "__main__":
    sys.exit(main())
