"""`corevital run --exporter ...`: several exporters at once, and one clear line for bad exporter options."""

from __future__ import annotations

import json
import sqlite3

import pytest

from .test_cli import attribute, corevital, jsonl, spans_of


@pytest.mark.slow
def test_files_and_sqlite_from_one_run(tiny_model_dir, tmp_path):
    out = tmp_path / "data"
    result = corevital(
        "run",
        "--model",
        str(tiny_model_dir),
        "--no-chat",
        "--prompt",
        "the sky is blue",
        "--max-new-tokens",
        "5",
        "--exporter",
        "otlp-json",
        "--exporter",
        "sqlite",
        "--out",
        str(out),
        "--quiet",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("traces.jsonl", "metrics.jsonl", "logs.jsonl", "corevital.sqlite3"):
        assert f"  {out / name}" in result.stdout
    (span,) = spans_of(jsonl(out / "traces.jsonl"))
    conn = sqlite3.connect(out / "corevital.sqlite3")
    ((trace_id, risk, report_json),) = conn.execute("SELECT trace_id, risk_score, report_json FROM generations")
    assert trace_id == span["traceId"]
    assert risk == attribute(span, "corevital.risk.score")["doubleValue"]
    report = json.loads(report_json)
    steps = conn.execute("SELECT entropy FROM steps ORDER BY step").fetchall()
    assert [s[0] for s in steps] == report["sequences"][0]["timeline"]["entropy"]
    metric_names = {
        m["name"]
        for line in jsonl(out / "metrics.jsonl")
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    }
    assert "corevital.token.entropy" in metric_names


@pytest.mark.slow
def test_exporters_from_the_environment_when_no_flag_names_one(tiny_model_dir, tmp_path):
    """Like every option the command line does not set, the exporters come from the environment."""
    out = tmp_path / "data"
    result = corevital(
        *("run", "--model", str(tiny_model_dir), "--no-chat", "--prompt", "the sky", "--max-new-tokens", "3"),
        *("--out", str(out), "--quiet"),
        env={"OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "sqlite"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["corevital.sqlite3"]
    conn = sqlite3.connect(out / "corevital.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM generations").fetchone() == (1,)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--exporter", "kafka"], 2, "argument --exporter: invalid choice: 'kafka'"),
        # Values are parsed by the option table's parsers, as for configure(), naming the flag.
        (["--rotate-bytes", "-1"], 1, "corevital run: error: --rotate-bytes='-1' must be >= 0."),
        (
            ["--prometheus-port", "70000"],
            1,
            "corevital run: error: --prometheus-port='70000' must be between 0 and 65535.",
        ),
        (["--dogstatsd-host", "a b"], 1, "corevital run: error: --dogstatsd-host='a b' is not a host name or address."),
    ],
)
def test_bad_exporter_arguments(args, code, message, tmp_path):
    result = corevital("run", "--out", str(tmp_path), *args, timeout=60)
    assert result.returncode == code
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
