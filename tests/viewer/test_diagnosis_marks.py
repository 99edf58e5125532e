"""Diagnosis on the charts (issue 16): colours by the run's own threshold, fixed risk-factor scale, per-layer
normalised heatmaps, and marks at the steps where loops, compound signals, warnings and a stop began."""

from __future__ import annotations

import json

import pytest

from opentelemetry_instrumentation_corevital import names as n
from opentelemetry_instrumentation_corevital.viewer import _charts, marks, scales
from opentelemetry_instrumentation_corevital.viewer.index import RunDetail, RunSummary

from .conftest import real_reports
from .test_app import charts, texts
from .test_links import linked


def detail(report: dict | None = None, span: dict | None = None) -> RunDetail:
    return RunDetail(summary=RunSummary(key="t:s"), report=report, span=span)


def test_entropy_colour_follows_the_threshold():
    red, yellow, green = (f"background-color: {c}" for c in (scales.HIGH, scales.MIDDLE, scales.LOW))
    assert [scales.entropy_colour(v, 7.0) for v in (7.01, 7.0, 3.5, 3.49, 0.0)] == [red, yellow, yellow, green, green]
    assert [scales.entropy_colour(v, 4.0) for v in (5.0, 2.0, 1.9)] == [red, yellow, green]
    assert [scales.entropy_colour(v, None) for v in (9.0, 0.1)] == ["", ""]  # no threshold known: no verdict
    assert [scales.entropy_colour(v, 7.0) for v in (None, float("nan"))] == ["", ""]


def test_threshold_from_the_report_else_the_spans_profile():
    assert scales.high_entropy_bits(detail({"thresholds": {"high_entropy_bits": 9}})) == 9.0
    assert scales.high_entropy_bits(detail(span={n.PROFILE: "smollm2"})) == 7.0  # profiles/smollm2.json
    assert scales.high_entropy_bits(detail(span={n.PROFILE: "/etc/passwd"})) is None  # built-in names only
    assert scales.high_entropy_bits(detail({})) is None


def test_per_layer_scaling():
    cells = [
        {"layer": 0, "step": 0, "value": 1.0},
        {"layer": 0, "step": 1, "value": 3.0},
        {"layer": 0, "step": 2, "value": 5.0},
        {"layer": 9, "step": 0, "value": 500.0},
        {"layer": 9, "step": 1, "value": 500.0},
        {"layer": 9, "step": 2, "value": None},
    ]
    assert [c["scaled"] for c in scales.per_layer_scaled(cells)] == [0.0, 0.5, 1.0, 0.5, 0.5, None]
    assert [c["value"] for c in scales.per_layer_scaled(cells)] == [c["value"] for c in cells]  # tooltips keep it


def test_risk_factor_bars_on_a_fixed_scale():
    spec = _charts.factor_bars([{"name": "entropy_mean", "contribution": 0.07}]).to_dict()
    assert spec["encoding"]["x"]["scale"] == {"domain": [0, 1], "clamp": True}


def test_marks_from_a_report_and_from_a_span():
    seq = {
        "index": 2,
        "flags": {
            "repetition_loop": True,
            "repetition_onset_step": 6,
            "repetition_period": 2,
            "attention_collapse": False,
            "attention_collapse_onset_step": 3,  # did not fire: no mark
        },
        "diagnosis": {
            "compound": [{"name": "confident_repetition", "onset_step": 9, "severity": 0.5}],
            "warnings": [{"name": "margin_collapse", "onset_step": 4, "detected_step": 7, "value": 0.3}],
        },
        "intervention": {"condition": "repetition_loop", "step": 11},
    }
    found = marks.marks(detail({"sequences": [{"index": 0}, seq]}), 2, riskiest=True)
    assert marks.rows(found) == [
        {"step": 4, "label": "margin_collapse", "kind": "warning"},
        {"step": 6, "label": "loop onset (period 2)", "kind": "loop"},
        {"step": 9, "label": "confident_repetition", "kind": "compound"},
        {"step": 11, "label": "stopped by stop_on (repetition_loop)", "kind": "stop"},
    ]
    assert marks.marks(detail({"sequences": [{"index": 0}, seq]}), 0, riskiest=False) == []
    span = {
        n.FLAG_PREFIX + "repetition_loop": True,
        n.REPETITION_ONSET_STEP: 5,
        n.COMPOUND: ["degeneration"],
        n.COMPOUND_ONSET_STEPS: [8],
        n.WARNINGS: ["entropy_acceleration", "bad"],
        n.WARNING_ONSET_STEPS: [2, -1],
    }
    assert [(m.step, m.label) for m in marks.marks(detail(span=span), 0, riskiest=True)] == [
        (2, "entropy_acceleration"),
        (5, "loop onset"),
        (8, "degeneration"),
    ]
    assert marks.marks(detail(span=span), 1, riskiest=False) == []  # a span tells only of the riskiest sequence


def _layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


@pytest.mark.slow
def test_a_looping_real_run_is_marked_at_its_onset_and_coloured_by_its_threshold(monkeypatch, batch_dir):
    batch, stopped = real_reports(batch_dir)
    riskiest = batch["sequences"][batch["summary"]["riskiest_sequence"]]
    onset = riskiest["flags"]["repetition_onset_step"]
    period = riskiest["flags"]["repetition_period"]
    at = linked(monkeypatch, batch_dir, run=batch["trace_id"])
    entropy = charts(at)["entropy (bits)"]
    drawn = [f for f in entropy if "label" in f]
    assert len(drawn) == 1 and (onset, f"loop onset (period {period})") in zip(drawn[0]["step"], drawn[0]["label"])
    spec = next(json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if "entropy (bits)" in c.proto.spec)
    assert [layer["mark"]["type"] for layer in _layers(spec)][-2:] == ["rule", "text"]
    caption = next(c for c in texts(at.caption) if c.startswith("Marked: "))
    assert f"loop onset (period {period}) at step {onset}" in caption
    # The step table: red only above the profile's threshold (smollm2: 7 bits), said under the table.
    bits = batch["thresholds"]["high_entropy_bits"]
    assert bits == 7.0
    assert any(c.startswith(f"Entropy cells: red above {bits:g} bits") for c in texts(at.caption))
    # The stopped run: its stop marked at the step it ended.
    at = linked(monkeypatch, batch_dir, run=stopped["trace_id"])
    step = stopped["sequences"][0]["intervention"]["step"]
    (drawn,) = [f for f in charts(at)["entropy (bits)"] if "label" in f]
    assert (step, "stopped by stop_on (repetition_loop)") in zip(drawn["step"], drawn["label"])
