"""The pieces of tools/demo_vllm.py (`make demo-vllm`) that need no server; tests/vllm runs the demo end to end."""

from __future__ import annotations

import sys

from opentelemetry_instrumentation_corevital.viewer import RunSummary

from ._services import demo_vllm as _demo


def test_server_and_client_commands(tmp_path):
    demo = _demo()
    model = tmp_path / "model"
    assert demo.server_command(model, 8123) == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", "SmolLM2-135M-Instruct", "--dtype", "float32", "--max-model-len", "2048",
        "--enforce-eager", "--host", "127.0.0.1", "--port", "8123",
    ]  # fmt: skip
    # the test session's server: another python, served under its model path
    assert demo.server_command(model, 8123, python="py", served_name=None)[:5] == [
        "py", "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
    ]  # fmt: skip
    assert "--served-model-name" not in demo.server_command(model, 8123, served_name=None)
    env = demo.server_env(tmp_path)
    assert {k: env[k] for k in env if k.startswith("OTEL_INSTRUMENTATION_COREVITAL_")} == {
        "OTEL_INSTRUMENTATION_COREVITAL_VLLM": "true",
        "OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "otlp-json",
        "OTEL_INSTRUMENTATION_COREVITAL_OUT": str(tmp_path),
        "OTEL_INSTRUMENTATION_COREVITAL_REPORT_LOG": "true",
    }
    assert demo.client_command("http://127.0.0.1:8123/v1", tmp_path, "Hi.")[3:] == [
        "run", "--backend", "openai", "--base-url", "http://127.0.0.1:8123/v1", "--exporter", "otlp-json",
        "--out", str(tmp_path), "--prompt", "Hi.", "--quiet",
    ]  # fmt: skip


def test_trace_lines_say_whether_the_two_spans_are_one_trace():
    demo = _demo()
    client = RunSummary(key="c", trace_id="a" * 32, provider="openai")
    same = RunSummary(key="s", trace_id="a" * 32, provider="vllm")
    other = RunSummary(key="o", trace_id="b" * 32, provider="vllm")
    assert demo.trace_lines(client, same) == [
        f"client span (openai, CLIENT)  trace {'a' * 32}",
        f"server span (vllm, SERVER)    trace {'a' * 32}",
        "one trace: the server's span continues the client's (traceparent header)",
    ]
    assert demo.trace_lines(client, other)[1:] == [
        f"server span (vllm, SERVER)    trace {'b' * 32}",
        "two traces: the client did not send its trace context (no traceparent header)",
    ]
    assert demo.trace_lines(None, other)[0] == "client span (openai, CLIENT)  trace not found"
