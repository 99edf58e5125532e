"""Diagnosis end to end: faults injected into real (tiny and SmolLM2) models fire the right flags, blame the
right layer and reach the report, the span, the metrics and the narrative; healthy runs stay quiet."""

from __future__ import annotations

import json
import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.report import Report, diagnose_report, trim_to_summary
from opentelemetry_instrumentation_corevital.signals import risk_score
from opentelemetry_instrumentation_corevital.signals.profiles import load_profile
from opentelemetry_instrumentation_corevital.testing import TINY_EOS, TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])


def generate(model, mode: str = "summary", steps: int = 12, **options):
    with TelemetryCapture(capture=mode, **options) as tc:
        model.generate(
            PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=steps, min_new_tokens=steps, do_sample=False
        )
    (span,) = tc.spans()
    (report,) = tc.reports
    validate_report(json.loads(report.to_json()))
    return tc, span, report


def on_call(layer, calls: set[int], action):
    """A forward hook on a decoder layer that applies ``action`` to its output on the given forward calls."""
    seen = {"n": 0}

    def hook(module, args, output):
        seen["n"] += 1
        if seen["n"] in calls:
            action(output[0] if isinstance(output, tuple) else output)
        return output

    return layer.register_forward_hook(hook)


class TestFaultInjection:
    def test_scaled_layer_output_fires_mid_layer_anomaly_and_blames_that_layer(self):
        model = tiny_causal_lm("llama", num_hidden_layers=4)
        handle = on_call(model.model.layers[1], {6}, lambda out: out.mul_(8.0))  # call 6 = decode step 5
        try:
            tc, span, report = generate(model)
        finally:
            handle.remove()
        seq = report.sequences[0]
        assert seq.flags.mid_layer_anomaly and seq.flags.mid_layer_anomaly_layers == [1]
        assert seq.flags.mid_layer_anomaly_first_step == 5
        assert [b.layer for b in seq.diagnosis.blame] == [1]
        assert seq.diagnosis.blame[0].reasons[0].code == "norm_spike"
        assert "mid_layer_anomaly" in report.summary.flags
        attrs = span.attributes
        assert attrs["corevital.flag.mid_layer_anomaly"] is True
        assert attrs["corevital.mid_layer_anomaly.layers"] == (1,)
        assert attrs["corevital.blame.layers"] == (1,)
        assert attrs["corevital.blame.reasons"][0].startswith("L1: norm ")
        assert attrs["corevital.narrative"] == seq.diagnosis.narrative == report.summary.narrative
        assert "at step 5" in seq.diagnosis.narrative and "layer 1" in seq.diagnosis.narrative
        points = {
            p.attributes["corevital.flag"]: p.value for p in tc.metrics()["corevital.health.flags"].data.data_points
        }
        assert points["mid_layer_anomaly"] == 1

    def test_unmodified_model_is_quiet(self):
        _, span, report = generate(tiny_causal_lm("llama", num_hidden_layers=4), "full")
        seq = report.sequences[0]
        assert not seq.flags.mid_layer_anomaly and not seq.flags.attention_collapse and not seq.flags.nan_or_inf
        assert seq.diagnosis.blame == [] and "corevital.blame.layers" not in span.attributes

    def test_nan_in_a_layer_forces_risk_one_and_blames_where_it_enters(self):
        model = tiny_causal_lm("llama", num_hidden_layers=4)
        model.generation_config.pad_token_id = TINY_EOS  # NaN logits pick token 0: keep it, do not trim it as padding

        def poison(out):
            out[..., 0] = float("nan")

        handle = on_call(model.model.layers[2], set(range(4, 100)), poison)
        try:
            _, span, report = generate(model, steps=8)
        finally:
            handle.remove()
        seq = report.sequences[0]
        assert seq.flags.nan_or_inf and seq.flags.nan_or_inf_first_step == 3
        assert seq.risk.score == 1.0 and seq.risk.forced_by == "nan_or_inf"
        assert [(b.layer, b.reasons[0].code, b.reasons[0].step) for b in seq.diagnosis.blame] == [(2, "nonfinite", 3)]
        text = seq.diagnosis.narrative
        assert text.startswith(
            f"Risk 1.00 (high): non-finite values appeared at {seq.flags.nan_or_inf_steps} of 8 steps, first at step 3"
        )
        assert text.endswith("inspect layer 2, where they first appear.")
        assert span.attributes["corevital.risk.score"] == 1.0

    def test_sharpened_attention_fires_attention_collapse(self):
        model = tiny_causal_lm("llama")
        with torch.no_grad():  # logits x 10^6 in layer 1: every head puts all its weight on one key
            model.model.layers[1].self_attn.q_proj.weight.mul_(1000.0)
            model.model.layers[1].self_attn.k_proj.weight.mul_(1000.0)
        _, span, report = generate(model, "full")
        seq = report.sequences[0]
        # At steps 7 and 8 one of layer 1's four heads puts all its weight on the sink: parking, not collapse.
        assert seq.layers.attn_collapsed_fraction[1] == [1.0] * 7 + [0.75] * 2 + [1.0] * 3
        assert seq.layers.attn_collapsed_fraction[0] == [0.0] * 12
        assert seq.flags.attention_collapse and seq.flags.attention_collapse_onset_step == 0
        assert seq.flags.attention_collapse_share == 0.5  # one of two layers, every head
        assert [(b.layer, b.reasons[0].code, b.severity) for b in seq.diagnosis.blame] == [
            (1, "attention_collapse", 11.5 / 12)  # the layer's mean collapsed share
        ]
        assert span.attributes["corevital.attention_collapse.onset_step"] == 0
        assert "From step 0, 50% of attention heads collapsed onto single keys." in seq.diagnosis.narrative


class TestAvailability:
    def test_summary_capture_names_what_it_could_not_check(self):
        _, _, report = generate(tiny_causal_lm("llama"))
        seq = report.sequences[0]
        assert seq.flags.unavailable == {
            "attention_collapse": "no collapsed-head share in this report (capture='full' has it)",
            "mid_layer_anomaly": "needs hidden-state norms of at least 3 captured layers",
        }
        assert seq.flags.repetition_hidden_signal == "hidden_norm"
        # the answer uncertainty needs the attention statistics of capture="full"
        assert set(seq.diagnosis.unavailable) == {"context_loss", "attention_bottleneck", "uncertainty"}

    def test_full_capture_uses_the_cosine_series_too(self):
        _, _, report = generate(tiny_causal_lm("llama", num_hidden_layers=3), "full")
        seq = report.sequences[0]
        assert seq.flags.unavailable == {} and seq.diagnosis.unavailable == {}
        assert seq.flags.repetition_hidden_signal == "hidden_norm+hidden_cos_prev"

    def test_step_stride_leaves_the_hidden_loop_check_out(self):
        _, _, report = generate(tiny_causal_lm("llama"), "full", step_stride=2)
        assert report.sequences[0].flags.unavailable["repetition_loop.hidden"] == (
            "needs layer data at consecutive steps (step_stride 1)"
        )

    def test_off_has_no_diagnosis_of_signals(self):
        _, span, report = generate(tiny_causal_lm("llama"), "off")
        assert report.sequences[0].risk is None and "corevital.narrative" not in span.attributes


class TestReportDiagnosis:
    def test_diagnose_again_with_other_thresholds(self):
        _, _, report = generate(tiny_causal_lm("llama"))
        before = report.sequences[0].flags.high_entropy_steps
        assert report.thresholds.profile == "llama" and report.thresholds.high_entropy_bits == 4.0
        again = diagnose_report(Report.from_json(report.to_json()), thresholds={"high_entropy_bits": 20.0})
        assert again.thresholds.overridden == ["high_entropy_bits"] and again.thresholds.high_entropy_bits == 20.0
        assert before > 0 and again.sequences[0].flags.high_entropy_steps == 0
        validate_report(json.loads(again.to_json()))

    def test_trimmed_report_is_rediagnosed_on_what_is_left(self):
        _, _, report = generate(tiny_causal_lm("llama", num_hidden_layers=3), "full", capture_content=True)
        trimmed = diagnose_report(trim_to_summary(Report.from_json(report.to_json())))
        assert trimmed.sequences[0].flags.unavailable["attention_collapse"].startswith("no collapsed-head share")
        assert trimmed.sequences[0].risk.factors and "attention_collapse_share" not in {
            f.name for f in trimmed.sequences[0].risk.factors
        }

    def test_fingerprint_on_the_report_and_the_span(self):
        _, span, report = generate(tiny_causal_lm("llama"))
        fp = report.sequences[0].diagnosis.fingerprint
        assert fp.version == 1 and len(fp.vector) == 18
        assert span.attributes["corevital.fingerprint.version"] == 1
        assert list(span.attributes["corevital.fingerprint"]) == [
            v if v is not None else pytest.approx(math.nan, nan_ok=True) for v in fp.vector
        ]

    def test_risk_factors_on_the_span_match_the_report(self):
        _, span, report = generate(tiny_causal_lm("llama"))
        ranked = report.sequences[0].risk.top_factors(100)
        assert span.attributes["corevital.risk.factors"] == tuple(f.name for f in ranked)
        assert span.attributes["corevital.risk.factor_values"] == tuple(f.value for f in ranked)
        assert span.attributes["corevital.risk.factor_weights"] == tuple(f.weight for f in ranked)
        assert span.attributes["corevital.profile"] == "llama"


class TestDocumentedRiskExamples:
    """docs/signals.md "Risk score": both examples are computed here exactly as printed there."""

    def test_default_profile_example(self):
        specs = load_profile("default").factors
        risk = risk_score(
            {
                "entropy_mean": 1.5,
                "margin_mean": 0.5,
                "surprisal_mean": 1.0,
                "ngram_repeat_rate": 0.0,
                "repetition_share": 0.0,
                "mid_layer_norm_ratio": 1.2,
                "attention_collapse_share": 0.02,
            },
            specs=specs,
        )
        contributions = {f.name: round(f.contribution, 4) for f in risk.factors}
        # e.g. entropy: 0.45 / (1 + e^2) = 0.0536; margin (low is bad): 0.30 / (1 + e^(0.25 / 0.07)) = 0.0082
        assert contributions == {
            "entropy_mean": 0.0536,
            "margin_mean": 0.0082,
            "surprisal_mean": 0.0103,
            "ngram_repeat_rate": 0.0138,
            "repetition_share": 0.0207,
            "mid_layer_norm_ratio": 0.0088,
            "attention_collapse_share": 0.006,
        }
        assert round(risk.score, 3) == 0.116 and risk.level == "low"

    def test_smollm2_loop_example(self):
        specs = load_profile("smollm2").factors
        risk = risk_score(
            {
                "entropy_mean": 1.8,
                "margin_mean": 0.55,
                "surprisal_mean": 0.6,
                "ngram_repeat_rate": 0.8,
                "repetition_share": 0.9,
                "mid_layer_norm_ratio": 1.3,
            },
            specs=specs,
        )
        assert round(risk.score, 3) == 0.961 and risk.level == "high"
        assert [f.name for f in risk.top_factors(2)] == ["repetition_share", "ngram_repeat_rate"]

    def test_nan_forces_one_whatever_the_factors(self):
        risk = risk_score({"entropy_mean": 0.1}, nonfinite=True, specs=load_profile("smollm2").factors)
        assert risk.score == 1.0 and risk.forced_by == "nan_or_inf"
