"""Where a compiled decode's per-step overhead goes on a GPU: host launches or device time on the critical path.

    python benchmarks/step_device.py --device cuda [--model qwen2-0.5b] [--batch 1] [--rounds 10] [--profile]

Runs one model with ``cache_implementation="static"`` (transformers compiles the forward, so the capture keeps
to the logit signals) in these variants, round-robin, and prints each one's median wall time and its ratio to
plain generation:

* ``plain`` — no instrumentation;
* ``summary`` — as shipped;
* ``no-reduce`` — as shipped, but the step's reduce returns a kept tensor (our Python and bookkeeping only);
* ``fresh`` — as shipped, but each generation captures its own reduce graph (none kept between generations);
* ``inline`` — as shipped, but the reduce replays on ``generate``'s own stream instead of a side stream.

Emission runs on the emission thread (``background_emit``), drained after each timed generation.

``--profile`` adds a ``torch.profiler`` table of one plain and one ``summary`` generation: device time per
kernel, and the synchronising calls per step. Not a benchmark of record; it tells which part to cut.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import flush_reports, paired_interval, set_mode, static_cache_setup, sync_now  # noqa: E402


def _variant(name: str) -> Any:
    """Patch the capture for ``name``; returns the undo."""
    from opentelemetry_instrumentation_corevital.capture import _graph_pool, _lanes, _reducer

    undo: list[tuple[Any, str, Any]] = []
    if name == "no-reduce":
        original = _lanes.LaneReduce.run
        kept: dict[tuple, torch.Tensor] = {}

        def run(self: Any, layout: Any, state: Any, inputs: Any, step: int, graphable: bool, *_: Any) -> torch.Tensor:
            key = (layout, int(inputs.scores.shape[0]))
            if key not in kept:
                kept[key] = original(self, layout, state, inputs, step, False)
            return kept[key]

        undo.append((_lanes.LaneReduce, "run", original))
        _lanes.LaneReduce.run = run
    elif name == "fresh":
        undo.append((_graph_pool, "LIMIT", _graph_pool.LIMIT))
        _graph_pool.LIMIT = 0
    elif name == "inline":
        original = _reducer.StepReducer.__init__

        def init(self: Any, *args: Any) -> None:
            original(self, *args)
            self.aside = False

        undo.append((_reducer.StepReducer, "__init__", original))
        _reducer.StepReducer.__init__ = init

    def restore() -> None:
        for owner, attr, value in undo:
            setattr(owner, attr, value)

    return restore


def _profile(model: Any, prompt: torch.Tensor, kwargs: dict[str, Any], tokens: int, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model.generate(prompt, **kwargs)
        torch.cuda.synchronize()
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events) if events else 0.0
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    print(f"--- {label}: device time {device_us / tokens:.1f} us/step, synchronising calls {syncs / tokens:.2f}/step")
    print(events.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="qwen2-0.5b")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", default="plain,summary,fresh,inline,no-reduce")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--blocks", action="store_true", help="each variant's rounds back to back, not round-robin")
    args = parser.parse_args()
    model, prompt, kwargs, providers = static_cache_setup(
        args.model, args.device, args.batch, args.prompt_len, args.tokens
    )
    variants = args.variants.split(",")
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu_times: dict[str, list[float]] = {v: [] for v in variants}  # the caller thread's CPU time

    def one(variant: str) -> float:
        set_mode("plain" if variant == "plain" else "summary", providers)
        restore = _variant(variant)
        try:
            sync_now(args.device)
            start, cpu = time.perf_counter(), time.thread_time()
            model.generate(prompt, **kwargs)
            sync_now(args.device)
            cpu_times[variant].append(time.thread_time() - cpu)
            return time.perf_counter() - start
        finally:
            flush_reports()
            restore()

    with torch.inference_mode():
        for _ in range(2):  # compile and warm every variant
            for v in variants:
                one(v)
        from torch._dynamo.utils import counters

        before = dict(counters["stats"])
        if args.blocks:
            for v in variants:
                times[v].extend(one(v) for _ in range(args.rounds))
        else:
            for _ in range(args.rounds):
                for v in variants:
                    times[v].append(one(v))
        compiled = {k: v - before.get(k, 0) for k, v in counters["stats"].items() if v != before.get(k, 0)}
        print(f"dynamo during the timed rounds: {compiled or 'no new compilation'}")
        plain = statistics.median(times["plain"]) if "plain" in times else None
        order = "in blocks" if args.blocks else "round-robin"
        setting = f"{args.model} batch {args.batch}, {args.prompt_len}/{args.tokens}, static cache"
        print(f"{setting}, {args.rounds} rounds {order}")
        for v in variants:
            med = statistics.median(times[v])
            cpu = statistics.median(cpu_times[v][-args.rounds :])
            line = f"  {v:10s} median {med * 1000:8.1f} ms, caller CPU {cpu * 1000:7.1f} ms"
            if plain:
                paired = statistics.median(t / p for t, p in zip(times[v], times["plain"]))
                low, high = paired_interval(times[v], times["plain"])
                per_step = (med - plain) / args.tokens * 1e6
                line += f"  paired {paired:.3f} ({low:.3f}-{high:.3f})  +{per_step:.0f} us/step"
            print(line)
        if args.profile:
            set_mode("plain", providers)
            _profile(model, prompt, kwargs, args.tokens, "plain")
            set_mode("summary", providers)
            _profile(model, prompt, kwargs, args.tokens, "summary")
            set_mode("plain", providers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
