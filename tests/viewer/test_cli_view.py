"""`corevital view`: one clear line for what is missing, and a server that listens on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital.cli._view import MISSING_STREAMLIT, streamlit_command

from ..conftest import free_port
from .served import serve

ROOT = Path(__file__).resolve().parents[2]


def corevital(*args: str, prelude: str = "", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    code = (
        f"{prelude}\nimport sys\nfrom opentelemetry_instrumentation_corevital.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_view_without_streamlit_says_how_to_install(good_dir):
    # sys.modules[name] = None is Python's own way of making a module unimportable, as if not installed.
    result = corevital("view", str(good_dir), prelude="import sys; sys.modules['streamlit'] = None")
    assert result.returncode == 1
    assert result.stderr == f"corevital view: error: {MISSING_STREAMLIT}\n"
    assert "pip install 'opentelemetry-instrumentation-corevital[viewer]'" in MISSING_STREAMLIT


def test_view_of_a_missing_path_fails_fast(tmp_path):
    result = corevital("view", str(tmp_path / "nope"))
    assert (result.returncode, result.stderr) == (
        1,
        f"corevital view: error: {tmp_path / 'nope'}: no such file or folder\n",
    )
    result = corevital("view", cwd=tmp_path)  # the default ./corevital-data does not exist here
    assert result.returncode == 1
    assert result.stderr == (
        "corevital view: error: corevital-data: no such file or folder "
        "(run `corevital run` first, or name the files to read)\n"
    )
    result = corevital("view", "--port", "70000")
    assert result.returncode == 2 and "must be 1..65535, got 70000" in result.stderr


def test_streamlit_command_binds_loopback_without_browser_or_telemetry():
    command = streamlit_command("/x/app.py", 18555)
    flags = dict(zip(command[5::2], command[6::2]))
    assert command[1:5] == ["-m", "streamlit", "run", "/x/app.py"]
    assert flags == {
        "--server.address": "127.0.0.1",
        "--server.port": "18555",
        "--server.headless": "true",
        "--server.fileWatcherType": "none",
        "--server.runOnSave": "false",
        "--browser.gatherUsageStats": "false",
        "--global.developmentMode": "false",
        "--client.toolbarMode": "viewer",
    }


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # 0A = LISTEN
                out.append(address)
    return out


@pytest.mark.slow
def test_view_serves_the_app_on_loopback_and_stops_by_pid(tmp_path, good_dir):
    port = free_port()
    with serve([good_dir], port, tmp_path / "view.log") as url:
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "_stcore/health", timeout=5) as response:
            assert response.read() == b"ok"
        assert _listening(port) == ["0100007F"]  # 127.0.0.1 only
    assert _listening(port) == []
    log = (tmp_path / "view.log").read_text()
    assert log.startswith(f"corevital view: http://127.0.0.1:{port} (Ctrl+C stops it)\n")


@pytest.mark.slow
def test_corevital_view_shows_what_make_demo_wrote(tmp_path):
    """`make demo` is `corevital run` with its defaults; then `corevital view corevital-data/` shows that run."""
    from opentelemetry_instrumentation_corevital.viewer import build_index

    from .conftest import real_reports
    from .served import browser_missing, drive

    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    demo = subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_corevital.cli", "run", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    (report,) = real_reports(tmp_path / "corevital-data")
    (run,) = build_index([str(tmp_path / "corevital-data")]).runs
    with serve([Path("corevital-data/")], free_port(), tmp_path / "view.log", cwd=tmp_path) as url:
        shots = drive(url, tmp_path, run.label, stop_after="timeline")
    text = {s["name"]: " ".join(s["text"].split()) for s in shots}
    assert list(text) == ["runs", "run", "timeline"]
    assert "1 of 1 runs" in text["runs"] and "Runs 1" in text["runs"]
    assert f"Risk score {report['summary']['risk_score']:.3f}" in text["run"]
    assert f"Output tokens {report['usage']['output_tokens']}" in text["run"] and report["span_id"] in text["run"]
    assert "entropy (bits)" in text["timeline"]
