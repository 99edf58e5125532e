"""examples/configure/app.py runs as its docstring says: configure() builds the exporters, instrument() takes them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import attribute, jsonl, spans_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_configure_example_writes_files_and_history(tmp_path):
    out = tmp_path / "data"
    env = {**os.environ, "OUT": str(out), "MAX_NEW_TOKENS": "4", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "examples/configure/app.py"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["corevital.sqlite3", "logs.jsonl", "metrics.jsonl", "traces.jsonl"]
    for name in written:
        assert f"  {out / name}" in result.stdout
    (span,) = spans_of(jsonl(out / "traces.jsonl"))
    assert attribute(span, "corevital.capture.mode") == {"stringValue": "full"}
    conn = sqlite3.connect(out / "corevital.sqlite3")
    ((trace_id, risk),) = conn.execute("SELECT trace_id, risk_score FROM generations")
    assert trace_id == span["traceId"]
    assert risk == attribute(span, "corevital.risk.score")["doubleValue"]
