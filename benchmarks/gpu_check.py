"""Correctness on a CUDA device, before any timing: identical tokens and complete reports in every mode,
with batches, beams, a model split between the GPU and the CPU (device_map), and, where the machine has
several GPUs, a model split over them: its reports equal the one-GPU reports of the same weights, each GPU
reduces its own layers in its own CUDA graph, and the capture adds no synchronisation over the one-GPU run.
Any failure raises (exit status 1)."""

from __future__ import annotations

import os
import warnings

import torch
from accelerate import dispatch_model

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, validate_report
from opentelemetry_instrumentation_corevital.instrument import score
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm


def check(model, name, modes=("summary", "full"), **kwargs):
    """Each mode's report (asserting identical tokens and a complete capture)."""
    prompt = torch.randint(3, 250, (4, 16), generator=torch.Generator().manual_seed(0)).to(model.device)
    mask = torch.ones_like(prompt)
    mask[1, :5] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=24, do_sample=False, **kwargs)
    plain = model.generate(prompt, **kwargs)
    reports = {}
    for mode in modes:
        with TelemetryCapture(capture=mode) as tc:
            out = model.generate(prompt, **kwargs)
        report = reports[mode] = tc.reports[0]
        validate_report(report.to_dict())
        layers = report.sequences[0].layers
        print(
            f"{name:28s} {mode:8s} identical={torch.equal(plain, out)} error={report.capture.error} "
            f"signals={report.capture.signals} layers={layers.indices if layers else None} "
            f"unavailable={report.capture.unavailable} "
            f"ttft={report.timings.time_to_first_token_s:.4f}s tpot={report.timings.time_per_output_token_s:.5f}s"
        )
        assert torch.equal(plain, out), f"{name} {mode}: tokens differ from plain generate"
        assert report.capture.error is None and layers is not None, f"{name} {mode}: incomplete capture"
    return reports


def worst_difference(a, b):
    """Largest absolute difference between two reports' logit and layer series."""
    worst = 0.0
    for x, y in zip(a.sequences, b.sequences, strict=True):
        for name in ("entropy", "surprisal", "margin", "topk_mass"):
            for u, v in zip(getattr(x.timeline, name), getattr(y.timeline, name), strict=True):
                if u is not None and v is not None:
                    worst = max(worst, abs(u - v))
        for name in ("hidden_norm", "hidden_std", "hidden_cos_prev", "update_ratio", "attn_entropy", "attn_sink_mass"):
            rows = [(getattr(z.layers, name) or []) if z.layers else [] for z in (x, y)]
            for ru, rv in zip(*rows, strict=True):
                for u, v in zip(ru, rv, strict=True):
                    if u is not None and v is not None:
                        worst = max(worst, abs(u - v))
    return worst


def syncs(model, tokens, **capture):
    """Synchronising calls of one generation (torch's sync debug mode), plain or under ``capture``."""
    prompt = torch.randint(3, 250, (2, 16), generator=torch.Generator().manual_seed(2)).to(model.device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if capture:
            with TelemetryCapture(**capture):
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    model.generate(prompt, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
        else:
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model.generate(prompt, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


#: ``CHECK=logits``: the logit-only section alone (a short run).
ONLY_LOGITS = os.environ.get("CHECK", "all") == "logits"
model = tiny_causal_lm("llama").cuda()
if not ONLY_LOGITS:
    check(model, "tiny llama fp32 cuda")
    check(model, "tiny llama fp32 cuda beams", num_beams=3)
# The logit-only path (what a compiled forward keeps) replays its reduce on a side stream: its reports must equal
# the eager reduce's on generate's own stream, greedy, sampled and compiled (static cache).
# Graphs are kept between generations (``_graph_pool``): runs 2-4 replay the graph run 1 captured, with other
# prompts, and a batch of 2 between them captures its own.
for seed, batch, extra in (
    (5, 4, {}),
    (6, 4, {}),
    (7, 2, {}),
    (8, 4, {}),
    (9, 4, {"do_sample": True, "top_k": 20}),
    (10, 4, {"cache_implementation": "static"}),
    (11, 4, {"cache_implementation": "static"}),
):
    prompt = torch.randint(3, 250, (batch, 16), generator=torch.Generator().manual_seed(seed)).cuda()
    reports = {}
    for graphs in (False, True):
        torch.manual_seed(7)
        with TelemetryCapture(capture="summary", layers="1000", cuda_graphs=graphs) as tc:
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, **extra)
        reports[graphs] = (out, tc.reports[0])
    (eager_out, eager), (aside_out, aside) = reports[False], reports[True]
    worst = worst_difference(eager, aside)
    print(f"logit-only, side stream vs eager, batch {batch} {extra or 'greedy'}: max abs difference {worst:.2e}")
    assert torch.equal(eager_out, aside_out) and aside.capture.error is None and worst < 1e-5, (extra, worst)
    ends = aside.timings.step_end_s  # CUDA events, read on the host once the copy landed
    assert len(ends) == out.shape[1] - 16 and ends == sorted(ends) and ends[0] > 0, ends[:3]
# With background_emit the caller only queues the read-back; the emission thread waits for it: the same report.
with TelemetryCapture(capture="summary", layers="1000", background_emit=True) as tc:
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, **extra)
    assert CoreVitalInstrumentor().flush(30)
worst = worst_difference(aside, tc.reports[0])
print(f"logit-only, read back on the emission thread vs on the caller: max abs difference {worst:.2e}")
assert torch.equal(out, aside_out) and tc.reports[0].capture.error is None and worst == 0.0, worst
if ONLY_LOGITS:
    raise SystemExit(0)
# Layer captures: graphs kept between generations (the second graphed run adopts the first one's) report what the
# eager reduce reports, greedy and with beams.
for mode in ("summary", "full"):
    for extra in ({}, {"num_beams": 3}):
        prompt = torch.randint(3, 250, (2, 16), generator=torch.Generator().manual_seed(12)).cuda()
        runs = []
        for graphs in (False, True, True):
            with TelemetryCapture(capture=mode, cuda_graphs=graphs) as tc:
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, **extra)
            runs.append((out, tc.reports[0]))
        for label, (out, report) in zip(("captured", "kept"), runs[1:]):
            worst = worst_difference(runs[0][1], report)
            print(f"{mode} {extra or 'greedy'}, graph {label} vs eager: max abs difference {worst:.2e}")
            assert torch.equal(out, runs[0][0]) and report.capture.error is None and worst < 1e-4, (mode, extra, worst)
            assert report.capture.unavailable.get("cuda_graph") is None, report.capture.unavailable
split = tiny_causal_lm("llama")
split = dispatch_model(
    split,
    device_map={
        "model.embed_tokens": 0,
        "model.layers.0": 0,
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": 0,
        "lm_head": 0,
    },
)
check(split, "tiny llama split cuda+cpu")

if torch.cuda.device_count() >= 2:
    # Four layers over every GPU (one run of layers each, the head on the last), against the same weights on one.
    gpus = torch.cuda.device_count()
    one = tiny_causal_lm("llama", num_hidden_layers=4).cuda()
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": gpus - 1, "lm_head": gpus - 1}
    device_map.update({f"model.layers.{i}": i * gpus // 4 for i in range(4)})
    many = dispatch_model(tiny_causal_lm("llama", num_hidden_layers=4), device_map=device_map)
    modes = ("summary", "full", "on_risk")
    for extra in ({}, {"num_beams": 3}):
        base = check(one, f"tiny llama 1 gpu {extra or ''}", modes, **extra)
        split_reports = check(many, f"tiny llama {gpus} gpus {extra or ''}", modes, **extra)
        for mode in modes:
            worst = worst_difference(base[mode], split_reports[mode])
            graphs = split_reports[mode].capture.unavailable.get("cuda_graph")
            print(f"{gpus} gpus vs 1 {mode} {extra or 'greedy'}: max abs difference {worst:.2e}; graphs: {graphs}")
            assert worst < 1e-4 and graphs is None, (mode, worst, graphs)
    # score(): one teacher-forced forward over the split model, gathered once, as on one GPU.
    prompt = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(3))
    continuation = torch.randint(3, 250, (2, 6), generator=torch.Generator().manual_seed(4))
    scored = {}
    for label, model in (("1 gpu", one), (f"{gpus} gpus", many)):
        with TelemetryCapture(capture="full"):
            scored[label] = score(model, prompt.to(model.device), continuation.to(model.device))
        assert scored[label] is not None and scored[label].capture.error is None, (label, scored[label])
    worst = worst_difference(scored["1 gpu"], scored[f"{gpus} gpus"])
    print(f"score() {gpus} gpus vs 1: max abs difference {worst:.2e}; signals {scored[f'{gpus} gpus'].capture.signals}")
    assert worst < 1e-4
    # Synchronisation: what the capture adds must not grow with the steps (16 vs 32 new tokens).
    for mode in ("summary", "full"):
        added = {}
        for tokens in (16, 32):
            for label, model in (("1 gpu", one), (f"{gpus} gpus", many)):
                added[label, tokens] = syncs(model, tokens, capture=mode) - syncs(model, tokens)
        print(f"syncs the capture adds per generation, {mode}: {added}")
        assert added[f"{gpus} gpus", 16] == added[f"{gpus} gpus", 32], "the split capture synchronises per step"
