"""`corevital run`: real SmolLM2 end to end, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import validate_report

ROOT = Path(__file__).resolve().parents[1]


def corevital(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_corevital.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def spans_of(lines: list[dict]) -> list[dict]:
    return [s for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def attribute(span: dict, key: str):
    for kv in span["attributes"]:
        if kv["key"] == key:
            return kv["value"]
    raise KeyError(key)


@pytest.mark.slow
def test_run_on_the_embedded_model_writes_otlp_json_lines(tmp_path):
    out = tmp_path / "data"
    result = corevital("run", "--max-new-tokens", "16", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    assert stdout.startswith("corevital · SmolLM2-135M-Instruct.Q4_1 · chat · greedy_search · ")
    for label in ("risk ", "flags ", "entropy ", "timing ", "wrote"):
        assert f"\n{label}" in stdout, label
    for name in ("traces.jsonl", "metrics.jsonl", "logs.jsonl"):
        assert str(out / name) in stdout

    (span,) = spans_of(jsonl(out / "traces.jsonl"))
    assert span["name"] == "chat SmolLM2-135M-Instruct.Q4_1"
    assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    int(span["traceId"], 16)
    assert span["kind"] == 1
    assert attribute(span, "gen_ai.usage.output_tokens") == {"intValue": "16"}
    assert attribute(span, "gen_ai.provider.name") == {"stringValue": "huggingface"}
    risk = attribute(span, "corevital.risk.score")["doubleValue"]
    assert 0.0 <= risk <= 1.0
    entropy = attribute(span, "corevital.step.entropy")["arrayValue"]["values"]
    assert len(entropy) == 16 and all("doubleValue" in v for v in entropy)

    (log_line,) = jsonl(out / "logs.jsonl")
    (record,) = log_line["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert record["eventName"] == "corevital.generation.report"
    assert record["traceId"] == span["traceId"] and record["spanId"] == span["spanId"]
    report = json.loads(record["body"]["stringValue"])
    validate_report(report)
    assert report["summary"]["risk_score"] == risk
    assert f"risk      {risk:.2f} " in stdout

    metric_names = {
        m["name"]
        for line in jsonl(out / "metrics.jsonl")
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    }
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
        "corevital.risk.score",
    } <= metric_names


@pytest.mark.slow
def test_json_output_is_a_valid_report(tmp_path):
    result = corevital(
        "run",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path),
        "--json",
        "--quiet",
        "--prompt",
        "Say hello.",
        "--no-chat",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    validate_report(report)
    assert report["request"]["operation"] == "text_completion"
    assert report["usage"]["output_tokens"] <= 8


@pytest.mark.slow
def test_profile_thresholds_and_stop_on_reach_the_report(tmp_path):
    # A raw prompt that SmolLM2 continues in a period-2 loop ("more and more and ...").
    result = corevital(
        "run",
        "--max-new-tokens",
        "40",
        "--out",
        str(tmp_path),
        "--json",
        "--quiet",
        "--no-chat",
        "--prompt",
        "more and more and more and more and more and more and",
        "--profile",
        "llama",
        "--thresholds",
        "high_entropy_bits=9",
        "--stop-on",
        "repetition_loop",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["thresholds"]["profile"] == "llama" and report["thresholds"]["high_entropy_bits"] == 9.0
    assert report["sequences"][0]["intervention"]["condition"] == "repetition_loop"
    assert report["sequences"][0]["finish_reason"] == "intervention"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--max-new-tokens", "-3"], 2, "argument --max-new-tokens: must be >= 1, got -3"),
        (["--max-new-tokens", "many"], 2, "argument --max-new-tokens: 'many' is not a whole number"),
        (["--model", "/no/such/model"], 1, "model '/no/such/model' not found: no such file or folder"),
        (["--capture", "loud"], 1, "--capture='loud' is not a capture mode"),
        (["--profile", "lama"], 1, "--profile='lama': unknown profile"),
        (["--thresholds", "window=0"], 1, "--thresholds: threshold 'window' must be a whole number >= 1, got 0.0"),
        (["--stop-on", "loops"], 1, "--stop-on='loops': unknown condition 'loops'"),
    ],
)
def test_bad_input_gives_one_clear_line(args, code, message, tmp_path):
    result = corevital("run", "--out", str(tmp_path), *args, timeout=60)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = corevital("run", "--out", str(blocker / "sub"), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"corevital run: error: cannot write to --out {blocker / 'sub'}: Not a directory"


def test_bad_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    result = corevital("run", "--model", str(bad), "--out", str(tmp_path / "o"), "--quiet", timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f"corevital run: error: cannot load GGUF file {bad}: ValueError: ")
    assert "is GGUF v0; this reader handles v2 and v3" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_full_capture_and_strict_perf_show_per_layer_data(tmp_path):
    result = corevital(
        "run",
        "--capture",
        "full",
        "--max-new-tokens",
        "8",
        "--perf",
        "strict",
        "--perf-runs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    layer_lines = [line for line in lines if line.startswith("  L")]
    assert len(layer_lines) == 30  # SmolLM2 has 30 decoder layers
    assert all("attn entropy" in line and "collapsed" in line for line in layer_lines)
    assert any(line.startswith("prompt    ") and "perplexity" in line for line in lines)
    assert any(line.startswith("overhead  ") and "median of 1, --perf strict" in line for line in lines)
    (span,) = spans_of(jsonl(tmp_path / "traces.jsonl"))
    assert attribute(span, "corevital.perf.method") == {"stringValue": "strict"}
    ratio = attribute(span, "corevital.perf.ratio")["doubleValue"]
    assert ratio > 0
    assert len(attribute(span, "corevital.layers.attn_entropy")["arrayValue"]["values"]) == 30
    events = [e for e in span.get("events", []) if e["name"] == "corevital.step"]
    assert len(events) == 8
    step_logs = [
        r
        for line in jsonl(tmp_path / "logs.jsonl")
        for rl in line["resourceLogs"]
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
        if r.get("eventName") == "corevital.generation.step"
    ]
    assert len(step_logs) == 8
    report = next(
        json.loads(r["body"]["stringValue"])
        for line in jsonl(tmp_path / "logs.jsonl")
        for rl in line["resourceLogs"]
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
        if r.get("eventName") == "corevital.generation.report"
    )
    validate_report(report)
    assert report["perf"]["ratio"] == ratio


def test_content_is_one_word_and_off_unless_given():
    from opentelemetry_instrumentation_corevital import ContentMode
    from opentelemetry_instrumentation_corevital._config import Options, resolve
    from opentelemetry_instrumentation_corevital.cli import build_parser
    from opentelemetry_instrumentation_corevital.cli._flags import parsed

    parser = build_parser()
    assert parsed(parser.parse_args(["run"]), Options) == {}
    assert resolve(Options, {}, environ={}).content is False  # off by default, the CLI included
    assert parsed(parser.parse_args(["run", "--content"]), Options) == {"capture_content": True}
    mode = parsed(parser.parse_args(["run", "--content", "span_and_event"]), Options)
    assert mode == {"capture_content": ContentMode.SPAN_AND_EVENT}
    result = corevital("run", "--content", "maybe")
    assert result.returncode == 1 and "--content='maybe' is not a content-capture mode" in result.stderr


def report_in(out: Path) -> dict:
    """The one report log record's report in ``out``/logs.jsonl."""
    (body,) = [
        record["body"]["stringValue"]
        for line in jsonl(out / "logs.jsonl")
        for rl in line["resourceLogs"]
        for sl in rl["scopeLogs"]
        for record in sl["logRecords"]
        if record.get("eventName") == "corevital.generation.report"
    ]
    return json.loads(body)


@pytest.mark.slow
def test_content_reaches_the_files_only_with_the_flag(tmp_path, smollm2):
    """`corevital run --content` writes the prompt, output, token ids and each token's text into the report; the
    same greedy run without it writes none of them into any file (traces, logs, metrics)."""
    args = ("run", "--no-chat", "--prompt", "The capital of France is", "--max-new-tokens", "8", "--quiet")
    on, off = tmp_path / "on", tmp_path / "off"
    assert corevital(*args, "--content", "--out", str(on)).returncode == 0
    assert corevital(*args, "--out", str(off)).returncode == 0
    tokenizer, _ = smollm2
    (seq,) = report_in(on)["sequences"]
    assert len(seq["token_ids"]) == 8
    assert seq["token_texts"] == [tokenizer.decode([i]) for i in seq["token_ids"]]
    assert seq["input_text"] == "The capital of France is" and seq["output_text"]
    (plain,) = report_in(off)["sequences"]
    assert (plain["token_ids"], plain["token_texts"], plain["input_text"], plain["output_text"]) == (None,) * 4
    pieces = json.dumps(seq["token_texts"])[1:-1]  # the token texts as a JSON list writes them
    for name in ("traces.jsonl", "logs.jsonl", "metrics.jsonl"):
        data = (off / name).read_text(encoding="utf-8")
        assert seq["output_text"] not in data and "France" not in data, name
        assert pieces not in data and pieces.replace('"', '\\"') not in data, name
