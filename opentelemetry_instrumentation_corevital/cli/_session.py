"""What every ``corevital run`` backend shares: the exporters, the instrumentation, and printing the report.

The CLI keeps its configuration for the whole command (``--perf strict``
re-instruments, and the Prometheus endpoint, W&B run and files must outlive
that); leaving :func:`instrumented` uninstruments, then flushes and stops
every exporter.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._errors import CoreVitalError
from ..configuration import Configuration
from ..report import Report
from . import _telemetry
from ._render import render

if TYPE_CHECKING:
    from ..instrument import CoreVitalInstrumentor


class Session:
    """One instrumented command: the instrumentor, the exporters it feeds and the reports it collected."""

    def __init__(self, instrumentor: CoreVitalInstrumentor, config: Configuration, options: dict[str, Any]) -> None:
        self.instrumentor = instrumentor
        self.config = config
        self.options = options
        self.reports: list[Report] = []
        self.files = [str(f) for f in config.files]

    def instrument(self) -> None:
        """(Re-)instrument with the command's exporters and options; reports are kept for printing."""
        if self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()
        self.instrumentor.instrument(
            report_log=True, **self.config.instrument_kwargs(on_report=self.reports.append), **self.options
        )

    def show(self, args: argparse.Namespace, text: str | None, served_by: str | None = None) -> None:
        """Print the last report (text view or ``--json``), then keep a Prometheus endpoint up if there is one."""
        if not self.reports:
            raise CoreVitalError("the generation finished but produced no report; rerun with --capture summary and -v")
        report = self.reports[-1]
        if args.json:
            sys.stdout.write(report.to_json(indent=2) + "\n")
        else:
            sys.stdout.write(render(report, text, self.files, served_by=served_by) + "\n")
        sys.stdout.flush()
        _serve(self.config.prometheus_url, _telemetry.serve_seconds(args, self.config))


@contextmanager
def instrumented(settings: dict[str, Any], options: dict[str, Any]) -> Iterator[Session]:
    """The exporters ``settings`` describes and the instrumentation on, for the whole command."""
    from ..instrument import CoreVitalInstrumentor  # torch: imported when a command runs, not for --help

    instrumentor = CoreVitalInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    with _telemetry.configure_from(settings) as config:
        session = Session(instrumentor, config, options)
        session.instrument()
        try:
            yield session
        finally:
            instrumentor.uninstrument()  # then leaving the block flushes and stops every exporter


def _serve(url: str | None, seconds: float) -> None:
    """Keep the Prometheus endpoint up so that a scraper sees this run's metrics."""
    if url is None or seconds <= 0:
        return
    sys.stderr.write(f"serving metrics on {url} for {seconds:g} s (Ctrl-C stops)\n")
    sys.stderr.flush()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
