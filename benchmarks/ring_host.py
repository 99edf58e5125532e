"""Caller host time of the logit ring per ring shape, on a compiled decode (static cache), one process.

    python benchmarks/ring_host.py --device cuda --batch 8 --shapes 2x3,11x1,4x2,2x6 --rounds 6

A shape is (chunks, steps a chunk): the ring holds chunks x steps steps, one graph replay reduces them, each
chunk's steps at once. Fewer replays cost less host time; more steps a chunk mean fewer kernels a replay but more
working memory. Each shape is forced in turn (round-robin, the process staying instrumented, so each shape's
graph is captured once and kept); printed: the median caller host time of the steps, the generation's wall time
and the device memory the ring and one chunk's working copies take. Not a benchmark of record: it picks a shape.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import (  # noqa: E402
    HOST_TIME,
    flush_reports,
    host_parts,
    set_mode,
    static_cache_setup,
    time_our_host_work,
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="qwen2-0.5b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--shapes", default="2x3,11x1,4x2,2x6")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from opentelemetry_instrumentation_corevital.capture import _reducer

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    model, prompt, kwargs, providers = static_cache_setup(
        args.model, args.device, args.batch, args.prompt_len, args.tokens
    )
    vocab = int(model.config.vocab_size)
    time_our_host_work()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    steps: dict[tuple, list[float]] = {s: [] for s in shapes}
    walls: dict[tuple, list[float]] = {s: [] for s in shapes}
    with torch.inference_mode():
        set_mode("summary", providers)
        for r in range(args.rounds + 1):
            order = shapes[r % len(shapes) :] + shapes[: r % len(shapes)]
            for shape in order:
                _reducer.ring_shape = lambda rows, v, s=shape: s  # type: ignore[assignment]
                sync()
                HOST_TIME.clear()
                start = time.perf_counter()
                model.generate(prompt, **kwargs)
                sync()
                wall = time.perf_counter() - start
                flush_reports()
                if r:  # the first round compiles and captures
                    walls[shape].append(wall)
                    steps[shape].append(host_parts(HOST_TIME)["steps"])
    step_mib = 4 * args.batch * vocab / 2**20
    print(f"{args.model} batch {args.batch}, {args.tokens} tokens, {args.rounds} rounds (median):")
    for shape in shapes:
        chunks, chunk = shape
        print(
            f"  {chunks}x{chunk}: steps host {statistics.median(steps[shape]):.2f} ms, "
            f"wall {statistics.median(walls[shape]) * 1000:.1f} ms, "
            f"ring + working copies {(chunks * chunk + 2 * chunk) * step_mib:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
