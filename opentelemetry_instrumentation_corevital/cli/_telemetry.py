"""Telemetry set-up for the CLI: which exporters, with which settings.

The CLI builds its exporters with the same code as ``instrument(exporters=...)``
(``exporters/pipeline.py``), so the CLI and applications route data the same
way; it keeps the pipeline itself because ``--perf strict`` instruments more
than once. People without an OpenTelemetry
pipeline still get files they can open, replay into a Collector, or view.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .._config import EXPORTER_NAMES

EXPORTERS = EXPORTER_NAMES
DEFAULT_EXPORTER = "otlp-json"
#: Seconds ``--exporter prometheus`` keeps serving after the generation unless --serve-seconds says otherwise.
DEFAULT_SERVE_SECONDS = 30.0


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and prove we can write in it, or raise one clear error naming --out."""
    from ..exporters.pipeline import ensure_writable as check

    return check(folder, "--out ")


def add_arguments(p: argparse.ArgumentParser, port_type: Any, size_type: Any, seconds_type: Any) -> None:
    p.add_argument("--exporter", action="append", choices=EXPORTERS, default=None, metavar="NAME",
                   help="where telemetry goes; repeat for several: " + ", ".join(EXPORTERS)
                   + f" (default: {DEFAULT_EXPORTER})")
    p.add_argument("--prometheus-host", default=None,
                   help="address of the /metrics endpoint (default: OTEL_EXPORTER_PROMETHEUS_HOST or 127.0.0.1)")
    p.add_argument("--prometheus-port", type=port_type, default=None,
                   help="port of the /metrics endpoint (default: OTEL_EXPORTER_PROMETHEUS_PORT or 9464)")
    p.add_argument("--serve-seconds", type=seconds_type, default=None,
                   help=f"with --exporter prometheus, keep serving this long after the generation so it can be "
                   f"scraped (default: {DEFAULT_SERVE_SECONDS:g}; Ctrl-C stops early)")
    p.add_argument("--sqlite", default=None, metavar="PATH",
                   help="SQLite history file for --exporter sqlite (default: OUT/corevital.sqlite3)")
    p.add_argument("--wandb-project", default=None, help="W&B project for --exporter wandb (default: corevital)")
    p.add_argument("--dogstatsd-host", default=None, help="DogStatsD host (default: DD_AGENT_HOST or 127.0.0.1)")
    p.add_argument("--dogstatsd-port", type=port_type, default=None, help="DogStatsD port (default: DD_DOGSTATSD_PORT or 8125)")
    p.add_argument("--rotate-bytes", type=size_type, default=None,
                   help="rotate each OTLP JSON lines file before it grows past this many bytes (0: never; default 100 MiB)")
    p.add_argument("--rotate-backups", type=size_type, default=None, help="rotated files to keep per signal (default: 5)")


def instrument_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Keyword arguments of ``instrument()`` for the chosen exporters."""
    exporters = tuple(dict.fromkeys(args.exporter or [DEFAULT_EXPORTER]))
    if "otlp-json" in exporters:
        ensure_writable(out)
    # One metric export when the CLI finishes, and a service name that says where the data came from.
    os.environ.setdefault("OTEL_SERVICE_NAME", "corevital-cli")
    os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    kwargs: dict[str, Any] = {
        "exporters": exporters,
        "otlp_json_dir": out,
        "prometheus_host": args.prometheus_host,
        "prometheus_port": args.prometheus_port,
        "sqlite_path": Path(args.sqlite) if args.sqlite else out / "corevital.sqlite3",
        "wandb_project": args.wandb_project,
        "dogstatsd_host": args.dogstatsd_host,
        "dogstatsd_port": args.dogstatsd_port,
        "otlp_json_max_bytes": args.rotate_bytes,
        "otlp_json_backups": args.rotate_backups,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def build_pipeline(kwargs: dict[str, Any]) -> Any:
    """The exporters ``instrument_kwargs`` describes, built and started."""
    from ..exporters.pipeline import build_pipeline as build
    from ..exporters.settings import resolve_settings

    return build(kwargs["exporters"], resolve_settings(kwargs))


def serve_seconds(args: argparse.Namespace) -> float:
    if "prometheus" not in (args.exporter or ()):
        return 0.0
    return DEFAULT_SERVE_SECONDS if args.serve_seconds is None else args.serve_seconds
