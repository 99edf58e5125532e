"""Honest errors (issue 16) on real SmolLM2 runs: a report line cut short is a "truncated line" naming its run, and
that run's page explains itself from the span instead of blaming content capture or a missing logs file; a run
whose logs file is missing or not given says which file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from opentelemetry_instrumentation_corevital.viewer import build_index, messages

from .conftest import real_reports
from .test_app import texts
from .test_links import linked


def _cut_report(real_dir: Path, out: Path, report: dict, where: str | float) -> tuple[Path, int, int]:
    """A copy of ``real_dir`` whose line holding ``report`` ends early: at ``where`` (a text in the line, cut right
    before it) or at that share of the line. Returns the logs file, the line number and the bytes kept."""
    shutil.copytree(real_dir, out)
    logs = out / "logs.jsonl"
    lines = logs.read_bytes().split(b"\n")
    number = next(i for i, line in enumerate(lines) if report["report_id"].encode() in line)
    line = lines[number]
    keep = line.index(where.encode()) if isinstance(where, str) else int(len(line) * where)
    lines[number] = line[:keep]
    logs.write_bytes(b"\n".join(lines))
    return logs, number + 1, keep


def test_a_report_line_cut_after_its_body_names_its_run_and_the_page_falls_back_to_the_span(
    monkeypatch, real_dir, tmp_path
):
    greedy, _ = real_reports(real_dir)
    key = f"{greedy['trace_id']}:{greedy['span_id']}"
    logs, line, kept = _cut_report(real_dir, tmp_path / "cut", greedy, '"traceId"')  # the record's ids are lost
    said = messages.TRUNCATED.format(file=logs, line=line, size=kept, run=messages.TRUNCATED_RUN.format(run=key))
    index = build_index([str(tmp_path / "cut")])
    assert said in index.problems
    (run,) = [r for r in index.runs if r.key == key]
    assert run.problems == [said] and run.report_ref is None and run.span_ref is not None
    at = linked(monkeypatch, tmp_path / "cut", run=key)
    assert said in texts(at.warning)
    info = texts(at.info)
    assert messages.REPORT_UNREADABLE.format(stride=1) in info
    assert not [i for i in info if i.startswith("Only the span of this run was found")]  # it was not missing
    assert greedy["summary"]["narrative"] in info  # the span's copy
    assert messages.SPAN_TOKENS in texts(at.caption) and messages.NO_TOKENS not in texts(at.caption)


def test_a_report_line_cut_in_its_body_names_the_report(tmp_path, real_dir):
    greedy, _ = real_reports(real_dir)
    logs, line, kept = _cut_report(real_dir, tmp_path / "cut", greedy, 0.5)
    run = messages.TRUNCATED_REPORT.format(report=greedy["report_id"], model=greedy["model"]["name"])
    index = build_index([str(tmp_path / "cut")])
    assert messages.TRUNCATED.format(file=logs, line=line, size=kept, run=run) in index.problems
    assert not any(r.problems for r in index.runs)  # its trace and span ids were cut off: tied to no run


def test_a_line_cut_right_after_a_space_counts_every_byte_it_kept(tmp_path, real_dir):
    greedy, _ = real_reports(real_dir)
    line = next(x for x in (real_dir / "logs.jsonl").read_bytes().split(b"\n") if greedy["report_id"].encode() in x)
    after_space = line[line.index(b" ") + 1 :][:12].decode()  # the text right after the line's first space
    logs, number, kept = _cut_report(real_dir, tmp_path / "cut", greedy, after_space)
    assert (tmp_path / "cut" / "logs.jsonl").read_bytes().split(b"\n")[number - 1].endswith(b" ")
    index = build_index([str(tmp_path / "cut")])
    assert any(f"stops unfinished after {kept} bytes" in p for p in index.problems), index.problems


def test_a_bad_line_that_is_not_cut_short_keeps_the_parser_message(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"resourceLogs": []}}\n' + json.dumps({"resourceLogs": []}) + "\n")
    index = build_index([str(tmp_path)])
    file = tmp_path / "x.jsonl"
    assert index.problems == [
        messages.NOT_JSON.format(file=file, line=1, detail="Extra data: line 1 column 21 (char 20)")
    ]


def test_a_run_without_its_report_says_which_logs_file(monkeypatch, real_dir, tmp_path):
    greedy, _ = real_reports(real_dir)
    shutil.copytree(real_dir, tmp_path / "runs")
    logs = tmp_path / "runs" / "logs.jsonl"
    # Started on the traces file alone: the logs file beside it exists but was not given.
    at = linked(monkeypatch, tmp_path / "runs" / "traces.jsonl", run=greedy["trace_id"])
    assert messages.NO_REPORT.format(stride=1, logs=messages.LOGS_NOT_READ.format(file=logs)) in texts(at.info)
    logs.unlink()
    at = linked(monkeypatch, tmp_path / "runs", run=greedy["trace_id"])
    assert messages.NO_REPORT.format(stride=1, logs=messages.LOGS_MISSING.format(file=logs)) in texts(at.info)
