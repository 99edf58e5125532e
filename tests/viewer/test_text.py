"""Text first: real SmolLM2 runs of `corevital run --content` (and one without) in the run list and on the run page.

The content run's prompt and output open its page, its tokens' texts name the steps (the step table, the timeline's
and heatmaps' x axes, the tooltips), the run list previews its output and finds it by a word of it; the run without
content says how to get text next time. Values are read from the files directly, not through the viewer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index, messages, runlist, scales, text

from ..conftest import free_port
from .conftest import corevital_run, real_reports
from .served import DRIVER, browser_missing, serve
from .test_app import charts, start, texts

pytestmark = pytest.mark.slow  # generates with SmolLM2

BANANA = "Write one sentence about a banana."
PLAIN = "Name a fruit."


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    """Two real SmolLM2 runs in one folder: `--content --capture full` on a banana prompt, then one without content."""
    out = tmp_path_factory.mktemp("text") / "corevital-data"
    corevital_run(out, "--content", "--capture", "full", "--prompt", BANANA, "--max-new-tokens", "12")
    corevital_run(out, "--prompt", PLAIN, "--max-new-tokens", "6")
    return out


def drive_text(url: str, out: Path, word: str) -> list[dict]:
    """The text scenario (browser/text.mjs): the run list, a search for ``word``, a click on the row found."""
    job = {"url": url, "out": str(out), "search": word, "chromium": shutil.which("chromium")}
    result = subprocess.run(
        ["timeout", "240", "node", str(DRIVER.parent / "text.mjs"), json.dumps(job)],
        capture_output=True,
        text=True,
        cwd=DRIVER.parent,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def open_by_url(monkeypatch, folder: Path, run: str):
    """The app opened on ``?run=``, as a link opens it."""
    at = start(monkeypatch, folder)
    at.query_params["run"] = run
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_content_run_carries_token_texts_and_the_other_none(text_dir):
    with_text, without = real_reports(text_dir)
    seq = with_text["sequences"][0]
    assert with_text["schema_version"] == "1.5.0"
    assert len(seq["token_texts"]) == len(seq["token_ids"]) == 12
    assert "".join(seq["token_texts"]) == seq["output_text"]  # no special token among the 12: the text, piece by piece
    assert BANANA in seq["input_text"]
    plain = without["sequences"][0]
    assert (plain["token_ids"], plain["token_texts"], plain["input_text"], plain["output_text"]) == (None,) * 4


def test_run_list_previews_the_output_and_finds_runs_by_their_text(text_dir):
    with_text, without = real_reports(text_dir)
    runs = build_index([str(text_dir)]).runs
    by_span = {r.span_id: r for r in runs}
    output = with_text["sequences"][0]["output_text"]
    rows = {row["id"]: row for row in runlist.rows(runs)}
    words = output.split()
    assert rows[with_text["span_id"][:8]]["output"] == " ".join(words[:12]) + (" …" if len(words) > 12 else "")
    assert rows[without["span_id"][:8]]["output"] == "–"
    found = runlist.filter_runs(runs, text="BANANA")  # in the prompt and the output, any case
    assert [r.span_id for r in found] == [with_text["span_id"]]
    assert [r.span_id for r in runlist.filter_runs(runs, text=words[-1])] == [with_text["span_id"]]  # output only
    assert by_span[without["span_id"]].prompt is None and by_span[without["span_id"]].output is None


def test_the_run_page_opens_on_its_text_and_names_steps_by_their_tokens(monkeypatch, text_dir):
    with_text, _ = real_reports(text_dir)
    seq = with_text["sequences"][0]
    at = open_by_url(monkeypatch, text_dir, with_text["trace_id"])
    # at the top (st.code drops the prompt's final line break, after "assistant")
    assert [c.value for c in at.code[:2]] == [seq["input_text"].rstrip("\n"), seq["output_text"]]
    assert messages.NO_TEXT not in texts(at.caption)
    steps = next(d.value for d in at.dataframe if "token" in d.value.columns)
    assert list(steps["token"]) == seq["token_texts"] and list(steps["token id"]) == seq["token_ids"]
    labels = json.dumps([text.label(t) for t in seq["token_texts"]], ensure_ascii=True)
    specs = {spec["title"]: spec for spec in (json.loads(c.proto.spec) for c in at.get("vega_lite_chart"))}
    entropy = specs["entropy (bits)"]["layer"][0]["encoding"]
    assert entropy["x"]["axis"]["labelExpr"] == f"{labels}[datum.value] || datum.value"
    assert entropy["x"]["axis"]["values"] == list(range(12))
    assert {"field": "token", "type": "nominal"} in entropy["tooltip"]
    (frame, _) = charts(at)["entropy (bits)"]
    assert list(frame["token"]) == seq["token_texts"]  # what the tooltip reads
    title = "hidden-state L2 norm" + scales.PER_LAYER_NOTE  # scaled per layer, as its title says
    heat = specs[title]
    encoding = (heat.get("layer") or [heat])[0]["encoding"]
    assert encoding["x"]["axis"]["labelExpr"] == f"{labels}[datum.value] || datum.value"
    (cells, *_) = charts(at)[title]
    assert cells[cells["step"] == 1]["token"].unique().tolist() == [text.label(seq["token_texts"][1])]


def test_a_run_without_text_says_how_to_get_it(monkeypatch, text_dir):
    _, without = real_reports(text_dir)
    at = open_by_url(monkeypatch, text_dir, without["trace_id"])
    shown = texts(at.caption)
    assert messages.NO_TEXT in shown and messages.NO_TOKENS in shown
    assert "corevital run --content" in messages.NO_TEXT and "capture_content=True" in messages.NO_TEXT
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true" in messages.NO_TEXT
    assert not any("token" in d.value.columns for d in at.dataframe)


def test_browser_search_finds_the_run_by_its_text_and_opens_it_text_first(tmp_path, text_dir):
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    with_text, without = real_reports(text_dir)
    seq = with_text["sequences"][0]
    with serve([text_dir], free_port(), tmp_path / "view.log") as url:
        shots = drive_text(url, tmp_path, "banana")
    shown = {s["name"]: " ".join(s["text"].split()) for s in shots}
    assert list(shown) == ["runs", "search", "run", "timeline"]
    assert shots[-1]["charts"] == 4  # the timeline's four signals, their x axes labelled by tokens
    assert "2 of 2 runs" in shown["runs"] and "1 of 2 runs" in shown["search"]
    urls = {s["name"]: s["url"] for s in shots}
    assert urls["run"] == f"{url}?view=run&run={with_text['trace_id']}%3A{with_text['span_id']}"
    run = shown["run"]
    assert "Prompt" in run and " ".join(seq["output_text"].split()) in run and BANANA in run
    assert run.index(" ".join(seq["output_text"].split())) < run.index("Risk & flags")  # above the tabs
    assert without["span_id"] not in run
