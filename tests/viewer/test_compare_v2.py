"""Compare that works (issue 16): plots keep their height, real fingerprints, texts, highlights, a clearable picker."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest

from opentelemetry_instrumentation_corevital.viewer import app, build_index, messages

from . import handmade as h
from .conftest import real_reports
from .test_app import DEEP_LABEL, KEYS, TWIN_LABEL, charts, start, texts
from .test_cli_view import corevital

FIT_WIDTH_ONLY = {"type": "fit-x", "contains": "padding"}


def specs(at) -> dict[str, dict]:
    """Chart title -> its Vega-Lite spec as Streamlit sent it."""
    return {(s := json.loads(c.proto.spec)).get("title"): s for c in at.get("vega_lite_chart")}


def compare(at, keys: list[str]):
    at.radio(key="view").set_value("Compare").run()
    at.multiselect(key="compare").set_value(keys).run()
    assert not at.exception, at.exception
    return at


def highlighted_rows(element) -> set[int]:
    """Rows of a styled dataframe whose cells carry the "differs" background."""
    rows = set()
    for rule in element.proto.arrow_data.styler.styles.split("}"):
        if app.DIFFERS_CSS in rule:
            rows |= {int(r) for r in re.findall(r"_row(\d+)_col\d+", rule)}
    return rows


def test_overlay_plots_keep_their_height_with_2_and_5_runs(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    every = list(KEYS.values()) + [r.key for r in build_index([str(good_dir)]).runs if r.key not in KEYS.values()]
    assert len(every) == 5
    for keys in (every[:2], every):
        compare(at, keys)
        overlays = {t: s for t, s in specs(at).items() if t in ("entropy (bits)", "margin (top-1 − top-2)")}
        assert overlays, specs(at).keys()
        for title, spec in overlays.items():
            # Streamlit keeps a chart's own autosize; "fit-x" makes height the plot area's, the legend below it.
            assert spec["height"] == 300 and spec["autosize"] == FIT_WIDTH_ONLY, title
            assert spec["encoding"]["color"]["legend"]["orient"] == "bottom", title
        (entropy,) = charts(at)["entropy (bits)"]
        assert entropy["run"].nunique() == (2 if len(keys) == 2 else 4)  # the span-only run has no entropy series


def test_performance_and_run_charts_keep_their_height(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    assert specs(at)["Risk of each run"]["autosize"] == FIT_WIDTH_ONLY
    at.radio(key="view").set_value("Performance").run()
    spec = specs(at)["Time to first token and per-token time"]
    assert spec["height"] == 240 and spec["autosize"] == FIT_WIDTH_ONLY
    assert spec["encoding"]["color"]["legend"]["orient"] == "bottom"


def test_picker_can_be_cleared(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    at.radio(key="view").set_value("Compare").run()
    assert len(at.multiselect(key="compare").value) == 2  # the first two runs on arrival
    at.multiselect(key="compare").set_value([]).run()
    assert at.multiselect(key="compare").value == []
    assert texts(at.info) == ["Pick two or more runs to compare."]
    at.multiselect(key="compare").set_value([KEYS[DEEP_LABEL]]).run()
    assert at.multiselect(key="compare").value == [KEYS[DEEP_LABEL]]


def test_differing_figures_are_highlighted(monkeypatch, good_dir):
    at = compare(start(monkeypatch, good_dir), [KEYS[DEEP_LABEL], KEYS[TWIN_LABEL]])
    table = at.dataframe[0].value
    differ = {
        i for i, row in table.iterrows() if row[DEEP_LABEL] != row[TWIN_LABEL]
    }  # the deep run and its twin differ in model name (and fingerprint) only
    assert [table["figure"][i] for i in sorted(differ)] == ["model"]
    assert highlighted_rows(at.dataframe[0]) == differ
    assert "Highlighted: figures that differ between the runs." in texts(at.caption)


def by_hand(a: list[float | None], b: list[float | None]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b) if x is not None and y is not None))


@pytest.mark.slow
def test_real_runs_fingerprint_distance_from_reports_and_from_spans(monkeypatch, real_dir, tmp_path):
    greedy, sampled = real_reports(real_dir)
    prints = [r["sequences"][r["summary"]["riskiest_sequence"]]["diagnosis"]["fingerprint"] for r in (greedy, sampled)]
    assert [p["version"] for p in prints] == [1, 1] and "fingerprint" not in greedy["summary"]
    expected = by_hand(prints[0]["vector"], prints[1]["vector"])
    assert expected > 0
    spans_only = tmp_path / "spans"
    spans_only.mkdir()
    shutil.copy(real_dir / "traces.jsonl", spans_only / "traces.jsonl")
    for folder in (real_dir, spans_only):  # the report's sequences[].diagnosis, then the span's corevital.fingerprint
        runs = {r.span_id: r for r in build_index([str(folder)]).runs}
        a, b = runs[greedy["span_id"]], runs[sampled["span_id"]]
        at = compare(start(monkeypatch, folder), [a.key, b.key])
        assert not any("Fingerprint distance needs" in t for t in texts(at.info))
        matrix = at.dataframe[1].value
        assert list(matrix["run"]) == [a.label, b.label]
        assert matrix[b.label].tolist() == pytest.approx([expected, 0.0], rel=1e-12)
        assert matrix[a.label].tolist() == pytest.approx([0.0, expected], rel=1e-12)
        result = corevital("compare", greedy["span_id"], sampled["span_id"], "--in", str(folder))
        assert result.stdout.splitlines()[-2].split() == [a.short_id, "0.0000", f"{expected:.4f}"], result.stderr


@pytest.mark.slow
def test_real_runs_texts_side_by_side(monkeypatch, real_dir):
    greedy, sampled = real_reports(real_dir)  # content captured for the greedy run only
    runs = {r.span_id: r for r in build_index([str(real_dir)]).runs}
    at = compare(start(monkeypatch, real_dir), [runs[greedy["span_id"]].key, runs[sampled["span_id"]].key])
    seq = greedy["sequences"][0]
    assert [c.value for c in at.code] == [seq["input_text"].strip(), seq["output_text"].strip()]  # st.code strips
    assert "Texts (riskiest sequence of each run)" in texts(at.subheader)
    assert messages.NO_COMPARE_TEXT in texts(at.caption)  # in the sampled run's column


def test_cli_compare_prints_the_table_marks_differences_and_distances(good_dir):
    no_viewer_extra = "import sys; sys.modules['streamlit'] = sys.modules['altair'] = None"  # as if not installed
    result = corevital("compare", h.DEEP_SPAN[:8], h.TWIN_TRACE, "--in", str(good_dir), prelude=no_viewer_extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"{h.DEEP_SPAN[:8]}  {DEEP_LABEL}", f"{h.TWIN_SPAN[:8]}  {TWIN_LABEL}"]
    table = {line[3:].split("  ")[0]: line for line in lines[3:20]}
    assert [f for f, line in table.items() if line.startswith("≠")] == ["model"]
    assert table["risk score"].split() == ["risk", "score", "0.500", "0.500"]
    assert lines[-3:] == [
        f"{'':8}  {h.DEEP_SPAN[:8]}  {h.TWIN_SPAN[:8]}",
        f"{h.DEEP_SPAN[:8]}  0.0000    1.0000",
        f"{h.TWIN_SPAN[:8]}  1.0000    0.0000",
    ]
    result = corevital("compare", h.DEEP_SPAN[:8], h.PLAIN_SPAN, "--in", str(good_dir))
    assert result.stdout.splitlines()[-1] == messages.NO_FINGERPRINT.format(runs=h.PLAIN_SPAN[:8])


def test_cli_compare_names_what_it_cannot_find(good_dir, tmp_path):
    result = corevital("compare", "0000", h.DEEP_SPAN, "--in", str(good_dir))
    assert (result.returncode, result.stderr) == (1, f"corevital compare: error: no run matches '0000' in {good_dir}\n")
    result = corevital("compare", h.DEEP_SPAN, "--in", str(good_dir))
    assert (result.returncode, result.stderr) == (1, "corevital compare: error: name two or more runs to compare\n")
    result = corevital("compare", "a", "b", "--in", str(tmp_path / "nope"))
    assert result.stderr == f"corevital compare: error: {tmp_path / 'nope'}: no such file or folder\n"
