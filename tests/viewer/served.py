"""The viewer as a person meets it: `corevital view` served on 127.0.0.1, driven by headless chromium.

Shared by the browser test and ``make screenshots`` (tests/viewer/screenshots.py), so the docs'
pictures come from the same run of the same code that the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._services import stop

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "browser" / "drive.mjs"
ROOT = HERE.parents[1]


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None (`make browser-deps` installs both)."""
    if not shutil.which("chromium"):
        return "Debian chromium is not installed (make browser-deps)"
    if not shutil.which("node") or not (HERE / "browser" / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (make browser-deps)"
    return None


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok`` (or the server dies, or the deadline passes)."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"corevital view exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer ok within {timeout}s")


@contextmanager
def serve(paths: list[Path], port: int, log: Path, cwd: Path = ROOT) -> Iterator[str]:
    """`corevital view PATHS --port PORT` in a subprocess (its PID is the server's), stopped by that PID."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opentelemetry_instrumentation_corevital.cli",
                "view",
                *map(str, paths),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        try:
            wait_healthy(port, proc)
            yield f"http://127.0.0.1:{port}/"
        finally:
            stop(proc)


def drive(
    url: str,
    out: Path,
    run: str,
    deep_run: str | None = None,
    stop_after: str | None = None,
    timeout: float = 240,
    link: str | None = None,
    links: list[str] | None = None,
    compare: list[str] | None = None,
) -> list[dict]:
    """Run the browser scenario; returns [{name, file, url, text, charts}] for each screenshot taken."""
    job = {
        "url": url,
        "out": str(out),
        "run": run,
        "deepRun": deep_run,
        "link": link,
        "chromium": shutil.which("chromium"),
        "stopAfter": stop_after,
        "links": links,
        "compare": compare,
    }
    result = subprocess.run(
        ["timeout", str(int(timeout)), "node", str(DRIVER), json.dumps(job)],
        capture_output=True,
        text=True,
        cwd=DRIVER.parent,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"browser scenario failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
