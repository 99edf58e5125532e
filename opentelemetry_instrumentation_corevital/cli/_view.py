"""``corevital view``: open the Streamlit viewer on OTLP JSON lines files, on 127.0.0.1."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import CoreVitalError
from ._flags import port
from ._telemetry import DEFAULT_OUT

DEFAULT_PORT = 8577
ENV_PATHS = "COREVITAL_VIEW_PATHS"  # read by viewer/app.py
MISSING_STREAMLIT = (
    "the viewer needs Streamlit, which is not installed: pip install 'opentelemetry-instrumentation-corevital[viewer]'"
)


def add_parser(subparsers: Any) -> None:
    """Register ``corevital view``."""
    p = subparsers.add_parser(
        "view",
        help="browse runs in OTLP JSON lines files (Streamlit viewer)",
        description="Start the CoreVital viewer on http://127.0.0.1:PORT for OTLP JSON lines files or folders "
        "(rotated and gzip files included), as written by `corevital run` or a Collector's file exporter. "
        "Stop it with Ctrl+C.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help=f"files or folders to read (default: ./{DEFAULT_OUT})")
    p.add_argument("--port", type=port, default=DEFAULT_PORT, help="port on 127.0.0.1 (default: %(default)s)")
    p.set_defaults(handler=view)


def streamlit_command(app: str, port: int) -> list[str]:
    """The ``streamlit run`` command line: loopback only, no browser, no usage statistics, no file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        app,
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def view(args: argparse.Namespace) -> int:
    """Start the Streamlit viewer on the given files and wait for it; the exit code."""
    if importlib.util.find_spec("streamlit") is None:
        raise CoreVitalError(MISSING_STREAMLIT)
    paths = args.paths or [DEFAULT_OUT]
    for path in paths:
        if not Path(path).exists():
            hint = " (run `corevital run` first, or name the files to read)" if not args.paths else ""
            raise CoreVitalError(f"{path}: no such file or folder{hint}")
    from ..viewer import APP_PATH

    env = {**os.environ, ENV_PATHS: os.pathsep.join(str(Path(p).resolve()) for p in paths)}
    command = streamlit_command(APP_PATH, args.port)
    sys.stdout.write(f"corevital view: http://127.0.0.1:{args.port} (Ctrl+C stops it)\n")
    sys.stdout.flush()
    # Replace this process, so the PID the caller holds is the server's and a signal to it stops the server.
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execve does not return
