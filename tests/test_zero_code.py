"""Zero-code: `opentelemetry-instrument python app.py` on an app that never imports CoreVital."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "zero_code" / "app.py"


def run_instrumented(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "MAX_NEW_TOKENS": "12",
        **extra_env,
    }
    return subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), "python", str(APP)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_app_gets_a_chat_span_with_risk_score():
    assert "corevital" not in APP.read_text().replace("CoreVital import", "")
    result = run_instrumented({})
    assert result.returncode == 0, result.stderr[-2000:]
    answer, _, spans_text = result.stdout.partition("\n{")
    assert "Paris" in answer
    span = json.loads("{" + spans_text)
    assert span["name"] == "chat SmolLM2-135M-Instruct.Q4_1"  # the GGUF file stem, never the folder path
    assert span["kind"] == "SpanKind.INTERNAL"
    attrs = span["attributes"]
    assert 0.0 <= attrs["corevital.risk.score"] <= 1.0
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "huggingface"
    assert span["resource"]["attributes"]["telemetry.auto.version"]


@pytest.mark.slow
def test_disabled_by_entry_point_name():
    result = run_instrumented({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "corevital"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "corevital.risk.score" not in result.stdout


@pytest.mark.slow
def test_exporters_from_the_environment_route_corevital_telemetry(tmp_path):
    """OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS: zero-code configures CoreVital's own exporters from the environment
    and hands their providers to the instrumentor; the application's console exporter no longer gets the span."""
    result = run_instrumented(
        {"OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "otlp-json", "OTEL_INSTRUMENTATION_COREVITAL_OUT": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout and "corevital.risk.score" not in result.stdout
    lines = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    (span,) = [s for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert span["name"] == "chat SmolLM2-135M-Instruct.Q4_1"  # the GGUF file stem, never the folder path
    assert "corevital.risk.score" in {kv["key"] for kv in span["attributes"]}
