"""The viewer's text helpers with exact values: previews, labels, axis expressions that no token text can break, and
the span's GenAI messages as a run's text when the report has none."""

from __future__ import annotations

import json

from opentelemetry_instrumentation_corevital import names as n
from opentelemetry_instrumentation_corevital.viewer import runlist, text
from opentelemetry_instrumentation_corevital.viewer.index import RunSummary


def test_preview_keeps_the_first_words_on_one_line():
    assert text.preview("A banana\nis  a fruit", words=3) == "A banana is …"
    assert text.preview("A banana", words=3) == "A banana"
    assert text.preview(None) is None


def test_labels_show_line_breaks_and_shorten_long_tokens():
    assert text.label("\n") == "⏎" and text.label("\tx") == "⇥x"
    assert text.label("abcdefghijklmnop", limit=5) == "abcd…"


def test_axis_expression_is_an_ascii_literal_whatever_the_tokens_hold():
    tokens = ['"x"', "\\", "é\n", "']"]
    assert text.axis_labels(tokens) == r"""["\"x\"", "\\", "\u00e9\u23ce", "']"][datum.value] || datum.value"""
    literal = text.axis_labels(tokens).split("[datum.value]")[0]  # type: ignore[union-attr]
    assert json.loads(literal) == ['"x"', "\\", "é⏎", "']"]
    assert text.axis_labels(None) is None and text.axis_labels([]) is None


def test_a_span_with_content_gives_the_text_and_a_report_wins_over_it():
    messages = [{"role": "user", "parts": [{"type": "text", "content": "Tell me about a banana"}]}]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "Bananas are yellow."}]}]
    span = {n.INPUT_MESSAGES: json.dumps(messages), n.OUTPUT_MESSAGES: json.dumps(answer)}
    assert text.texts(None, span) == text.Texts("Tell me about a banana", "Bananas are yellow.")
    report = {"summary": {"riskiest_sequence": 1}, "sequences": [{"index": 0, "output_text": "first"}, {"index": 1}]}
    # the riskiest sequence has no output text: the span's is shown; the search keeps every sequence's
    assert text.texts(report, span) == text.Texts("Tell me about a banana", "Bananas are yellow.")
    assert text.searchable(report, span) == {"prompt": "Tell me about a banana", "output": "first"}
    assert text.texts(None, {n.INPUT_MESSAGES: "not json"}) == text.Texts(None, None)


def test_search_reads_prompt_and_output_in_any_case():
    runs = [
        RunSummary(key="a", model="m", prompt="Tell me about a Banana", output="Yellow."),
        RunSummary(key="b", model="m", prompt="Name a colour", output="banana yellow"),
        RunSummary(key="c", model="m"),
    ]
    assert [r.key for r in runlist.filter_runs(runs, text="BANANA")] == ["a", "b"]
    assert [r.key for r in runlist.filter_runs(runs, text="colour")] == ["b"]
    assert [row["output"] for row in runlist.rows(runs)] == ["Yellow.", "banana yellow", "–"]
