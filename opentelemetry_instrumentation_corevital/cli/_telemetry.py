"""Telemetry set-up for ``corevital run``: ``configure()`` from the exporter flags.

The CLI builds its exporters with ``configure()``, like applications do, and
keeps the configuration for the whole command because ``--perf strict``
instruments more than once. By default it writes OTLP JSON lines files to
``--out``, which people without an OpenTelemetry pipeline can open, replay
into a Collector, or view.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from .._config import ExporterSettings, given, resolve
from ..configuration import Configuration, configure
from ..exporters.pipeline import ensure_writable
from ._flags import add_flags, parsed

DEFAULT_EXPORTER = "otlp-json"
DEFAULT_OUT = str(ExporterSettings().out)  # where `run` writes and `view` reads
#: Seconds ``--exporter prometheus`` keeps serving after the generation unless --serve-seconds says otherwise.
DEFAULT_SERVE_SECONDS = 30.0


def add_arguments(p: argparse.ArgumentParser, seconds_type: Callable[[str], float]) -> None:
    """The exporter flags (from the option table) and ``--serve-seconds``."""
    add_flags(p, ExporterSettings, defaults={"exporters": DEFAULT_EXPORTER})
    p.add_argument(
        "--serve-seconds",
        type=seconds_type,
        default=None,
        help=f"with --exporter prometheus, keep serving this long after the generation so it can be "
        f"scraped (default: {DEFAULT_SERVE_SECONDS:g}; Ctrl-C stops early)",
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """``configure()`` keywords from the flags; checks now that ``--out`` is writable when files go there."""
    values = parsed(args, ExporterSettings)
    if not given(ExporterSettings, "exporters", values):  # neither a flag nor the environment named any
        values["exporters"] = (DEFAULT_EXPORTER,)
    resolved = resolve(ExporterSettings, values)
    if DEFAULT_EXPORTER in resolved.exporters:
        ensure_writable(resolved.out, "--out ")
    return values


def configure_from(values: dict[str, Any]) -> Configuration:
    """The exporters ``settings()`` describes, built and started."""
    # One metric export when the CLI finishes, and a service name that says where the data came from.
    os.environ.setdefault("OTEL_SERVICE_NAME", "corevital-cli")
    os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    return configure(**values)


def serve_seconds(args: argparse.Namespace, config: Configuration) -> float:
    """How long to keep the Prometheus endpoint up after the generation (0 without one)."""
    if config.prometheus_url is None:
        return 0.0
    return DEFAULT_SERVE_SECONDS if args.serve_seconds is None else args.serve_seconds
