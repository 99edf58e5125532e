"""The Streamlit viewer rendered by ``streamlit.testing.v1.AppTest``: every view, from hand-made and real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from opentelemetry_instrumentation_corevital.viewer import APP_PATH, deep, messages, scales

from . import handmade as h
from .conftest import real_reports

DEEP_LABEL = "2026-01-02 03:04:08 · hand-made/deep-1.1 · risk 0.50 · b1b1b1b1"
TWIN_LABEL = "2026-01-02 03:06:08 · hand-made/twin-1.1 · risk 0.50 · b3b3b3b3"
PLAIN_LABEL = "2026-01-02 03:05:08 · hand-made/plain-1.0 · risk 0.25 · b2b2b2b2"
ONLY_LABEL = "2026-01-02 03:07:08 · hand-made/span-only · risk 0.75 · b4b4b4b4"


def start(monkeypatch, *paths: Path) -> AppTest:
    monkeypatch.setenv("COREVITAL_VIEW_PATHS", ":".join(str(p) for p in paths))
    at = AppTest.from_file(APP_PATH, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> dict[str, list]:
    """Chart title -> the data frames it draws (a layered chart has several), decoded from the page."""
    out = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]
        out[spec.get("title")] = frames
    return out


KEYS = {
    DEEP_LABEL: f"{h.DEEP_TRACE}:{h.DEEP_SPAN}",
    TWIN_LABEL: f"{h.TWIN_TRACE}:{h.TWIN_SPAN}",
    PLAIN_LABEL: f"{h.PLAIN_TRACE}:{h.PLAIN_SPAN}",
    ONLY_LABEL: f"{h.ONLY_TRACE}:{h.ONLY_SPAN}",
}


def open_run(at: AppTest, label: str) -> AppTest:
    """Pick a run in the run list and press "Open run", as a person would."""
    box = at.selectbox(key="open_pick")
    assert label in box.options
    box.set_value(KEYS[label]).run()
    next(b for b in at.button if b.label == "Open run").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="view").value == "Run"
    return at


def texts(elements) -> list[str]:
    """The text each element shows: file text reaches Streamlit's Markdown backslash-escaped (viewer/plain.py)."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in elements]


def test_run_list_shows_every_run_with_exact_figures(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    assert at.title[0].value == "Runs"
    assert metrics(at) == {"Runs": "5", "High risk": "1", "Flagged": "4", "Files read": "4"}
    table = at.dataframe[0].value
    assert list(table["model"]) == [
        "hand-made/rotated-gzip",
        "hand-made/span-only",
        "hand-made/twin-1.1",
        "hand-made/plain-1.0",
        "hand-made/deep-1.1",
    ]
    deep = table[table["id"] == "b1b1b1b1"].iloc[0].to_dict()
    assert deep == {
        "time (UTC)": "2026-01-02 03:04:08",
        "output": "hand made output of twelve tokens",  # its report's output_text (content captured)
        "model": "hand-made/deep-1.1",
        "provider": None,  # the hand-made spans name none
        "risk": 0.5,
        "level": "medium",
        "flags": "high_entropy",
        "input tokens": 6,
        "output tokens": 12,
        "duration (s)": 2.0,
        "capture": "full",
        "service": "handmade-svc",
        "id": "b1b1b1b1",
    }
    (frame,) = charts(at)["Risk of each run"]
    assert sorted(frame["risk"]) == [0.25, 0.5, 0.5, 0.75]
    assert at.caption[0].value == "5 of 5 runs"
    assert "5 runs from 4 files" in at.sidebar.caption[0].value


def test_run_list_filters_and_sorts(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    at.multiselect(key="f_levels").set_value(["medium"]).run()
    assert list(at.dataframe[0].value["id"]) == ["b3b3b3b3", "b1b1b1b1"]
    at.multiselect(key="f_levels").set_value([]).run()
    at.selectbox(key="f_sort").set_value("highest risk first").run()
    assert list(at.dataframe[0].value["id"]) == ["b4b4b4b4", "b3b3b3b3", "b1b1b1b1", "b2b2b2b2", "b6b6b6b6"]
    at.text_input(key="f_text").input("plain").run()
    assert list(at.dataframe[0].value["id"]) == ["b2b2b2b2"]
    assert at.caption[0].value == "1 of 5 runs"
    at.text_input(key="f_text").input("").run()
    at.slider(key="f_risk").set_value(0.7).run()
    assert list(at.dataframe[0].value["id"]) == ["b4b4b4b4"]


def test_run_page_risk_flags_narrative_and_timeline(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), DEEP_LABEL)
    assert texts(at.title)[0] == "hand-made/deep-1.1"
    m = metrics(at)
    assert {k: m[k] for k in ("Risk score", "Risk level", "Flags", "Output tokens")} == {
        "Risk score": "0.500",
        "Risk level": "medium",
        "Flags": "1",
        "Output tokens": "12",
    }
    assert "Flags fired: :red-badge[high_entropy]" in texts(at.markdown)
    assert h.NARRATIVE in texts(at.info)
    factors = at.dataframe[0].value
    assert list(factors["name"]) == ["entropy_mean", "high_entropy_fraction"]
    assert list(factors["contribution"]) == [0.3375, 0.175]
    flags = at.dataframe[1].value
    assert (
        flags[flags["flag"] == "high_entropy"].iloc[0]["detail"] == "3 steps > 4 bits, longest run 3, first at step 6"
    )
    blamed = next(d.value for d in at.dataframe if "reason" in d.value.columns)  # after the folded unfired flags
    assert list(blamed["layer"]) == [5, 6] and blamed.iloc[0]["reason"] == "attention collapse"
    shown = charts(at)
    entropy, threshold = shown["entropy (bits)"]
    assert list(entropy["entropy"].dropna()) == [e for e in h.ENTROPY if e is not None]
    assert list(threshold["threshold"]) == [4.0]
    (margin,) = shown["top-1 − top-2 margin"]
    assert list(margin["margin"].dropna()) == [m for m in h.MARGIN if m is not None]
    assert {"surprisal (bits)", "top-10 mass", "Risk factor contributions"} <= set(shown)
    # the text at the top of the page (prompt, output), then the timeline's generated text
    assert [c.value for c in at.code[:3]] == [
        "user: tell me about basins",
        "hand made output of twelve tokens",
        "hand made output of twelve tokens",
    ]
    steps = next(d.value for d in at.dataframe if "token id" in d.value.columns)
    assert list(steps["token id"]) == [101 + k for k in h.STEPS]
    assert messages.NO_TOKENS not in [c.value for c in at.caption]


def test_layer_heatmaps_highlight_blamed_layers(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), DEEP_LABEL)
    assert "Blamed layers (outlined in red): 5, 6" in texts(at.caption)
    shown = charts(at)
    cells, outline = shown["hidden-state L2 norm (each layer scaled to its own range)"]
    assert len(cells) == 96
    assert cells[(cells["layer"] == 7) & (cells["step"] == 11)]["value"].item() == h.hidden_norm(7, 11) == 91.0
    # Coloured within each layer's own range: every layer runs 10 (layer + 1) + 0 .. 11, so a cell is at step / 11.
    assert cells["scaled"].tolist() == pytest.approx((cells["step"] / 11).tolist(), abs=1e-12)
    assert sorted(set(outline["layer"])) == h.BLAMED
    cells, _ = shown["attention entropy (0–1, mean over heads)"]
    assert cells[(cells["layer"] == 6) & (cells["step"] == 8)]["value"].item() == 0.125
    cells, _ = shown["collapsed attention heads (fraction)"]
    assert cells["value"].sum() == 0.5 * 2 * 6
    assert at.selectbox(key="layer_matrix").value == "update_ratio"
    cells, _ = shown["update ratio ‖Δh‖/‖h‖"]
    assert cells["value"].isna().sum() == 8  # step 3 of every layer was not captured
    means = next(
        d.value for d in at.dataframe if "hidden_norm" in d.value.columns and "update_ratio" in d.value.columns
    )
    assert means.iloc[0]["hidden_norm"] == 15.5


def test_prompt_analysis(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), DEEP_LABEL)
    assert metrics(at)["Prompt perplexity"] == "5.500"
    shown = charts(at)
    (surprisal,) = shown["Surprisal of each prompt token (bits)"]
    assert list(surprisal["surprisal"]) == h.PROMPT_SURPRISAL and list(surprisal["position"]) == [1, 2, 3, 4, 5]
    (basin,) = shown["basin score (mean)"]
    assert list(basin["basin"]) == h.BASIN
    assert "user: tell me about basins" in texts(at.code)
    assert messages.FULL_PROMPT.format(mode="full") not in texts(at.info)


def test_performance_tab_and_view(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), DEEP_LABEL)
    m = metrics(at)
    assert (m["Time to first token"], m["Per output token"], m["Tokens per second"], m["Duration"]) == (
        "500.0 ms",
        "125.0 ms",
        "6.0",
        "2.00 s",
    )
    (steps,) = charts(at)["Duration of each decoding step"]
    assert list(steps["duration (ms)"]) == [500.0] + [125.0] * 11
    overhead = next(d.value for d in at.dataframe if list(d.value.columns) == ["figure", "value"])
    assert dict(zip(overhead["figure"], overhead["value"])) == {
        "perf.method": "strict",
        "perf.runs": "3",
        "perf.plain_s": "2.0",
        "perf.instrumented_s": "2.5",
        "perf.ratio": "1.25",
    }
    assert m["CoreVital overhead (instrumented / plain generate)"] == "1.250×"
    at.radio(key="view").set_value("Performance").run()
    assert not at.exception
    assert metrics(at) == {
        "Median time to first token": "500.0 ms",
        "Median per output token": "125.0 ms",
        "Runs timed": "5",
    }
    table = at.dataframe[0].value
    assert table[table["id"] == "b4b4b4b4"].iloc[0]["tokens/s"] == 2.5
    (points,) = charts(at)["Time to first token and per-token time"]
    assert sorted(points[points["figure"] == "time to first token"]["ms"]) == [250.0, 500.0, 500.0, 500.0]


def test_summary_only_run_says_what_full_capture_adds(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), PLAIN_LABEL)
    infos = texts(at.info)
    assert messages.FULL_LAYERS.format(mode="summary") in infos
    assert messages.FULL_PROMPT.format(mode="summary") in infos
    assert metrics(at)["Risk score"] == "0.250"
    assert "entropy (bits)" in charts(at)


def test_span_only_run_shows_what_the_span_has(monkeypatch, good_dir):
    at = open_run(start(monkeypatch, good_dir), ONLY_LABEL)
    logs = messages.LOGS_WITHOUT.format(file=good_dir / "logs.jsonl")  # read, and this run's report is not in it
    assert messages.NO_REPORT.format(stride=2, logs=logs) in texts(at.info)
    assert messages.SPAN_TOKENS in texts(at.caption)  # spans never carry tokens: not "content capture was off"
    assert "Every 2. step (the span's thinned series)." in texts(at.caption)
    factors = at.dataframe[0].value
    assert list(factors.columns) == ["name", "contribution"] and list(factors["contribution"]) == [0.625, 0.125]
    sequences = at.selectbox(key=f"timeline_seq:{KEYS[ONLY_LABEL]}")  # the span has no per-sequence risk
    assert sequences.options == ["sequence 0 · risk – · no flags", "sequence 1 · risk – · no flags"]
    entropy, marked = charts(at)["entropy (bits)"]  # the span's loop onset marked on its (riskiest) sequence
    assert list(entropy["step"]) == [0, 2, 4] and entropy["entropy"].isna().tolist() == [False, True, False]
    assert marked[["step", "label"]].to_dict("records") == [{"step": 2, "label": "loop onset"}]
    sequences.set_value(1).run()
    (entropy,) = charts(at)["entropy (bits)"]
    assert list(entropy["entropy"]) == [0.5, 0.25]
    # Layers and prompt: what a full-capture span carries, and what the report would add.
    assert messages.SPAN_LAYERS in texts(at.caption)
    assert messages.FULL_LAYERS.format(mode="summary") in texts(at.info)
    (norms,) = charts(at)["hidden-state L2 norm"]
    assert list(norms["hidden_norm"]) == [10.0, 20.0]
    (surprisal,) = charts(at)["Surprisal of each prompt token (bits)"]
    assert list(surprisal["position"]) == [2, 3] and list(surprisal["surprisal"]) == [2.0, 1.0]
    assert metrics(at)["Prompt tokens"] == "4"


def test_compare_overlays_signals_and_measures_fingerprint_distance(monkeypatch, good_dir):
    at = start(monkeypatch, good_dir)
    keys = [KEYS[DEEP_LABEL], KEYS[TWIN_LABEL]]
    at.multiselect(key="compare_pick").set_value(keys).run()
    next(b for b in at.button if b.label == "Compare").click().run()
    assert not at.exception and at.title[0].value == "Compare"
    table = at.dataframe[0].value
    assert list(table.columns) == ["figure", DEEP_LABEL, TWIN_LABEL]
    assert table[table["figure"] == "model"].iloc[0].tolist() == ["model", "hand-made/deep-1.1", "hand-made/twin-1.1"]
    (entropy,) = charts(at)["entropy (bits)"]
    assert (
        sorted(set(entropy["run"]))
        == ["b1b1b1b1 · hand-made/deep-1.1 · risk 0.50", "b3b3b3b3 · hand-made/twin-1.1 · risk 0.50"]
        and len(entropy) == 22
    )
    distances = at.dataframe[1].value
    assert distances.iloc[0].tolist() == [DEEP_LABEL, 0.0, 1.0]
    at.multiselect(key="compare").set_value(keys + [KEYS[PLAIN_LABEL]]).run()
    assert messages.NO_FINGERPRINT.format(runs="b2b2b2b2") in texts(at.info)
    assert len(at.dataframe[0].value.columns) == 4


def test_malformed_input_is_reported_not_fatal(monkeypatch, good_dir, bad_dir):
    at = start(monkeypatch, bad_dir, good_dir, bad_dir / "nowhere.jsonl")
    assert texts(at.warning) == [
        messages.NOT_FOUND.format(path=str(bad_dir / "nowhere.jsonl")),
        *h.bad_problems(bad_dir),
    ]
    assert metrics(at)["Runs"] == "6"
    # The run from the future opens, with what could be read.
    at.radio(key="view").set_value("Run").run()
    assert not at.exception
    assert texts(at.title)[0] == "hand-made/from-the-future"
    assert texts(at.warning) == [] and "7 problems reading the files: the Runs view lists them." in texts(at.caption)
    assert metrics(at)["Risk score"] == "–" and metrics(at)["Output tokens"] == "5"
    assert messages.NO_SIGNALS.format(mode="unknown") in texts(at.info)


def test_files_without_runs(monkeypatch, bad_dir, tmp_path):
    at = start(monkeypatch, bad_dir / "empty.jsonl")
    assert texts(at.warning) == [messages.EMPTY_FILE.format(file=str(bad_dir / "empty.jsonl"))]
    assert texts(at.info) == [messages.NO_RUNS]
    for view in ("Run", "Compare", "Performance"):
        at.radio(key="view").set_value(view).run()
        assert not at.exception, view


@pytest.mark.slow
def test_real_corevital_runs_render_in_every_view(monkeypatch, real_dir):
    greedy, sampled = real_reports(real_dir)
    at = start(monkeypatch, real_dir)
    assert texts(at.warning) == []
    table = at.dataframe[0].value
    assert list(table["id"]) == [sampled["span_id"][:8], greedy["span_id"][:8]]
    assert list(table["risk"]) == [sampled["summary"]["risk_score"], greedy["summary"]["risk_score"]]
    assert list(table["output tokens"]) == [16, 20]
    assert list(table["duration (s)"]) == [sampled["timings"]["duration_s"], greedy["timings"]["duration_s"]]
    assert set(table["model"]) == {"SmolLM2-135M-Instruct.Q4_1"} and list(table["capture"]) == ["full", "summary"]

    at.selectbox(key="open_pick").set_value(f"{greedy['trace_id']}:{greedy['span_id']}").run()
    next(b for b in at.button if b.label == "Open run").click().run()
    assert not at.exception
    m = metrics(at)
    assert m["Risk score"] == f"{greedy['summary']['risk_score']:.3f}"
    assert m["Risk level"] == greedy["summary"]["risk_level"]
    assert m["Time to first token"] == f"{greedy['timings']['time_to_first_token_s'] * 1000:.1f} ms"
    seq = greedy["sequences"][0]
    entropy, _threshold, *_marks = charts(at)["entropy (bits)"]  # marks when the diagnosis found any
    assert list(entropy["entropy"]) == seq["timeline"]["entropy"]
    # the prompt and output at the top (st.code drops the prompt's final line break), then the timeline's output
    assert [c.value for c in at.code[:3]] == [seq["input_text"].rstrip("\n"), seq["output_text"], seq["output_text"]]
    steps = next(d.value for d in at.dataframe if "token id" in d.value.columns)
    assert list(steps["token id"]) == seq["token_ids"]
    factors = at.dataframe[0].value
    assert list(factors["name"]) == [
        f["name"] for f in sorted(seq["risk"]["factors"], key=lambda f: -f["contribution"])
    ]
    # Summary capture keeps hidden-state statistics per layer and step; the page names what full adds.
    kept = [k for k in deep.LAYER_LABELS if isinstance(seq["layers"].get(k), list)]
    assert "hidden_norm" in kept and "attn_entropy" not in kept
    (norms, *_) = charts(at)["hidden-state L2 norm (each layer scaled to its own range)"]
    assert len(norms) == len(seq["layers"]["indices"]) * len(seq["layers"]["steps"])
    for layer, row in zip(seq["layers"]["indices"], seq["layers"]["hidden_norm"]):  # each layer spans 0..1
        scaled = norms[norms["layer"] == layer]["scaled"]
        assert (scaled.min(), scaled.max()) == (0.0, 1.0) and list(norms[norms["layer"] == layer]["value"]) == row
    assert messages.FULL_LAYERS_PARTIAL.format(
        mode="summary",
        have=", ".join(deep.LAYER_LABELS[k] for k in kept),
        missing=", ".join(deep.LAYER_LABELS[k] for k in deep.FULL_ONLY),
    ) in texts(at.info)
    (durations,) = charts(at)["Duration of each decoding step"]
    ends = greedy["timings"]["step_end_s"]
    assert list(durations["duration (ms)"]) == pytest.approx(
        [ends[0] * 1000] + [(b - a) * 1000 for a, b in zip(ends, ends[1:])]
    )

    at.selectbox(key="run").set_value(f"{sampled['trace_id']}:{sampled['span_id']}").run()
    assert messages.NO_TOKENS in texts(at.caption)  # the second run had content capture off
    # capture="full": every heatmap is the report's matrix, cell for cell; the prompt analysis is the prefill's.
    layers, prompt = sampled["sequences"][0]["layers"], sampled["sequences"][0]["prompt"]
    shown = charts(at)
    for name in ("hidden_norm", "attn_entropy", "attn_collapsed_fraction"):
        cells = shown[deep.LAYER_LABELS[name] + (scales.PER_LAYER_NOTE if name in scales.PER_LAYER else "")][0]
        expected = {
            (layer, step): v
            for layer, row in zip(layers["indices"], layers[name])
            for step, v in zip(layers["steps"], row)
        }
        got = {(int(r.layer), int(r.step)): (None if pd.isna(r.value) else r.value) for r in cells.itertuples()}
        assert got == expected, name
    assert [i.value for i in at.info if 'capture="full" adds' in i.value] == []
    (surprisal,) = shown["Surprisal of each prompt token (bits)"]
    assert list(surprisal["surprisal"]) == [v for v in prompt["surprisal"] if v is not None]
    (basin,) = shown["basin score (mean)"]
    assert list(basin["basin"]) == [v for v in prompt["basin"] if v is not None]
    assert metrics(at)["Prompt tokens"] == str(prompt["tokens"])
    at.radio(key="view").set_value("Compare").run()
    assert not at.exception
    compared = at.dataframe[0].value
    row = compared[compared["figure"] == "output tokens"].iloc[0].tolist()
    assert row[1:] == ["16", "20"]
    (overlay,) = charts(at)["entropy (bits)"]
    assert len(overlay) == 36
    # Real reports keep the fingerprint in sequences[].diagnosis (issue 16): the distances are shown, none missing.
    assert texts(at.info) == []
    distances = at.dataframe[1].value
    assert [distances[run][i] for i, run in enumerate(distances["run"])] == [0.0, 0.0]


def test_dashboards_script_runs_the_packaged_app_on_its_arguments(monkeypatch, good_dir):
    script = Path(__file__).resolve().parents[2] / "dashboards" / "corevital_viewer.py"
    monkeypatch.delenv("COREVITAL_VIEW_PATHS", raising=False)
    monkeypatch.setattr("sys.argv", [str(script), str(good_dir)])  # as `streamlit run script -- PATH` sets it
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.sidebar.text_area(key="paths").value == str(good_dir)
    assert metrics(at)["Runs"] == "5"


def test_odd_shapes_cost_at_most_a_part_of_the_page(monkeypatch, tmp_path):
    from .test_reading import odd_shapes

    at = start(monkeypatch, odd_shapes(tmp_path))
    assert texts(at.warning) == [] and metrics(at)["Runs"] == "1"  # wrong types inside are read as missing values
    for view in ("Run", "Compare", "Performance"):
        at.radio(key="view").set_value(view).run()
        assert not at.exception, view
    at.radio(key="view").set_value("Run").run()
    assert at.title[0].value == "unknown model" and metrics(at)["Risk score"] == "–"
    assert texts(at.error) == []  # every tab drew, none needed the VIEW_FAILED fallback
