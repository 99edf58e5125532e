"""Start and stop the real local services the tests use, by PID, on 127.0.0.1 only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator

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
def rotel_collector(grpc_port: int, http_port: int, *extra: str, log_path: str | None = None) -> Iterator[subprocess.Popen]:
    """A rotel collector in the foreground (we own its PID); ``extra`` picks its exporter."""
    args = [
        rotel_binary(), "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--batch-timeout", "50ms",
        *extra,
    ]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    try:
        wait_for_port(http_port, proc=proc)
        wait_for_port(grpc_port, proc=proc)
        yield proc
    finally:
        stop(proc)
        if log_path:
            log.close()
