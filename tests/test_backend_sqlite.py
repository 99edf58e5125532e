"""SQLite store: rows equal the report's, the stored report round-trips, and concurrent writers
(threads sharing one exporter, threads with their own, and separate processes) lose no row."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, Report, configure
from opentelemetry_instrumentation_corevital.exporters.sqlite import STEP_COLUMNS, SQLiteReportExporter, read_report

from ._services import ROOT


def generate(model, tokens=6, **kwargs):
    prompt = torch.tensor([[1, 17, 42, 99, 7]])
    kwargs.setdefault("do_sample", False)
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, **kwargs)


def copies(report: Report, prefix: str, count: int) -> list[Report]:
    out = []
    for i in range(count):
        data = report.to_dict()
        data["report_id"] = f"{prefix}{i:08x}".ljust(32, "0")[:32]
        out.append(Report.from_dict(data))
    return out


@pytest.fixture(scope="module")
def report(tiny_llama):
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(on_report=reports.append)
    try:
        generate(tiny_llama, num_return_sequences=2, do_sample=True, top_k=50)
    finally:
        instrumentor.uninstrument()
    return reports[0]


def test_rows_equal_the_report(tiny_llama, tmp_path):
    db = tmp_path / "history" / "corevital.sqlite3"
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="sqlite", sqlite_path=db) as config:  # leaving delivers what is queued
        instrumentor.instrument(capture_content=True, **config.instrument_kwargs(on_report=reports.append))
        try:
            torch.manual_seed(3)
            generate(tiny_llama, 7, num_return_sequences=2, do_sample=True, top_k=50)
            generate(tiny_llama, 4)
        finally:
            instrumentor.uninstrument()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM generations ORDER BY created_at, report_id").fetchall()
    assert sorted(r["report_id"] for r in rows) == sorted(r.report_id for r in reports)
    for report in reports:
        row = conn.execute("SELECT * FROM generations WHERE report_id = ?", (report.report_id,)).fetchone()
        assert row["trace_id"] == report.trace_id and row["span_id"] == report.span_id
        assert row["model"] == "llama" and row["operation"] == report.request.operation
        assert row["input_tokens"] == report.usage.input_tokens
        assert row["output_tokens"] == report.usage.output_tokens
        assert row["duration_s"] == report.timings.duration_s
        assert row["risk_score"] == report.summary.risk_score
        assert row["risk_level"] == report.summary.risk_level
        assert row["flags"] == ",".join(report.summary.flags)
        assert row["entropy_mean"] == report.summary.aggregates.entropy_mean
        assert read_report(conn, report.report_id).to_dict() == report.to_dict()
        steps = conn.execute(
            "SELECT * FROM steps WHERE report_id = ? ORDER BY sequence, step", (report.report_id,)
        ).fetchall()
        expected = [
            (seq.index, step, seq.token_ids[step], *[getattr(seq.timeline, c)[step] for c in STEP_COLUMNS])
            for seq in report.sequences
            for step in range(len(seq.timeline.entropy))
        ]
        got = [(r["sequence"], r["step"], r["token_id"], *[r[c] for c in STEP_COLUMNS]) for r in steps]
        assert got == expected
    assert len(reports[0].sequences) == 2
    (count,) = conn.execute("SELECT count(*) FROM steps").fetchone()
    assert count == sum(len(s.timeline.entropy) for r in reports for s in r.sequences)


def test_threads_lose_no_rows(report, tmp_path):
    db = tmp_path / "threads.sqlite3"
    shared = SQLiteReportExporter(db)
    own_exporters = [SQLiteReportExporter(db) for _ in range(4)]
    batches = [copies(report, f"a{t}", 25) for t in range(4)] + [copies(report, f"b{t}", 25) for t in range(4)]
    threads = [threading.Thread(target=lambda b=b: [shared.export(r) for r in b]) for b in batches[:4]]
    threads += [
        threading.Thread(target=lambda b=b, e=e: [e.export(r) for r in b]) for b, e in zip(batches[4:], own_exporters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for exporter in [shared, *own_exporters]:
        exporter.shutdown()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM generations").fetchone() == (200,)
    steps_per_report = sum(len(s.timeline.entropy) for s in report.sequences)
    assert conn.execute("SELECT count(*) FROM steps").fetchone() == (200 * steps_per_report,)


WRITER = """
import sys
from pathlib import Path
from opentelemetry_instrumentation_corevital import Report
from opentelemetry_instrumentation_corevital.exporters.sqlite import SQLiteReportExporter
db, source, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
base = Report.from_json(Path(source).read_text()).to_dict()
exporter = SQLiteReportExporter(db)
for i in range(count):
    base["report_id"] = f"{prefix}{i:08x}".ljust(32, "0")[:32]
    exporter.export(Report.from_dict(base))
exporter.shutdown()
"""


def test_processes_lose_no_rows(report, tmp_path):
    db = tmp_path / "processes.sqlite3"
    source = tmp_path / "report.json"
    source.write_text(report.to_json())
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(source), f"c{p}", "40"], cwd=ROOT)
        for p in range(4)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0, 0, 0, 0]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM generations").fetchone() == (160,)
    ids = {row[0] for row in conn.execute("SELECT report_id FROM generations")}
    assert ids == {f"c{p}{i:08x}".ljust(32, "0")[:32] for p in range(4) for i in range(40)}


def test_unwritable_store_is_a_clear_error_at_configure_time(tmp_path):
    from opentelemetry_instrumentation_corevital import OutputError

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot open the SQLite store"):
        configure(exporters="sqlite", sqlite_path=blocker / "db.sqlite3")
