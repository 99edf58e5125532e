"""URL state (issue 16): ``?run=<trace_id>[:<span_id>]`` opens that run, and the URL follows the view for reloads."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from opentelemetry_instrumentation_corevital.viewer import APP_PATH, links, messages, url_state

from . import handmade as h
from .test_app import DEEP_LABEL, KEYS, ONLY_LABEL, charts, open_run, start, texts


def linked(monkeypatch, folder: Path, **params: str) -> AppTest:
    """The viewer opened from a URL with these query parameters, as a new browser tab (or a reload) would."""
    monkeypatch.setenv("COREVITAL_VIEW_PATHS", str(folder))
    at = AppTest.from_file(APP_PATH, default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_trace_link_opens_the_run_and_the_url_names_it(monkeypatch, good_dir):
    deep = KEYS[DEEP_LABEL]
    for wanted in (deep, h.DEEP_TRACE, h.DEEP_TRACE.upper(), h.DEEP_SPAN, h.DEEP_SPAN[:8]):
        at = linked(monkeypatch, good_dir, run=wanted)
        assert at.radio(key="view").value == "Run" and at.selectbox(key="run").value == deep, wanted
        assert texts(at.main.title) == ["hand-made/deep-1.1"]
        assert at.query_params == {"view": "run", "run": deep}
    # Picking another run moves the URL with it (and the sequence shown: that run has two).
    at.selectbox(key="run").set_value(KEYS[ONLY_LABEL]).run()
    assert at.query_params == {"view": "run", "run": KEYS[ONLY_LABEL], "seq": "0"}


def test_a_link_names_the_sequence_and_the_tab(monkeypatch, good_dir):
    only = KEYS[ONLY_LABEL]  # a span-only run of two sequences
    at = linked(monkeypatch, good_dir, run=h.ONLY_TRACE, seq="1", tab="Timeline")
    assert at.selectbox(key=f"timeline_seq:{only}").value == 1
    assert list(charts(at)["entropy (bits)"][0]["entropy"]) == [0.5, 0.25]  # sequence 1's series
    assert at.session_state[url_state.TAB] == "Timeline"
    assert at.query_params == {"view": "run", "run": only, "seq": "1", "tab": "timeline"}
    # Picking a sequence writes it; a reload (the URL as it is) keeps sequence and tab.
    at.selectbox(key=f"timeline_seq:{only}").set_value(0).run()
    assert at.query_params == {"view": "run", "run": only, "seq": "0", "tab": "timeline"}
    again = linked(monkeypatch, good_dir, **at.query_params)
    assert again.selectbox(key=f"timeline_seq:{only}").value == 0 and again.session_state[url_state.TAB] == "Timeline"
    # Back: the browser reruns the page with the address before the pick, and the page follows it.
    at.query_params.update(seq="1")
    at.run()
    assert at.selectbox(key=f"timeline_seq:{only}").value == 1
    assert list(charts(at)["entropy (bits)"][0]["entropy"]) == [0.5, 0.25]
    # A sequence the run does not have, a tab that does not exist: the riskiest sequence, the first tab.
    at = linked(monkeypatch, good_dir, run=only, seq="7", tab="nope")
    assert at.selectbox(key=f"timeline_seq:{only}").value == 0 and at.session_state[url_state.TAB] == "Risk & flags"
    assert at.query_params == {"view": "run", "run": only, "seq": "0"}


def test_tab_and_seq_names():
    assert [links.tab_label(t) for t in ("layers", " PROMPT ", "", None, "nope")] == [
        "Layers",
        "Prompt",
        "Risk & flags",
        "Risk & flags",
        "Risk & flags",
    ]
    assert [links.tab_name(label) for label in links.TABS.values()] == [
        None,
        "timeline",
        "layers",
        "prompt",
        "performance",
        "details",
    ]
    assert [links.seq_number(v) for v in ("3", " 0 ", "-1", "1.5", "x", None)] == [3, 0, None, None, None, None]


def test_a_reload_keeps_the_view(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    assert at.query_params == {"view": "runs"}
    at.radio(key="view").set_value("Compare").run()
    assert at.query_params == {"view": "compare"}
    again = linked(monkeypatch, good_dir, **at.query_params)
    assert again.radio(key="view").value == "Compare" and texts(again.main.title) == ["Compare"]


def test_a_link_to_a_run_not_in_the_files_says_so(monkeypatch, good_dir):
    at = linked(monkeypatch, good_dir, run="ffff0000")
    assert at.radio(key="view").value == "Runs"
    assert texts(at.warning)[0] == messages.UNKNOWN_LINK.format(run="ffff0000")


def test_browser_back_and_forward_follow_the_url(monkeypatch, good_dir):
    """Back and Forward rerun the page with the URL they went to (Streamlit's popstate handler); the page follows it,
    while a rerun that carries the URL the page wrote itself leaves the view to the widgets."""
    at = start(monkeypatch, good_dir)
    open_run(at, DEEP_LABEL)
    deep = KEYS[DEEP_LABEL]
    assert at.query_params == {"view": "run", "run": deep}
    at.query_params.clear()
    at.query_params["view"] = "runs"  # Back to the list
    at.run()
    assert at.radio(key="view").value == "Runs" and texts(at.main.title) == ["Runs"]
    assert at.query_params == {"view": "runs"}
    at.query_params.update(view="run", run=deep)  # Forward to the run
    at.run()
    assert at.radio(key="view").value == "Run" and texts(at.main.title) == ["hand-made/deep-1.1"]
    at.radio(key="view").set_value("Performance").run()  # the radio wins over the URL it wrote last
    assert texts(at.main.title) == ["Performance"] and at.query_params == {"view": "performance"}
