"""A real browser on the served viewer: Debian chromium (headless) driven by playwright-core.

`corevital view` runs as a subprocess on 127.0.0.1 (stopped by its PID); the browser opens the run
list, waits for the charts, opens a run, goes Back to the list, clicks the run's row, then its timeline, a
deep-capture run's layers, Compare, Performance and a link naming the other run's trace id, and saves a
screenshot of each under the test's temp folder. The test checks what each page says and the address bar,
with values read from the files directly.
"""

from __future__ import annotations

import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index

from ..conftest import free_port
from . import handmade as h
from .conftest import real_reports
from .served import browser_missing, drive, png_size, serve
from .test_app import DEEP_LABEL


@pytest.mark.slow
def test_browser_clicks_through_runs_run_layers_and_compare(tmp_path, real_dir, good_dir, bad_dir):
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    greedy, sampled = real_reports(real_dir)
    labels = {r.span_id: r.label for r in build_index([str(real_dir)]).runs}
    with serve([real_dir, good_dir, bad_dir], free_port(), tmp_path / "view.log") as url:
        shots = drive(url, tmp_path, labels[greedy["span_id"]], DEEP_LABEL, link=sampled["trace_id"])
    text = {s["name"]: " ".join(s["text"].split()) for s in shots}  # whitespace as a reader sees it
    assert list(text) == ["runs", "run", "back", "row", "timeline", "layers", "compare", "performance", "link"]
    for shot in shots:
        assert shot["file"].startswith(str(tmp_path))
        assert png_size(tmp_path / f"{shot['name']}.png") == (1400, 1600)
        assert (tmp_path / f"{shot['name']}.png").stat().st_size > 30_000, shot["name"]

    runs = text["runs"]
    assert "8 of 8 runs" in runs
    for problem in h.bad_problems(bad_dir):  # the documented messages, on the page as written
        assert " ".join(problem.split()) in runs

    for name in ("run", "row"):  # opened with the picker, then by a click on its row after Back
        run = text[name]
        assert "SmolLM2-135M-Instruct.Q4_1" in run and greedy["span_id"] in run
        assert f"Risk score {greedy['summary']['risk_score']:.3f}" in run
        assert "Risk factors" in run and "entropy_mean" in run
    # The address names the run (a link to it), Back returns to the list and its address.
    urls = {s["name"]: s["url"] for s in shots}
    assert urls["run"] == urls["row"] == f"{url}?view=run&run={greedy['trace_id']}%3A{greedy['span_id']}"
    assert urls["back"] == f"{url}?view=runs" and "8 of 8 runs" in text["back"] and "Risk score" not in text["back"]
    # A link from a tracing UI names the other run's trace id only: it opens that run, and the address says which.
    assert urls["link"] == f"{url}?view=run&run={sampled['trace_id']}%3A{sampled['span_id']}"
    assert sampled["span_id"] in text["link"] and f"Risk score {sampled['summary']['risk_score']:.3f}" in text["link"]

    timeline = text["timeline"]
    assert " ".join(greedy["sequences"][0]["output_text"].split()) in timeline
    assert "Generated text" in timeline

    layers = text["layers"]
    assert "hand-made/deep-1.1" in layers and "Blamed layers (outlined in red): 5, 6" in layers
    assert h.NARRATIVE in layers

    compare = text["compare"]
    assert labels[greedy["span_id"]] in compare and labels[sampled["span_id"]] in compare
    assert "Signals overlaid" in compare and "Fingerprint distance" in compare
    # Drawn heights (legend included) of the overlays (plot area 300 px) and the timings chart (240 px): title, axis
    # and the legend come on top of the plot. Streamlit's default "fit" squeezed all of it into 300 and 240 px.
    heights = {s["name"]: s["charts"] for s in shots}
    assert len(heights["compare"]) == 4 and min(heights["compare"]) > 300 + 100, heights
    assert len(heights["performance"]) == 1 and heights["performance"][0] > 240 + 100, heights

    perf = text["performance"]
    # Real runs' TTFT (read from the reports) and the hand-made ones: 0.5 s (3 runs), 0.25 s (the gzip one).
    ttfts = sorted(
        [greedy["timings"]["time_to_first_token_s"], sampled["timings"]["time_to_first_token_s"], 0.5, 0.5, 0.5, 0.25]
    )
    assert f"Median time to first token {ttfts[len(ttfts) // 2] * 1000:.1f} ms" in perf and "Runs timed 8" in perf
