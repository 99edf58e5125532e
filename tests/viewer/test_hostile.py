"""Hostile files and paths: a bad line is skipped with a warning naming its file and line, the other runs stay;
file text is shown as text, never as Markdown; the viewer reads only under the folder it was started on and every
documented command binds 127.0.0.1."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opentelemetry_instrumentation_corevital.viewer import messages
from opentelemetry_instrumentation_corevital.viewer.index import build_index, load_run
from opentelemetry_instrumentation_corevital.viewer.plain import plain

from . import handmade as h
from .test_app import PLAIN_LABEL, metrics, open_run, start

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "![pixel](https://example.invalid/pixel.png)"
HOSTILE_TRACE, HOSTILE_SPAN = "a7" * 16, "b7" * 8
FUTURE_TRACE, FUTURE_SPAN = "a8" * 16, "b8" * 8


def span_line(trace_id: str, span_id: str, model: str, flags: list[str], start_ns: str | None = None) -> dict:
    attributes = {
        "corevital.schema_version": "1.1.0",
        "corevital.risk.score": 0.75,
        "corevital.risk.level": "high",
        "corevital.flags": flags,
        "gen_ai.request.model": model,
    }
    span = h.span(trace_id, span_id, h.T0 + 600, 1.0, attributes)
    if start_ns is not None:
        span["startTimeUnixNano"] = start_ns
    return h.traces_line([span])


def hostile_folder(folder: Path) -> Path:
    """A good run, a run whose text is Markdown, a run 25 digits of nanoseconds late, and four hostile lines."""
    folder.mkdir(parents=True, exist_ok=True)
    good = h.plain_report()
    lines = [
        json.dumps(h.traces_line([h.span(h.PLAIN_TRACE, h.PLAIN_SPAN, h.T0 + 60, 2.0, h.span_attributes(good))])),
        json.dumps(h.logs_line([h.report_record(good, h.PLAIN_TRACE, h.PLAIN_SPAN)])),
        '{"resourceSpans": ' + "[" * 100_000 + "]" * 100_000 + "}",  # line 3: nested too deeply
        json.dumps(span_line(FUTURE_TRACE, FUTURE_SPAN, "hand-made/far-future", [], "9" * 25)),
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "a9',  # line 5: truncated
        json.dumps({"resourceSpans": {"scopeSpans": 5}}),  # line 6: wrong shape
        json.dumps(span_line(HOSTILE_TRACE, HOSTILE_SPAN, f"**bold** {IMAGE}", [IMAGE, "repetition_loop"])),
        json.dumps(
            h.logs_line(  # line 8: a report nested too deeply inside its body
                [h.report_record('{"schema_version": "1.0.0", "x": ' + "[" * 50_000, "c" * 32, "d" * 16)]
            )
        ),
    ]
    (folder / "traces.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_hostile_lines_are_skipped_naming_file_and_line_and_the_other_runs_stay(tmp_path):
    folder = hostile_folder(tmp_path / "data")
    index = build_index([str(folder)])
    file = str(folder / "traces.jsonl")
    models = {r.model for r in index.runs}
    assert models == {"hand-made/plain-1.0", "hand-made/far-future", f"**bold** {IMAGE}"}
    assert [p.split(": ")[0] for p in index.problems] == [f"{file} line {n}" for n in (3, 5, 6, 8)]
    assert index.problems[0] == messages.NOT_JSON.format(file=file, line=3, detail="nested too deeply")
    assert index.problems[3] == messages.BAD_REPORT.format(file=file, line=8, detail="not JSON: nested too deeply")
    (late,) = [r for r in index.runs if r.model == "hand-made/far-future"]
    assert late.started is None and late.time_text == "unknown time"  # 10**24 ns: past what a date can say
    assert late.label.startswith("unknown time · hand-made/far-future")


def test_a_report_dated_out_of_range_keeps_the_run_list(tmp_path):
    report = {**h.plain_report(), "created_at": "9999-12-31T23:59:59Z"}
    report["timings"] = {**report["timings"], "duration_s": 1e300}
    (tmp_path / "logs.jsonl").write_text(json.dumps(h.logs_line([h.report_record(report, "e" * 32, "f" * 16)])))
    (run,) = build_index([str(tmp_path)]).runs
    assert run.started is None and run.time_text == "unknown time"


def test_a_deeply_nested_line_that_changed_since_indexing_costs_only_its_run(tmp_path):
    folder = hostile_folder(tmp_path / "data")
    index = build_index([str(folder)])
    (good,) = [r for r in index.runs if r.model == "hand-made/plain-1.0"]
    traces = folder / "traces.jsonl"
    text = traces.read_text()
    traces.write_text("[" * 100_000 + text[100_000:])  # the first line now nests too deeply
    detail = load_run(good)
    assert detail.span is None and detail.problems[0].startswith(f"{traces}: cannot be read (line 1 changed: ")


def test_the_page_shows_the_runs_and_warns_about_each_hostile_line(monkeypatch, tmp_path):
    folder = hostile_folder(tmp_path / "data")
    at = start(monkeypatch, folder)
    assert metrics(at)["Runs"] == "3"
    file = str(folder / "traces.jsonl")
    warnings = [unescape(w.value) for w in at.warning]
    assert [w.split(": ")[0] for w in warnings] == [f"{file} line {n}" for n in (3, 5, 6, 8)]
    models = list(at.dataframe[0].value["model"])
    assert models == [f"**bold** {IMAGE}", "hand-made/plain-1.0", "hand-made/far-future"]  # unknown time: last


MARKDOWN_ELEMENTS = ("markdown", "title", "subheader", "caption", "info", "warning", "error", "success")


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_file_text_reaches_markdown_escaped(monkeypatch, tmp_path):
    """A remote image link in a flag name or a model name is shown as its characters, not fetched as an image."""
    at = start(monkeypatch, hostile_folder(tmp_path / "data"))
    at.selectbox(key="open_pick").set_value(f"{HOSTILE_TRACE}:{HOSTILE_SPAN}").run()
    next(b for b in at.button if b.label == "Open run").click().run()
    assert not at.exception, at.exception
    bodies = [e.value for kind in MARKDOWN_ELEMENTS for e in at.get(kind)]
    assert at.title[0].value == plain(f"**bold** {IMAGE}")
    assert unescape(at.title[0].value) == f"**bold** {IMAGE}"
    (flags,) = [b for b in bodies if b.startswith("Flags fired: ")]
    assert flags == f"Flags fired: :red-badge[{plain(IMAGE)}] :red-badge[{plain('repetition_loop')}]"
    for body in bodies:
        assert "](" not in body and "**" not in body, body  # no link, image or emphasis left unescaped


def test_plain_escapes_every_markdown_character():
    text = r"![a](b) **c** _d_ `e` <img src=x> :red[f] $g$ # h | i ~ j \ k {l} 1. m + n - o"
    escaped = plain(text)
    assert unescape(escaped) == text
    assert re.search(r"(?<!\\)[!\[\]()*_`<>:$#|~{}]", escaped.replace("\\\\", "")) is None
    assert plain("plain words 42") == "plain words 42"


def test_the_path_box_reads_only_under_the_folder_the_viewer_was_started_on(monkeypatch, tmp_path):
    allowed = h.write_good(tmp_path / "allowed")
    outside = h.write_good(tmp_path / "outside")
    (allowed / "escape.jsonl").symlink_to(outside / "traces.jsonl")  # a planted link leading out
    at = start(monkeypatch, allowed)
    assert metrics(at)["Runs"] == "5"
    root = str(allowed.resolve())
    at.sidebar.text_area(key="paths").set_value(f"{allowed}\n{outside}\n/etc\n{allowed}/../outside").run()
    assert not at.exception, at.exception
    warnings = [unescape(w.value) for w in at.warning]
    assert warnings[:4] == [
        messages.OUTSIDE.format(path=str(allowed / "escape.jsonl"), root=root),
        messages.OUTSIDE.format(path=str(outside), root=root),
        messages.OUTSIDE.format(path="/etc", root=root),
        messages.OUTSIDE.format(path=f"{allowed}/../outside", root=root),
    ]
    assert metrics(at)["Runs"] == "5"  # the runs of `allowed` only, read once


def test_every_documented_streamlit_command_binds_loopback():
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "dashboards").glob("*"))]
    commands = [
        (path.name, line)
        for path in documents
        if path.is_file() and path.suffix in (".md", ".py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "streamlit run" in line
    ]
    assert len(commands) >= 3
    for name, line in commands:
        assert "--server.address 127.0.0.1" in line, (name, line)


def test_opening_a_run_on_hostile_files_still_works(monkeypatch, tmp_path):
    at = start(monkeypatch, hostile_folder(tmp_path / "data"))
    open_run(at, PLAIN_LABEL)
    assert at.title[0].value == plain("hand-made/plain-1.0")


def test_values_of_the_wrong_type_are_unknown_not_fatal(tmp_path):
    """Found by the fuzz run: a numeric span id broke every label; a number as model name broke the model sort."""
    from opentelemetry_instrumentation_corevital.viewer import runlist

    line = span_line(HOSTILE_TRACE, HOSTILE_SPAN, "m", [])
    span = line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["spanId"] = 10**20
    span["attributes"] = h.attrs({"corevital.risk.score": 0.5, "gen_ai.request.model": 7})
    span["attributes"].append({"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "12"}})
    (tmp_path / "traces.jsonl").write_text(
        json.dumps(line)
        + "\n"
        + json.dumps(
            h.traces_line(
                [
                    h.span(
                        h.PLAIN_TRACE,
                        h.PLAIN_SPAN,
                        h.T0,
                        1.0,
                        {"corevital.risk.score": 0.25, "gen_ai.request.model": "b"},
                    )
                ]
            )
        )
        + "\n"
    )
    runs = build_index([str(tmp_path)]).runs
    odd = next(r for r in runs if r.risk_score == 0.5)
    assert (odd.span_id, odd.model, odd.output_tokens) == (None, None, None)
    assert odd.label == "2026-01-02 03:14:08 · unknown model · risk 0.50 · a7a7a7a7"  # from the run key
    for order in runlist.SORTS:
        assert len(runlist.sort_runs(runs, order)) == 2
