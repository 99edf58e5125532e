"""Answer uncertainty (RAUQ): the recurrence and aggregation by hand, and its place in reports and spans."""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalMonitor, Report, names, validate_report
from opentelemetry_instrumentation_corevital.report import SequenceReport, finish_summary
from opentelemetry_instrumentation_corevital.report._model import UncertaintyInfo
from opentelemetry_instrumentation_corevital.signals.uncertainty import (
    answer_uncertainty,
    layer_uncertainty,
    middle_third,
    recurrent_confidence,
)
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm


def test_recurrence_by_hand():
    # c0 = 0.5; c1 = 0.2*0.8 + 0.8*0.5*0.5 = 0.36; c2 = 0.2*1.0 + 0.8*0.25*0.36 = 0.272
    conf = recurrent_confidence([0.5, 0.8, 1.0], [None, 0.5, 0.25])  # type: ignore[list-item]
    assert conf == pytest.approx([0.5, 0.36, 0.272])
    assert layer_uncertainty([0.5, 0.8, 1.0], [0.0, 0.5, 0.25]) == pytest.approx(
        -(math.log(0.5) + math.log(0.36) + math.log(0.272)) / 3
    )


def test_a_confident_answer_attending_its_previous_token_is_certain():
    assert layer_uncertainty([1.0, 1.0, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.0)
    # the same probabilities with the attention gone: the carried confidence drops to alpha
    assert layer_uncertainty([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]) == pytest.approx(-2 * math.log(0.2) / 3)


def test_middle_third_is_the_papers_layer_range():
    assert list(middle_third(30)) == list(range(10, 21))
    assert list(middle_third(32)) == list(range(10, 23))
    assert list(middle_third(2)) == [0, 1]
    assert list(middle_third(1)) == [0]


def test_the_most_uncertain_middle_layer_wins():
    surprisal = [1.0, 0.0]  # p = 0.5, 1.0
    prev = [[0.9, 0.9], [0.1, 0.1], [0.9, 0.5]]  # three layers: middle third of 3 is positions 1 and 2
    found = answer_uncertainty(surprisal, prev, [4, 5, 6])
    # position 1: c = 0.5, 0.2 + 0.8*0.1*0.5 = 0.24; position 2: c = 0.5, 0.2 + 0.8*0.5*0.5 = 0.4
    expected = -(math.log(0.5) + math.log(0.24)) / 2
    assert found is not None and found.layer == 5 and found.tokens == 2
    assert found.value == pytest.approx(expected)
    assert found.score == pytest.approx(1 - math.exp(-expected))


def test_missing_values_give_no_score():
    assert answer_uncertainty([], [[0.5]], [0]) is None
    assert answer_uncertainty([None, 1.0], [[0.5, 0.5]], [0]) is None
    assert answer_uncertainty([1.0, 1.0], [[0.5, None]], [0]) is None
    # the first step's weight is never used
    assert answer_uncertainty([1.0, 1.0], [[None, 0.5]], [0]) is not None


def test_full_capture_reports_it_and_the_span_carries_it():
    model = tiny_causal_lm("llama")
    prompt = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
    with TelemetryCapture(capture="full") as tc:
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    (report,) = tc.reports
    validate_report(report.to_dict())
    seq = report.sequences[0]
    expected = answer_uncertainty(seq.timeline.surprisal, seq.layers.attn_prev_token, seq.layers.indices)
    assert seq.uncertainty is not None and expected is not None
    assert seq.uncertainty.score == pytest.approx(expected.score) and seq.uncertainty.tokens == 6
    assert report.summary.uncertainty == seq.uncertainty.score
    (span,) = tc.spans()
    assert span.attributes[names.UNCERTAINTY_SCORE] == pytest.approx(seq.uncertainty.score)
    assert span.attributes[names.UNCERTAINTY_LAYER] == seq.uncertainty.layer
    again = type(report).from_json(report.to_json())
    assert again.sequences[0].uncertainty == seq.uncertainty


def test_the_summary_names_the_most_uncertain_sequence_first_of_ties():
    def seq(index: int, score: float | None) -> SequenceReport:
        found = UncertaintyInfo(score=score, layer=index, tokens=3) if score is not None else None
        return SequenceReport(index=index, prompt_tokens=4, output_tokens=3, finish_reason="length", uncertainty=found)

    summary = finish_summary([seq(0, 0.2), seq(1, None), seq(2, 0.7), seq(3, 0.4)])
    assert (summary.uncertainty, summary.uncertain_sequence) == (0.7, 2)
    summary = finish_summary([seq(0, 0.3), seq(1, 0.5), seq(2, 0.5)])
    assert (summary.uncertainty, summary.uncertain_sequence) == (0.5, 1)
    summary = finish_summary([seq(0, None), seq(1, None)])
    assert (summary.uncertainty, summary.uncertain_sequence) == (None, None)


def test_a_batch_names_its_most_uncertain_sequence_and_the_span_gives_that_sequences_layer():
    model = tiny_causal_lm("llama")
    prompt = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
    torch.manual_seed(0)
    with TelemetryCapture(capture="full") as tc:
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=6,
            do_sample=True,
            num_return_sequences=3,
        )
    (report,) = tc.reports
    validate_report(report.to_dict())
    found = [s.uncertainty for s in report.sequences]
    assert all(u is not None for u in found) and len({u.score for u in found}) == 3
    most = max(range(3), key=lambda i: found[i].score)
    # the case that tells the summary's choice from the first sequence: another sequence, another layer
    assert most != 0 and found[most].layer != found[0].layer
    assert report.summary.uncertain_sequence == most
    assert report.summary.uncertainty == found[most].score
    (span,) = tc.spans()
    assert span.attributes[names.UNCERTAINTY_LAYER] == found[most].layer
    assert span.attributes[names.UNCERTAINTY_SCORE] == found[most].score
    assert type(report).from_json(report.to_json()).summary.uncertain_sequence == most


def test_a_1_4_report_without_the_uncertain_sequence_still_reads():
    model = tiny_causal_lm("llama")
    prompt = torch.tensor([[1, 17, 42, 99]])
    with TelemetryCapture(capture="full") as tc:
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    data = tc.reports[0].to_dict()
    assert data["schema_version"] == "1.5.0" and data["summary"]["uncertain_sequence"] == 0
    data["schema_version"] = "1.4.0"
    del data["summary"]["uncertain_sequence"]
    validate_report(data)
    old = Report.from_dict(data)
    assert old.summary.uncertain_sequence is None and old.summary.uncertainty == data["summary"]["uncertainty"]


def test_summary_capture_says_why_there_is_none():
    model = tiny_causal_lm("llama")
    prompt = torch.tensor([[1, 17, 42, 99]])
    monitor = CoreVitalMonitor(capture="summary")
    monitor.generate(model, prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    seq = monitor.report.sequences[0]
    assert seq.uncertainty is None and monitor.report.summary.uncertainty is None
    assert monitor.report.summary.uncertain_sequence is None
    assert "capture='full'" in seq.diagnosis.unavailable["uncertainty"]


def test_the_narrative_names_it_apart_from_the_risk_only_where_there_is_room():
    from opentelemetry_instrumentation_corevital.signals.narrative import Finding, NarrativeFacts, narrative

    text = narrative(NarrativeFacts(steps=6, risk=0.1, level="low", uncertainty=0.83))
    assert text.startswith("Risk 0.10 (low) over 6 tokens.")
    assert (
        "Answer uncertainty 0.83: a separate, label-free score of how likely the answer itself is wrong (it ranks "
        "one model's answers; its level is not a probability)." in text
    )
    findings = tuple(Finding("warning", f"Finding {i}.", i) for i in range(2))
    crowded = NarrativeFacts(
        steps=6, risk=0.9, level="high", uncertainty=0.83, findings=findings, peak_entropy=5.0, peak_step=2
    )
    text = narrative(crowded)
    assert "Finding 0." in text and "Finding 1." in text and "Answer uncertainty" not in text
