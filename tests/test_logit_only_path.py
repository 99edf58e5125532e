"""The logit-only step path (every step of a compiled forward, or no layer to capture) reports exactly what the
general path reports for the same logits: the per-step series are computed by the same reduce, only looked up
once a generation instead of every step."""

from __future__ import annotations

import dataclasses

import torch

from opentelemetry_instrumentation_corevital import testing

PROMPT = torch.tensor([[0, 0, 5, 9, 13, 17], [4, 8, 15, 16, 23, 42]])
MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def timelines(model, **options) -> list[dict]:
    with testing.TelemetryCapture(capture="summary", **options) as tc:
        model.generate(PROMPT, attention_mask=MASK, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    (report,) = tc.reports
    return [dataclasses.asdict(seq.timeline) for seq in report.sequences], list(report.capture.signals)


def test_logit_only_steps_report_what_layer_steps_report():
    model = testing.tiny_causal_lm("llama", seed=0)
    with_layers, signals = timelines(model)
    logit_only, only = timelines(model, layers="1000")  # past the model's layers: no taps, logit steps only
    assert (signals, only) == (["logits", "tokens", "hidden"], ["logits", "tokens"])
    assert logit_only == with_layers
    assert len(logit_only[0]["entropy"]) == 12
