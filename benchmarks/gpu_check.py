"""Correctness on a CUDA device, before any timing: identical tokens and complete reports in every mode,
with batches, beams, and a model split between the GPU and the CPU (device_map)."""

from __future__ import annotations

import torch
from accelerate import dispatch_model

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm


def check(model, name, **kwargs):
    prompt = torch.randint(3, 250, (4, 16), generator=torch.Generator().manual_seed(0)).to(model.device)
    mask = torch.ones_like(prompt)
    mask[1, :5] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=24, do_sample=False, **kwargs)
    plain = model.generate(prompt, **kwargs)
    for mode in ("summary", "full"):
        with TelemetryCapture(capture=mode) as tc:
            out = model.generate(prompt, **kwargs)
        report = tc.reports[0]
        validate_report(report.to_dict())
        layers = report.sequences[0].layers
        print(
            f"{name:28s} {mode:8s} identical={torch.equal(plain, out)} error={report.capture.error} "
            f"signals={report.capture.signals} layers={layers.indices if layers else None} "
            f"ttft={report.timings.time_to_first_token_s:.4f}s tpot={report.timings.time_per_output_token_s:.5f}s"
        )


model = tiny_causal_lm("llama").cuda()
check(model, "tiny llama fp32 cuda")
check(model, "tiny llama fp32 cuda beams", num_beams=3)
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

# The CUDA-graph reduce must give what the eager reduce gives.
model = tiny_causal_lm("llama").cuda()
prompt = torch.randint(3, 250, (4, 16), generator=torch.Generator().manual_seed(1)).to("cuda")
kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
for extra in ({}, {"num_beams": 3}):
    reports = {}
    for graphs in (True, False):
        with TelemetryCapture(capture="full", cuda_graphs=graphs) as tc:
            model.generate(prompt, **kwargs, **extra)
        reports[graphs] = tc.reports[0]
    a, b = reports[True].sequences, reports[False].sequences
    worst = 0.0
    for x, y in zip(a, b):
        for name in ("entropy", "surprisal", "margin", "topk_mass"):
            for u, v in zip(getattr(x.timeline, name), getattr(y.timeline, name)):
                if u is not None and v is not None:
                    worst = max(worst, abs(u - v))
        for name in ("hidden_norm", "hidden_std", "hidden_cos_prev", "update_ratio", "attn_entropy", "attn_sink_mass"):
            for ru, rv in zip(getattr(x.layers, name), getattr(y.layers, name)):
                for u, v in zip(ru, rv):
                    if u is not None and v is not None:
                        worst = max(worst, abs(u - v))
    print(
        f"graph vs eager {extra or 'greedy'}: max abs difference {worst:.2e}; "
        f"graph unavailable: {reports[True].capture.unavailable.get('cuda_graph')}"
    )
