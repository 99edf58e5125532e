"""Property tests (hypothesis): the signal functions keep their documented ranges for any finite input, a built
report round-trips through JSON and validates against the schema, and the OTLP JSON reader and `corevital migrate`
survive any input without an unhandled exception.

`make test` runs the "quick" profile (few examples, a few seconds); `make test-long` sets
COREVITAL_HYPOTHESIS_PROFILE=long for many more.
"""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from opentelemetry_instrumentation_corevital import signals as sig
from opentelemetry_instrumentation_corevital.cli import main
from opentelemetry_instrumentation_corevital.report import (
    CaptureResult,
    GenerationRequest,
    ModelInfo,
    Report,
    RequestInfo,
    build_report,
    validate_report,
)
from opentelemetry_instrumentation_corevital.signals.factor import FactorSpec
from opentelemetry_instrumentation_corevital.signals.logits import truncated_stats
from opentelemetry_instrumentation_corevital.signals.profiles import load_profile
from opentelemetry_instrumentation_corevital.viewer.index import build_index, load_run

from .test_migrate import source

settings.register_profile(
    "quick", max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = os.environ.get("COREVITAL_HYPOTHESIS_PROFILE", "quick")
SETTINGS = settings.get_profile(PROFILE)
#: The file-based fuzz runs cost a file write per example: a fifth of the examples.
FILE_SETTINGS = settings(
    SETTINGS,
    max_examples=max(10, SETTINGS.max_examples // 5),
    # capsys is read (and so emptied) after every example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

EPS = 1e-9
LOGITS = st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=64)
UNIT = st.floats(0.0, 1.0)
MAYBE = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


# -- logit signals ----------------------------------------------------------------------------------------------


@SETTINGS
@given(LOGITS)
def test_softmax_is_a_distribution(logits):
    probs = sig.softmax(logits)
    assert len(probs) == len(logits)
    assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in probs)
    assert math.isclose(sum(probs), 1.0, rel_tol=1e-9)


@SETTINGS
@given(LOGITS)
def test_entropy_lies_between_zero_and_log2_vocab(logits):
    probs = sig.softmax(logits)
    entropy = sig.entropy_bits(probs)
    assert -EPS <= entropy <= math.log2(len(probs)) + 1e-6
    assert 1.0 - 1e-6 <= sig.perplexity(entropy) <= len(probs) * (1 + 1e-6)


@SETTINGS
@given(LOGITS, st.integers(1, 20))
def test_top_k_figures_are_ordered_probabilities(logits, k):
    probs = sig.softmax(logits)
    top1, margin, mass = sig.top1_prob(probs), sig.top_k_margin(probs), sig.top_k_mass(probs, k)
    assert 1.0 / len(probs) - EPS <= top1 <= 1.0
    assert 0.0 <= margin <= top1
    assert top1 - EPS <= mass <= 1.0 + 1e-9
    assert sig.top_k_mass(probs, k + 1) >= mass - EPS  # more tokens, no less mass


@SETTINGS
@given(st.floats(0.0, 1.0))
def test_surprisal_is_non_negative_bits(p):
    bits = sig.surprisal_bits(p)
    assert bits == math.inf if p == 0.0 else 0.0 <= bits <= 1075  # 2**-1074: the smallest double


@SETTINGS
@given(LOGITS, st.integers(1, 20))
def test_truncated_stats_bound_the_full_distribution(logits, k):
    probs = sig.softmax(logits)
    top = sorted(probs, reverse=True)[:k]
    assume(all(p > 0 for p in top))
    entropy, top1, margin, mass = truncated_stats([math.log(p) for p in top])
    assert entropy <= sig.entropy_bits(probs) + 1e-6  # a lower bound
    assert math.isclose(top1, max(probs), rel_tol=1e-9)
    assert 0.0 <= margin <= top1 and 0.0 < mass <= 1.0 + 1e-9


# -- risk ------------------------------------------------------------------------------------------------------

FINITE = st.floats(-1e300, 1e300, allow_nan=False)


@SETTINGS
@given(FINITE, FINITE, st.floats(1e-300, 1e300), st.floats(0.001, 0.999), st.booleans())
def test_a_factor_score_is_a_probability_monotone_in_its_value(value, midpoint, scale, weight, higher):
    spec = FactorSpec(midpoint, scale, weight, higher)
    score = spec.score(value)
    assert 0.0 <= score <= 1.0
    nudged = spec.score(value + abs(value) * 1e-3 + 1.0)
    assert nudged >= score if higher else nudged <= score


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(load_profile("default").factors)), MAYBE), st.booleans())
def test_risk_score_lies_in_the_unit_interval_for_any_signals(signals, nonfinite):
    risk = sig.risk_score(signals, nonfinite=nonfinite)
    assert 0.0 <= risk.score <= 1.0
    assert risk.level in ("low", "medium", "high")
    assert all(0.0 <= f.contribution <= 1.0 for f in risk.factors)
    if nonfinite:
        assert risk.score == 1.0 and risk.forced_by == "nan_or_inf"


# -- aggregates and repetition -----------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(MAYBE, max_size=50), st.floats(0.0, 100.0))
def test_aggregates_are_finite_and_within_the_finite_entries(values, q):
    kept = sig.finite(values)
    for value in (sig.mean(values), sig.percentile(values, q), sig.maximum(values), sig.minimum(values)):
        if not kept:
            assert value is None
            continue
        assume(all(abs(v) < 1e300 for v in kept))  # a sum of two 1e308 overflows by definition
        assert value is not None and math.isfinite(value)
        assert min(kept) - 1e-6 * abs(min(kept)) - EPS <= value <= max(kept) + 1e-6 * abs(max(kept)) + EPS
    assert sig.count_nonfinite(values) == len(values) - len(kept)


TOKENS = st.lists(st.integers(0, 5), max_size=80)


@SETTINGS
@given(TOKENS, st.integers(2, 4), st.integers(1, 10))
def test_a_repetition_loop_found_is_periodic_and_long_enough(tokens, min_cycles, min_tokens):
    loop = sig.find_repetition_loop(tokens, min_cycles=min_cycles, min_tokens=min_tokens)
    if loop is None:
        return
    stretch = tokens[loop.onset_step : loop.onset_step + loop.length]
    assert len(stretch) == loop.length >= max(min_cycles * loop.period, min_tokens)
    assert all(stretch[i] == stretch[i - loop.period] for i in range(loop.period, len(stretch)))
    assert 0.0 < loop.share <= 1.0


@SETTINGS
@given(TOKENS, st.integers(1, 6))
def test_ngram_repeat_rate_and_copied_steps_agree(tokens, n):
    rate = sig.ngram_repeat_rate(tokens, n)
    copied = sig.copied_steps(tokens, n)
    if len(tokens) < n:
        assert rate is None and not any(copied)
        return
    assert rate is not None and 0.0 <= rate <= 1.0
    assert math.isclose(rate, sum(copied) / (len(tokens) - n + 1))


# -- the report --------------------------------------------------------------------------------------------------

SERIES_NAMES = ("entropy", "surprisal", "top1_prob", "margin", "topk_mass")


@st.composite
def captures(draw) -> tuple[CaptureResult, GenerationRequest]:
    steps = draw(st.integers(0, 24))
    prompt = draw(st.lists(st.integers(3, 50), min_size=1, max_size=8))
    output = draw(st.lists(st.integers(2, 50), min_size=steps, max_size=steps))
    bits = st.one_of(st.none(), st.floats(0.0, 20.0))
    unit = st.one_of(st.none(), UNIT)
    series = {
        name: draw(st.lists(bits if name in ("entropy", "surprisal") else unit, min_size=steps, max_size=steps))
        for name in SERIES_NAMES
    }
    ends = sorted(draw(st.lists(st.floats(0.0, 60.0), min_size=steps, max_size=steps)))
    capture = CaptureResult(
        signals=True,
        prefix_len=len(prompt),
        steps=steps,
        rows=1,
        series=[series],
        sequences=[prompt + output],
        step_ends=ends,
    )
    request = GenerationRequest(
        params=RequestInfo(operation="text_completion", max_new_tokens=max(steps, 1)),
        capture_mode=draw(st.sampled_from(["summary", "full"])),
        duration_s=draw(st.floats(0.0, 1e6)),
        input_lengths=[len(prompt)],
        eos_token_ids=[2],
        pad_token_id=0,
        trace_id="ab" * 16,
        span_id="cd" * 8,
    )
    return capture, request


@SETTINGS
@given(captures())
def test_a_built_report_round_trips_through_json_and_validates(built):
    capture, request = built
    report = build_report(capture, ModelInfo(name="hypothesis"), request, load_profile("default"), None)
    text = report.to_json()
    data = json.loads(text)
    validate_report(data)
    assert Report.from_json(text).to_json() == text
    summary = data["summary"]
    assert summary["risk_score"] is None or 0.0 <= summary["risk_score"] <= 1.0


# -- fuzzing the readers -----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
OTLP_KEYS = st.sampled_from(
    [
        "resourceSpans",
        "resourceLogs",
        "resourceMetrics",
        "scopeSpans",
        "scopeLogs",
        "spans",
        "logRecords",
        "attributes",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "traceId",
        "spanId",
        "body",
        "eventName",
        "stringValue",
        "intValue",
        "doubleValue",
        "arrayValue",
        "kvlistValue",
        "values",
        "key",
        "value",
        "schema_version",
        "report_id",
        "created_at",
    ]
)
#: Values at and past the edges that broke the readers once (issue 13): huge integers and times, overflowing bits.
EXTREMES = st.sampled_from(
    [10**20, -(10**20), 2**63, 1e300, -1e300, 1024.0, "9" * 25, "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+05:00"]
)
OTLP_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.just("corevital.risk.score")
    | EXTREMES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(OTLP_KEYS, inner, max_size=5),
    max_leaves=30,
)


def good_lines() -> list[str]:
    from tests.viewer import handmade as h

    report = h.plain_report()
    return [
        json.dumps(h.traces_line([h.span(h.PLAIN_TRACE, h.PLAIN_SPAN, h.T0, 2.0, h.span_attributes(report))])),
        json.dumps(h.logs_line([h.report_record(report, h.PLAIN_TRACE, h.PLAIN_SPAN)])),
    ]


def paths(node, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a JSON document, containers included, as key paths."""
    inner = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [prefix, *(p for key, value in inner for p in paths(value, (*prefix, key)))]


def mutate(document, data) -> object:
    """``document`` with one value somewhere inside (any place equally likely) replaced by a drawn one."""
    path = data.draw(st.sampled_from(paths(document)))
    value = data.draw(EXTREMES | OTLP_JSON)
    if not path:
        return value
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


@FILE_SETTINGS
@given(st.data())
def test_the_otlp_reader_never_raises(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    lines = good_lines()
    extra = data.draw(
        st.lists(
            st.one_of(
                OTLP_JSON.map(json.dumps),
                st.sampled_from(lines).map(lambda line: json.dumps(mutate(json.loads(line), data))),
                st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
                st.sampled_from(lines).map(lambda line: line[: data.draw(st.integers(0, len(line)))]),
                st.just('{"resourceSpans": ' + "[" * 5000 + "]" * 5000 + "}"),  # past the recursion limit
            ),
            max_size=6,
        )
    )
    (folder / "traces.jsonl").write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8", errors="replace")
    index = build_index([str(folder)])
    assert any(r.model == "hand-made/plain-1.0" for r in index.runs)  # the good run stays
    for run in index.runs:
        assert isinstance(run.label, str)
        load_run(run)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return json.loads(source("report-0.3.0.json", tmp_path_factory.mktemp("sample")).read_text())


@FILE_SETTINGS
@given(st.data())
def test_migrate_never_raises(sample, tmp_path_factory, capsys, data):
    folder = tmp_path_factory.mktemp("migrate")
    document = mutate(sample, data)
    path = folder / "in.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    code = main(["migrate", str(path), str(folder / "out")])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    if code:
        assert err.startswith("corevital migrate: error: ") and err.count("\n") == 1, err
    else:
        assert out.startswith("migrated 1 report")


def test_the_quick_profile_is_small():
    """`make test` stays fast: the default profile runs a handful of examples; the long one many more."""
    assert settings.get_profile("quick").max_examples <= 25
    assert settings.get_profile("long").max_examples >= 1000
    assert PROFILE in ("quick", "long")
