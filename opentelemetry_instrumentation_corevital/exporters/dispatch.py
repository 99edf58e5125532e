"""Hands finished reports to report exporters (SQLite, W&B, DogStatsD) on a thread of their own.

``generate()`` only puts the report on a bounded queue and returns: a slow or
dead backend costs the application nothing but the reports it drops. When the
queue is full the newest report is dropped and one warning says so; an
exporter that raises loses that report, logs one warning per exporter, and
keeps receiving the next ones (a backend that comes back is used again).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..report import Report

_logger = logging.getLogger(__name__)


class ReportExporter(Protocol):
    """Receives every finished report; ``name`` appears in warnings."""

    name: str

    def export(self, report: Report) -> None:
        """Deliver one finished report (may raise: the dispatcher warns once and goes on)."""

    def shutdown(self) -> None:
        """Release the backend (connection, socket, run)."""


_STOP = object()


class ReportDispatcher:
    """Runs the report exporters on one background thread behind a bounded queue."""

    def __init__(self, exporters: Sequence[ReportExporter], max_queue: int = 1000) -> None:
        self.exporters = list(exporters)
        self.dropped = 0
        self.failures: dict[str, int] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._warned: set[str] = set()
        self._pending = 0
        self._idle = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corevital-report-export", daemon=True)
        self._thread.start()

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _logger.warning(message, *args)

    def submit(self, report: Report) -> None:
        """Queue a report for every exporter; never blocks, never raises."""
        if self._closed:
            return
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(report)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            self.dropped += 1
            self._warn_once(
                "full",
                "CoreVital report exporters are %d reports behind; dropping reports until they catch up",
                self._queue.maxsize,
            )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            for exporter in self.exporters:
                try:
                    exporter.export(item)
                except Exception as exc:  # a backend's failure is never the application's
                    self.failures[exporter.name] = self.failures.get(exporter.name, 0) + 1
                    self._warn_once(
                        exporter.name,
                        "CoreVital could not export a report to %s (telemetry lost, output unaffected; "
                        "further failures are not logged): %r",
                        exporter.name,
                        exc,
                    )
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def queued(self) -> int:
        """Reports waiting for the exporter thread now."""
        return self._queue.qsize()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted report went through every exporter; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout``), then shut every exporter down."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=5.0)
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception as exc:
                self._warn_once(exporter.name + ".shutdown", "CoreVital could not close %s: %r", exporter.name, exc)
