"""``on_risk`` as users run it: the real SmolLM2-135M-Instruct on the CPU answering real chat prompts.

    python benchmarks/on_risk_chat.py [--rounds 3] [--tokens 48] [--pin-cpu 0] [--json-out FILE]

Each round runs every prompt once in every mode (plain, summary, on_risk, full; modes round-robin with the start
rotated). Prints per mode the paired ratio to plain (median over prompt x round of mode / plain of the same
prompt and round) with a bootstrap interval, our host time per generation, and for on_risk the share of reports
emitted at full detail and the median risk score.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from overhead import HOST_TIME, host_parts, paired_interval, set_mode, telemetry_providers, time_our_host_work  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Name three primary colors.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "Suggest a name for a friendly cat.",
]
MODES = ["plain", "summary", "on_risk", "full"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--pin-cpu", type=int, default=None)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
        torch.set_num_threads(1)
    from opentelemetry_instrumentation_corevital.cli import load_smollm2

    tokenizer, model = load_smollm2()
    time_our_host_work()
    providers = telemetry_providers()
    inputs = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        for p in PROMPTS
    ]
    kwargs = dict(max_new_tokens=args.tokens, do_sample=False)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    host: dict[str, list[float]] = {m: [] for m in MODES}
    details: dict[str, list[str]] = {m: [] for m in MODES}
    risks: dict[str, list[float]] = {m: [] for m in MODES}
    with torch.inference_mode():
        set_mode("summary", providers)
        model.generate(**inputs[0], **kwargs)  # warm-up
        for r in range(args.rounds):
            for i, batch in enumerate(inputs):
                k = (r * len(inputs) + i) % len(MODES)
                for mode in MODES[k:] + MODES[:k]:
                    set_mode(mode, providers)
                    gc.collect()
                    HOST_TIME.clear()
                    start = time.perf_counter()
                    model.generate(**batch, **kwargs)
                    times[mode].append(time.perf_counter() - start)
                    host[mode].append(host_parts(HOST_TIME)["total"])
                    for report in providers["_reports"]:
                        risks[mode].append(report.summary.risk_score)
                        details[mode].append(report.capture.detail)
    set_mode("plain", providers)
    summary = {"machine": {"torch": torch.__version__, "cpus": os.cpu_count()}, "args": vars(args), "modes": {}}
    print(f"SmolLM2-135M-Instruct, CPU, {len(PROMPTS)} chat prompts x {args.rounds} rounds, {args.tokens} tokens")
    print("| mode | ratio (paired) | paired 95% interval | host ms / generation | median risk | full detail |")
    print("|---|---|---|---|---|---|")
    for mode in MODES[1:]:
        paired = statistics.median(t / p for t, p in zip(times[mode], times["plain"]))
        low, high = paired_interval(times[mode], times["plain"])
        share = sum(d == "full" for d in details[mode]) / len(details[mode])
        risk = statistics.median(risks[mode])
        host_ms = statistics.median(host[mode])
        summary["modes"][mode] = dict(
            paired=paired,
            interval=[low, high],
            host_ms=host_ms,
            risk=risk,
            full_share=share,
            times=times[mode],
            risks=risks[mode],
        )
        print(f"| {mode} | {paired:.3f} | {low:.3f}–{high:.3f} | {host_ms:.1f} | {risk:.2f} | {share:.0%} |")
    summary["plain_times"] = times["plain"]
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
