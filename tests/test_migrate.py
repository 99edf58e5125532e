"""`corevital migrate`: the original CoreVital's sample reports round-trip into reports and OTLP JSON lines;
malformed input gives one line naming the field and leaves no file behind."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import Report, validate_report
from opentelemetry_instrumentation_corevital.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "corevital"
SAMPLES = ["report-0.3.0.json", "report-0.4.0-llama-3.1-8b.json"]


def source(name: str, folder: Path) -> Path:
    """A fixture as a plain file in ``folder`` (the large ones are stored gzipped)."""
    target = folder / name
    packed = FIXTURES / (name + ".gz")
    target.write_bytes(gzip.decompress(packed.read_bytes()) if packed.exists() else (FIXTURES / name).read_bytes())
    return target


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def spans_of(path: Path) -> list[dict]:
    return [s for line in jsonl(path) for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def records_of(path: Path) -> list[dict]:
    return [
        r for line in jsonl(path) for rl in line["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]
    ]


def attribute(span: dict, key: str):
    (value,) = [kv["value"] for kv in span["attributes"] if kv["key"] == key]
    return next(iter(value.values()))


def migrate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["migrate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_round_trips(tmp_path, capsys, name):
    path = source(name, tmp_path)
    original = json.loads(path.read_text())
    out = tmp_path / "out"
    code, stdout, err = migrate(capsys, path, out)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"migrated 1 report ({original['schema_version']}: 1)"

    (line,) = (out / "reports.jsonl").read_text(encoding="utf-8").splitlines()
    data = json.loads(line)
    validate_report(data)
    report = Report.from_json(line)
    assert report.to_dict() == data  # our format round-trips exactly
    seq = report.sequences[0]

    # What has the same meaning is carried over exactly.
    steps = original["timeline"]
    assert seq.timeline.entropy == [s["logits_summary"]["entropy"] for s in steps]
    assert seq.timeline.surprisal == [s["logits_summary"]["surprisal"] for s in steps]
    assert seq.timeline.margin == [s["logits_summary"]["top_k_margin"] for s in steps]
    assert seq.timeline.topk_mass == [s["logits_summary"]["voter_agreement"] for s in steps]
    assert seq.timeline.top1_prob == [s["logits_summary"]["topk"][0]["prob"] for s in steps]
    assert seq.layers.indices == list(range(original["model"]["num_layers"]))
    assert seq.layers.steps == list(range(1, len(steps)))
    assert seq.layers.hidden_norm[5] == [s["layers"][5]["hidden_summary"]["l2_norm_mean"] for s in steps[1:]]
    assert seq.prompt.surprisal == original["prompt_analysis"]["prompt_surprisals"]
    assert seq.token_ids == original["generated"]["token_ids"]
    assert seq.output_text == original["generated"]["output_text"]
    assert seq.input_text == original["prompt"]["text"]
    assert (report.usage.input_tokens, report.usage.output_tokens) == (
        original["summary"]["prompt_tokens"],
        original["summary"]["generated_tokens"],
    )
    assert report.model.name == original["model"]["hf_id"] and report.model.model_type == "llama"
    assert report.trace_id == report.report_id == uuid.UUID(original["trace_id"]).hex
    assert report.capture.distribution == "processed_scores"
    assert report.request.temperature == original["run_config"]["generation"]["temperature"]
    # ... the original's own verdicts are kept for comparison, and ours computed afresh.
    assert report.origin.schema_version == original["schema_version"]
    assert report.origin.risk_score == original["extensions"]["risk"]["risk_score"]
    assert report.origin.health_flags == original["health_flags"]
    assert report.origin.narrative == original["extensions"]["narrative"]["summary"]
    assert report.thresholds.profile == "llama" and seq.risk is not None and seq.diagnosis.narrative
    assert "attn_collapsed_fraction" in report.capture.unavailable

    # One span per report at the original run's time, with the live span's attributes.
    (span,) = spans_of(out / "traces.jsonl")
    assert span["traceId"] == report.trace_id and span["spanId"] == report.span_id
    assert span["name"] == f"text_completion {original['model']['hf_id']}"
    end = dt.datetime.fromisoformat(original["created_at_utc"].replace("Z", "+00:00"))
    assert int(span["endTimeUnixNano"]) == int(end.timestamp() * 1e9)
    assert (
        int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == original["summary"]["elapsed_ms"] * 1_000_000
    )
    assert attribute(span, "corevital.risk.score") == report.summary.risk_score
    assert attribute(span, "corevital.narrative") == report.summary.narrative
    assert attribute(span, "corevital.migrated_from") == f"CoreVital {original['schema_version']}"
    assert attribute(span, "gen_ai.usage.output_tokens") == str(original["summary"]["generated_tokens"])

    # One report log record, joined to the span, whose body is the report.
    (record,) = records_of(out / "logs.jsonl")
    assert record["eventName"] == "corevital.generation.report"
    assert (record["traceId"], record["spanId"]) == (span["traceId"], span["spanId"])
    assert json.loads(record["body"]["stringValue"]) == data
    assert record["timeUnixNano"] == span["endTimeUnixNano"]

    # Converting again gives the same report, byte for byte.
    code, _, err = migrate(capsys, path, out, "--force")
    assert code == 0, err
    assert (out / "reports.jsonl").read_text(encoding="utf-8").splitlines() == [line]


def test_folder_of_reports_and_no_content(tmp_path, capsys):
    folder = tmp_path / "history"
    folder.mkdir()
    for name in SAMPLES:
        source(name, folder)
    out = tmp_path / "out"
    code, stdout, err = migrate(capsys, folder, out, "--no-content")
    assert code == 0, err
    assert stdout.splitlines()[0] == "migrated 2 reports (0.3.0: 1, 0.4.0: 1)"
    reports = [Report.from_dict(d) for d in jsonl(out / "reports.jsonl")]
    assert len(spans_of(out / "traces.jsonl")) == len(records_of(out / "logs.jsonl")) == 2
    for report in reports:
        seq = report.sequences[0]
        assert seq.token_ids is None and seq.output_text is None and report.input_messages is None
        assert "repetition_loop" not in seq.flags.unavailable  # diagnosed from the ids before they were dropped


def test_seq2seq_excerpt(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = migrate(capsys, FIXTURES / "seq2seq-0.4.0-excerpt.json", out)
    assert code == 0, err
    (report,) = [Report.from_dict(d) for d in jsonl(out / "reports.jsonl")]
    seq = report.sequences[0]
    assert (report.model.model_type, report.model.is_encoder_decoder, report.thresholds.profile) == ("t5", True, "t5")
    assert report.capture.distribution == "raw_logits"
    assert report.capture.unavailable["timeline"] == "the source holds 1 of 21 steps"
    assert seq.timeline.entropy == [7.6129] and seq.output_tokens == 21
    assert seq.encoder.indices == [0, 12, 23] and seq.encoder.hidden_norm[0] == 490.0345
    assert "the source holds 1 of 21 steps (an excerpt)" in report.origin.notes


def test_annotated_excerpts_are_rejected_naming_the_elided_field(tmp_path):
    """The annotated sample elides lists ("... 15 more IDs omitted"): nothing can be converted faithfully."""
    path = source("trace-annotated-0.4.0.json", tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_corevital.cli", "migrate", str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"corevital migrate: error: {path}: causal_lm_example: prompt.token_ids[8]: expected an "
        "integer, got '... 15 more IDs omitted for brevity'\n"
    )
    assert not out.exists() or list(out.iterdir()) == []


def _set(data: dict, path: list, value) -> dict:
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()
BROKEN = [
    (["schema_version"], _DELETE, "schema_version: expected a string such as '0.4.0', got None"),
    (
        ["schema_version"],
        "0.2.0",
        "schema_version '0.2.0' is not a CoreVital version this command reads (0.3.x, 0.4.0)",
    ),
    (["schema_version"], "1.2.0", "schema_version '1.2.0' is already this package's report format; nothing to migrate"),
    (
        ["timeline", 1, "logits_summary", "entropy"],
        "high",
        "timeline[1].logits_summary.entropy: expected a number, got 'high'",
    ),
    (
        ["timeline", 3, "layers", 2, "hidden_summary", "l2_norm_mean"],
        [1],
        "timeline[3].layers[2].hidden_summary.l2_norm_mean: expected a number, got [1]",
    ),
    (["timeline"], {"steps": []}, "timeline: expected a list, got {'steps': []}"),
    (["model"], _DELETE, "model: missing"),
    (["model", "hf_id"], 7, "model.hf_id: expected a string, got 7"),
    (["trace_id"], "run-42", "trace_id: not a UUID: 'run-42'"),
    (["created_at_utc"], "yesterday", "created_at_utc: not an ISO 8601 time: 'yesterday'"),
    (["generated", "num_tokens"], -1, "generated.num_tokens: expected a count >= 0, got -1"),
    (
        ["timeline", 0, "layers", 0, "anomalies", "has_nan"],
        "no",
        "timeline[0].layers[0].anomalies.has_nan: expected true or false, got 'no'",
    ),
]


@pytest.mark.parametrize("path, value, message", BROKEN, ids=[m.split(":")[0] for *_, m in BROKEN])
def test_malformed_input_names_the_field_and_writes_nothing(tmp_path, capsys, path, value, message):
    good = json.loads(source("report-0.3.0.json", tmp_path).read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_set(copy.deepcopy(good), path, value)))
    out = tmp_path / "out"
    code, stdout, err = migrate(capsys, bad, out)
    assert (code, stdout) == (1, "")
    assert err == f"corevital migrate: error: {bad}: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        ("[1, 2]", "[0]: top level: expected an object, got 1"),
    ],
)
def test_unreadable_files(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    code, _, err = migrate(capsys, bad, tmp_path / "out")
    assert code == 1 and err == f"corevital migrate: error: {bad}: {message}\n"


def test_one_bad_report_in_a_batch_writes_nothing(tmp_path, capsys):
    good = json.loads(source("report-0.3.0.json", tmp_path).read_text())
    bad = copy.deepcopy(good)
    bad["timeline"][2]["logits_summary"]["surprisal"] = None
    bad["timeline"][2]["logits_summary"]["entropy"] = "NaN?"
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    code, _, err = migrate(capsys, batch, tmp_path / "out")
    assert code == 1
    assert err == (
        f"corevital migrate: error: {batch}:2: timeline[2].logits_summary.entropy: expected a number, got 'NaN?'\n"
    )
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(tmp_path, capsys):
    path = source("report-0.3.0.json", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "reports.jsonl").write_text("keep me\n")
    code, _, err = migrate(capsys, path, out)
    assert (
        code == 1
        and err == f"corevital migrate: error: {out / 'reports.jsonl'} already exist; use --force to replace them\n"
    )
    assert (out / "reports.jsonl").read_text() == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == ["reports.jsonl"]  # no temporary file left either


def test_missing_input(tmp_path, capsys):
    code, _, err = migrate(capsys, tmp_path / "nothing.json", tmp_path / "out")
    assert code == 1 and err == f"corevital migrate: error: {tmp_path / 'nothing.json'}: no such file or folder\n"
