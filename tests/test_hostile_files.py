"""Hostile files given to `corevital migrate`: one clear line naming the file and field, never a traceback, never a
report written with a value silently dropped."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from tests.test_migrate import _set, migrate, source

# (name, change to the sample report, the error after "<file>: ")
HOSTILE = [
    ("deep_nesting", "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    (
        "huge_integer",
        '{"schema_version": "0.3.0", "x": ' + "9" * 5000 + "}",
        "not readable JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits)",
    ),
    (
        "entropy_1024",
        (["timeline", 1, "logits_summary", "entropy"], 1024.0),
        "timeline[1].logits_summary.entropy: expected bits below 1024, got 1024.0",
    ),
    (
        "surprisal_1e308",
        (["timeline", 2, "logits_summary", "surprisal"], 1e308),
        "timeline[2].logits_summary.surprisal: expected bits below 1024, got 1e+308",
    ),
    (
        "year_1",
        (["created_at_utc"], "0001-01-01T00:00:00Z"),
        "created_at_utc: '0001-01-01T00:00:00Z' is outside 1970-01-01..2262-04-10 (OpenTelemetry's time range)",
    ),
    (
        "year_9999",
        (["created_at_utc"], "9999-12-31T23:59:59Z"),
        "created_at_utc: '9999-12-31T23:59:59Z' is outside 1970-01-01..2262-04-10 (OpenTelemetry's time range)",
    ),
    (
        "year_1_east",
        (["created_at_utc"], "0001-01-01T00:00:00+05:00"),
        "created_at_utc: '0001-01-01T00:00:00+05:00' is outside 1970-01-01..2262-04-10 (OpenTelemetry's time range)",
    ),
    ("elapsed_1e300", (["summary", "elapsed_ms"], 1e300), "summary.elapsed_ms: expected 0 to "),
    ("elapsed_negative", (["summary", "elapsed_ms"], -5.0), "summary.elapsed_ms: expected 0 to "),
    (
        "num_tokens_1e20_int",
        (["generated", "num_tokens"], 10**20),
        "generated.num_tokens: expected a 64-bit integer, got 100000000000000000000",
    ),
    (
        "num_tokens_1e20_float",
        (["generated", "num_tokens"], 1e20),
        "generated.num_tokens: expected an integer, got 1e+20",
    ),
    (
        "prompt_tokens_1e20",
        (["prompt", "num_tokens"], 10**20),
        "prompt.num_tokens: expected a 64-bit integer, got 100000000000000000000",
    ),
    (
        "max_new_tokens_1e30",
        (["run_config", "max_new_tokens"], 10**30),
        "run_config.max_new_tokens: expected a 64-bit integer, got 1000000000000000000000000000000",
    ),
]


def hostile_file(folder: Path, change) -> Path:
    bad = folder / "bad.json"
    if isinstance(change, str):
        bad.write_text(change)
    else:
        good = json.loads(source("report-0.3.0.json", folder).read_text())
        bad.write_text(json.dumps(_set(copy.deepcopy(good), *change)))
    return bad


@pytest.mark.parametrize("change, message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_migrate_names_the_file_and_field_of_a_hostile_value(tmp_path, capsys, change, message):
    bad = hostile_file(tmp_path, change)
    out = tmp_path / "out"
    code, stdout, err = migrate(capsys, bad, out)
    assert (code, stdout) == (1, "")
    assert err.startswith(f"corevital migrate: error: {bad}: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()


def test_migrate_in_a_batch_names_the_line_of_the_hostile_report(tmp_path, capsys):
    good = source("report-0.3.0.json", tmp_path).read_text()
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(json.loads(good)) + "\n" + "[" * 50_000 + "]" * 50_000 + "\n")
    code, _, err = migrate(capsys, batch, tmp_path / "out")
    assert (code, err) == (1, f"corevital migrate: error: {batch}:2: JSON nested too deeply\n")


def test_migrate_at_the_edges_of_the_ranges_still_converts(tmp_path, capsys):
    """The bounds refuse only what cannot be written: the last representable values convert."""
    good = json.loads(source("report-0.3.0.json", tmp_path).read_text())
    edge = copy.deepcopy(good)
    edge["created_at_utc"] = "2262-04-10T23:59:59Z"
    edge["generated"]["num_tokens"] = 2**63 - 1
    edge["timeline"][1]["logits_summary"]["entropy"] = 1023.5
    edge["summary"]["elapsed_ms"] = 1000.0
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(edge))
    code, stdout, err = migrate(capsys, path, tmp_path / "out")
    assert (code, err) == (0, ""), err
    (report,) = [json.loads(line) for line in (tmp_path / "out" / "reports.jsonl").read_text().splitlines()]
    assert report["created_at"] == "2262-04-10T23:59:59Z"
    assert report["usage"]["output_tokens"] == 2**63 - 1
    assert report["sequences"][0]["timeline"]["entropy"][1] == 1023.5


def test_migrate_says_why_a_report_could_not_be_written(tmp_path, capsys):
    """An exporter that logs and drops (here: its file is a folder) fails the run naming the report and the reason."""
    path = source("report-0.3.0.json", tmp_path)
    out = tmp_path / "out"
    (out / f".traces.jsonl.{os.getpid()}.tmp").mkdir(parents=True)
    code, stdout, err = migrate(capsys, path, out)
    assert (code, stdout) == (1, "")
    assert err.startswith(f"corevital migrate: error: OUT {out}: wrote 0 of 1 reports: {path} could not be written (")
    assert "refusing to write through a file that is not a regular file" in err, err
    assert err.endswith("; nothing kept\n") and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == [f".traces.jsonl.{os.getpid()}.tmp"]
