"""Each capture mode emits exactly the documented span attributes, events, log records and metric series."""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital.emit import select_steps
from opentelemetry_instrumentation_corevital.emit._steps import EVENT_RESERVE
from opentelemetry_instrumentation_corevital.report import (
    Report,
    SequenceReport,
    Thresholds,
    Timeline,
    Timings,
)
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

from .test_host_syncs import reads
from .test_instrumentation import COREVITAL_SUMMARY_TYPES, GENAI_SUMMARY_TYPES

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
FULL_EXTRA = {
    "corevital.capture.detail": str,
    "corevital.layers.update_ratio": tuple,
    "corevital.layers.hidden_cos_prev": tuple,
    "corevital.layers.attn_entropy": tuple,
    "corevital.layers.attn_collapsed_fraction": tuple,
    "corevital.layers.attn_sink_mass": tuple,
    "corevital.layers.attn_prompt_mass": tuple,
    "corevital.prompt.tokens": int,
    "corevital.prompt.perplexity": float,
    "corevital.prompt.surprisal": tuple,
    "corevital.prompt.basin": tuple,
    "corevital.step_events.total": int,
    "corevital.step_events.sampled": bool,
    "corevital.uncertainty.score": float,
    "corevital.uncertainty.layer": int,
}
#: What a full capture adds to the summary span whatever detail it emits: the answer uncertainty.
UNCERTAINTY = {"corevital.uncertainty.score", "corevital.uncertainty.layer"}
STEP_EVENT_KEYS = {
    "corevital.step",
    "corevital.entropy",
    "corevital.surprisal",
    "corevital.margin",
    "corevital.top1_prob",
    "corevital.topk_mass",
    "corevital.anomalous",
}
STEP_LOG_KEYS = STEP_EVENT_KEYS | {
    "gen_ai.request.model",
    # the generation's risk and operation on every step record, for Collector routing
    "gen_ai.operation.name",
    "corevital.risk.level",
    "corevital.risk.score",
}
STEP_LOG_LAYER_KEYS = {
    "indices",
    "hidden_norm",
    "update_ratio",
    "hidden_cos_prev",
    "attn_entropy",
    "attn_collapsed_fraction",
    "attn_sink_mass",
    "attn_prompt_mass",
}
BASE_METRICS = {
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "gen_ai.server.time_to_first_token",
    "gen_ai.server.time_per_output_token",
    "corevital.risk.score",
    "corevital.health.flags",
    "corevital.token.entropy",
}
FULL_METRICS = BASE_METRICS | {"corevital.uncertainty.score"}
LAYER_METRICS = {
    "corevital.layer.hidden_norm",
    "corevital.layer.attn_entropy",
    "corevital.layer.attn_collapsed_fraction",
}


def run(mode: str, steps: int = 6, model=None, **options):
    model = model or tiny_causal_lm("llama")
    with TelemetryCapture(capture=mode, **options) as tc:
        model.generate(
            PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=steps, min_new_tokens=steps, do_sample=False
        )
    (span,) = tc.spans()
    return tc, span


class TestSummary:
    def test_span_events_logs_and_metrics(self):
        tc, span = run("summary")
        assert set(span.attributes) == set(GENAI_SUMMARY_TYPES) | set(COREVITAL_SUMMARY_TYPES)
        assert span.attributes["corevital.layers.indices"] == (0, 1)
        assert len(span.attributes["corevital.layers.hidden_norm"]) == 2
        assert span.events == ()
        assert tc.logs() == []
        assert set(tc.metrics()) == BASE_METRICS
        report = tc.reports[0]
        assert report.sequences[0].layers.attn_entropy is None and report.sequences[0].prompt is None


class TestFull:
    def test_span_attributes_are_summary_plus_the_documented_full_set(self):
        tc, span = run("full")
        expected = {**GENAI_SUMMARY_TYPES, **COREVITAL_SUMMARY_TYPES, **FULL_EXTRA}
        assert set(span.attributes) == set(expected)
        for key, kind in expected.items():
            assert type(span.attributes[key]) is kind, key
        assert span.attributes["corevital.capture.detail"] == "full"
        assert span.attributes["corevital.step_events.total"] == 6
        assert span.attributes["corevital.step_events.sampled"] is False
        assert len(span.attributes) < 100

    def test_one_event_and_one_log_record_per_step(self):
        tc, span = run("full")
        report = tc.reports[0]
        assert [e.name for e in span.events] == ["corevital.step"] * 6
        assert [e.attributes["corevital.step"] for e in span.events] == list(range(6))
        for event, entropy in zip(span.events, report.sequences[0].timeline.entropy):
            assert set(event.attributes) == STEP_EVENT_KEYS
            assert event.attributes["corevital.entropy"] == entropy
        assert [e.timestamp for e in span.events] == sorted(e.timestamp for e in span.events)
        assert span.start_time <= span.events[0].timestamp <= span.events[-1].timestamp <= span.end_time
        logs = [r.log_record for r in tc.logs()]
        assert [r.event_name for r in logs] == ["corevital.generation.step"] * 6
        ctx = span.get_span_context()
        for step, record in enumerate(logs):
            assert set(record.attributes) == STEP_LOG_KEYS
            assert record.attributes["corevital.step"] == step
            assert record.trace_id == ctx.trace_id and record.span_id == ctx.span_id
            assert set(record.body["layers"]) == STEP_LOG_LAYER_KEYS
            assert record.body["layers"]["indices"] == [0, 1]
            assert record.body["layers"]["hidden_norm"] == [row[step] for row in report.sequences[0].layers.hidden_norm]
            assert record.body["summary"].startswith(f"step {step}: entropy ")

    def test_per_layer_histograms_with_the_layer_index_only(self):
        tc, _ = run("full", layer_groups=0)  # every layer its own series (the default groups them)
        metrics = tc.metrics()
        assert set(metrics) == FULL_METRICS | LAYER_METRICS
        base = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model"}
        report = tc.reports[0]
        for name in LAYER_METRICS:
            points = metrics[name].data.data_points
            assert {p.attributes["corevital.layer.index"] for p in points} == {0, 1}
            assert all(set(p.attributes) == base | {"corevital.layer.index"} for p in points)
            assert all(p.count == 1 for p in points)
        norms = {
            p.attributes["corevital.layer.index"]: p.sum
            for p in metrics["corevital.layer.hidden_norm"].data.data_points
        }
        for layer, row in enumerate(report.sequences[0].layers.hidden_norm):
            assert norms[layer] == pytest.approx(sum(row) / len(row))

    def test_switches_turn_each_carrier_off(self):
        tc, span = run("full", step_events=False, step_logs=False, layer_metrics=False)
        assert span.events == ()
        assert tc.logs() == []
        assert set(tc.metrics()) == FULL_METRICS
        assert "corevital.step_events.total" not in span.attributes

    def test_long_generation_keeps_events_under_the_sdk_limit(self):
        tc, span = run("full", steps=300)
        assert len(span.events) == 128 - EVENT_RESERVE
        assert span.dropped_events == 0
        assert span.attributes["corevital.step_events.total"] == 300
        assert span.attributes["corevital.step_events.sampled"] is True
        assert len(tc.logs()) == 300  # the complete record is in the logs

    def test_mixtral_adds_router_series(self):
        tc, span = run("full", model=tiny_causal_lm("mixtral"))
        assert len(span.attributes["corevital.layers.router_entropy"]) == 2
        assert len(span.attributes["corevital.layers.expert_load_balance"]) == 2


class TestOnRisk:
    def test_below_threshold_emits_summary_detail(self):
        tc, span = run("on_risk", on_risk_threshold=1.0)
        report = tc.reports[0]
        assert report.capture.mode == "on_risk" and report.capture.detail == "summary"
        assert span.attributes["corevital.capture.detail"] == "summary"
        # the capture was full: the answer uncertainty is kept with the summary detail
        assert set(span.attributes) == set(GENAI_SUMMARY_TYPES) | set(COREVITAL_SUMMARY_TYPES) | UNCERTAINTY | {
            "corevital.capture.detail"
        }
        assert span.events == () and tc.logs() == []
        seq = report.sequences[0]
        assert seq.layers.hidden_norm and seq.layers.attn_entropy is None and seq.prompt is None

    def test_above_threshold_emits_full_detail(self):
        tc, span = run("on_risk", on_risk_threshold=0.0)
        report = tc.reports[0]
        assert report.capture.detail == "full"
        assert set(span.attributes) == set(GENAI_SUMMARY_TYPES) | set(COREVITAL_SUMMARY_TYPES) | set(FULL_EXTRA)
        assert len(span.events) == 6 and len(tc.logs()) == 6
        assert report.sequences[0].prompt is not None


class TestEventSelection:
    @staticmethod
    def report_with(entropies: list[float | None], threshold: float = 4.0, onset: int | None = None) -> Report:
        seq = SequenceReport(
            index=0,
            prompt_tokens=3,
            output_tokens=len(entropies),
            finish_reason="length",
            timeline=Timeline(entropy=entropies, surprisal=[1.0] * len(entropies)),
        )
        seq.flags.repetition_onset_step = onset
        report = Report.__new__(Report)
        report.sequences = [seq]
        report.thresholds = Thresholds(threshold, 3, 12, 32)
        report.timings = Timings(duration_s=1.0)
        return report

    def test_everything_fits(self):
        pairs, sampled = select_steps(self.report_with([1.0] * 5), budget=5)
        assert pairs == [(0, t) for t in range(5)] and not sampled

    def test_anomalous_steps_first_then_an_even_sample(self):
        entropies = [1.0] * 20
        entropies[3], entropies[17] = 5.0, None  # one high-entropy step, one non-finite step
        pairs, sampled = select_steps(self.report_with(entropies, onset=9), budget=6)
        assert sampled
        steps = [t for _, t in pairs]
        assert {3, 9, 17} <= set(steps)
        # the other 3 are spread over the 17 ordinary steps: indices 0, 17/3, 34/3 of that list
        ordinary = [t for t in range(20) if t not in (3, 9, 17)]
        assert sorted(set(steps) - {3, 9, 17}) == [ordinary[0], ordinary[5], ordinary[11]]

    def test_too_many_anomalies_keeps_the_worst(self):
        entropies = [4.5, 6.0, 5.0, 7.0, 4.1]
        pairs, sampled = select_steps(self.report_with(entropies), budget=2)
        assert sampled and [t for _, t in pairs] == [1, 3]


@pytest.mark.parametrize("mode", ["full", "on_risk"])
def test_host_reads_stay_constant_in_every_mode(tiny_llama, mode):
    plain_short, plain_long = reads(tiny_llama, 4), reads(tiny_llama, 40)
    with TelemetryCapture(capture=mode):
        ours_short, ours_long = reads(tiny_llama, 4), reads(tiny_llama, 40)
    assert ours_short - plain_short == ours_long - plain_long
    # one device-to-host copy of everything, then per-part views on the host (tolist), the sequences,
    # the prompt ids and the attention mask: a fixed number whatever the number of steps
    assert 0 < ours_short - plain_short <= 16


def test_host_reads_stay_constant_with_beams(tiny_llama):
    plain_short, plain_long = reads(tiny_llama, 4, num_beams=3), reads(tiny_llama, 24, num_beams=3)
    with TelemetryCapture(capture="full"):
        ours_short, ours_long = reads(tiny_llama, 4, num_beams=3), reads(tiny_llama, 24, num_beams=3)
    assert ours_short - plain_short == ours_long - plain_long


def test_no_nan_reaches_a_metric():
    tc, _ = run("full")
    for metric in tc.metrics().values():
        for point in metric.data.data_points:
            value = getattr(point, "sum", getattr(point, "value", 0))
            assert math.isfinite(value)
