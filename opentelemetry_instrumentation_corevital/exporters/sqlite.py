"""A local, queryable history of generations in one SQLite file.

Two tables: ``generations`` (one row per report, the summary columns plus the
whole report as JSON) and ``steps`` (one row per generated token of each
sequence). Any number of threads and processes may write the same file: the
database runs in WAL mode, every report is one ``BEGIN IMMEDIATE``
transaction, and a writer that finds the file locked waits (``busy_timeout``)
instead of failing. Rows are never lost to a concurrent writer; a report that
still cannot be written raises, which the dispatcher turns into one warning.

Query it with any SQLite client::

    SELECT model, count(*), avg(risk_score) FROM generations GROUP BY model;
    SELECT step, entropy FROM steps WHERE report_id = ? AND sequence = 0 ORDER BY step;
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from .._values import parse_sqlite_path
from ..report import TIMELINE_SERIES, Report
from ..signals import finite_or_none
from ._private import create_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    report_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    schema_version TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    generation_mode TEXT,
    capture_mode TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    time_to_first_token_s REAL,
    time_per_output_token_s REAL,
    risk_score REAL,
    risk_level TEXT,
    flags TEXT NOT NULL,
    entropy_mean REAL,
    entropy_max REAL,
    surprisal_mean REAL,
    margin_mean REAL,
    report_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_created_at ON generations (created_at);
CREATE INDEX IF NOT EXISTS generations_model_risk ON generations (model, risk_score);
CREATE TABLE IF NOT EXISTS steps (
    report_id TEXT NOT NULL REFERENCES generations (report_id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL,
    step INTEGER NOT NULL,
    token_id INTEGER,
    entropy REAL,
    perplexity REAL,
    surprisal REAL,
    top1_prob REAL,
    margin REAL,
    topk_mass REAL,
    PRIMARY KEY (report_id, sequence, step)
);
"""

STEP_COLUMNS = TIMELINE_SERIES


def generation_row(report: Report) -> dict[str, Any]:
    """The ``generations`` row of a report, as a column -> value mapping."""
    summary, agg = report.summary, report.summary.aggregates
    return {
        "report_id": report.report_id,
        "created_at": report.created_at,
        "trace_id": report.trace_id,
        "span_id": report.span_id,
        "schema_version": report.schema_version,
        "model": report.model.name,
        "operation": report.request.operation,
        "generation_mode": report.request.generation_mode,
        "capture_mode": report.capture.mode,
        "input_tokens": report.usage.input_tokens,
        "output_tokens": report.usage.output_tokens,
        "duration_s": report.timings.duration_s,
        "time_to_first_token_s": report.timings.time_to_first_token_s,
        "time_per_output_token_s": report.timings.time_per_output_token_s,
        "risk_score": summary.risk_score,
        "risk_level": summary.risk_level,
        "flags": ",".join(summary.flags),
        "entropy_mean": agg.entropy_mean,
        "entropy_max": agg.entropy_max,
        "surprisal_mean": agg.surprisal_mean,
        "margin_mean": agg.margin_mean,
        "report_json": report.to_json(),
    }


def step_rows(report: Report) -> Iterator[tuple[Any, ...]]:
    """``steps`` rows: (report_id, sequence, step, token_id, entropy, ... topk_mass)."""
    for sequence in report.sequences:
        timeline = sequence.timeline
        for step in range(len(timeline.entropy)):
            token = sequence.token_ids[step] if sequence.token_ids and step < len(sequence.token_ids) else None
            values = []
            for column in STEP_COLUMNS:
                series = getattr(timeline, column)
                values.append(finite_or_none(series[step]) if step < len(series) else None)
            yield (report.report_id, sequence.index, step, token, *values)


def connect(path: str | os.PathLike[str], busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """A connection to a CoreVital history file (created owner-only), creating the tables if needed."""
    if os.fspath(path) not in ("", ":memory:"):
        create_private(path)
    conn = sqlite3.connect(os.fspath(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(SCHEMA)
    return conn


def read_report(conn: sqlite3.Connection, report_id: str) -> Report | None:
    """The stored report with this id, rebuilt exactly, or None."""
    row = conn.execute("SELECT report_json FROM generations WHERE report_id = ?", (report_id,)).fetchone()
    return Report.from_json(row[0]) if row else None


class SQLiteReportExporter:
    """Writes every report to ``path`` (created with its folder if missing)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = parse_sqlite_path(os.fspath(path), "path")  # refuses `:memory:`
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = connect(self.path)

    def export(self, report: Report) -> None:
        """Insert one row for the report, reconnecting if the file was closed."""
        row = generation_row(report)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            if self._conn is None:
                self._conn = connect(self.path)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"INSERT OR REPLACE INTO generations ({columns}) VALUES ({marks})", tuple(row.values()))
                conn.execute("DELETE FROM steps WHERE report_id = ?", (report.report_id,))
                conn.executemany(
                    "INSERT INTO steps (report_id, sequence, step, token_id, "
                    + ", ".join(STEP_COLUMNS)
                    + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    list(step_rows(report)),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def shutdown(self) -> None:
        """Close the connection; a later export reopens it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
