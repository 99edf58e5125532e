"""Hands finished reports to report exporters (SQLite, W&B, DogStatsD) on a thread of their own.

``generate()`` only puts the report on a bounded queue and returns: a slow or
dead backend costs the application nothing but the reports it drops. When the
queue is full the newest report is dropped and one warning says so; an
exporter that raises loses that report, logs one warning per exporter, and
keeps receiving the next ones (a backend that comes back is used again).
Shutdown is bounded: what is not delivered by the deadline is dropped and
counted (:mod:`.losses`), and the exporters are stopped on the dispatcher's
thread, so one stuck in its backend (a locked SQLite file) holds nobody.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..report import Report
from .losses import QUEUE_FULL, SHUTDOWN, Losses

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

    def __init__(
        self, exporters: Sequence[ReportExporter], max_queue: int = 1000, losses: Losses | None = None
    ) -> None:
        self.exporters = list(exporters)
        self.losses = losses if losses is not None else Losses()
        self.dropped = 0
        self.failures: dict[str, int] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._warned: set[str] = set()
        self._pending = 0
        self._idle = threading.Condition()
        self._closed = False
        self._abandoned = False
        self.lost_at_shutdown = 0
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
            self._lost(QUEUE_FULL, 1)
            self._warn_once(
                "full",
                "CoreVital report exporters are %d reports behind; dropping reports until they catch up",
                self._queue.maxsize,
            )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._stop_exporters()
                return
            for exporter in self.exporters:
                try:
                    exporter.export(item)
                except Exception as exc:  # a backend's failure is never the application's
                    if self._abandoned:
                        continue  # given up at shutdown: already counted as dropped
                    self.failures[exporter.name] = self.failures.get(exporter.name, 0) + 1
                    self.losses.error(exporter.name, "reports")
                    self._warn_once(
                        exporter.name,
                        "CoreVital could not export a report to %s (telemetry lost, output unaffected; "
                        "further failures are not logged): %r",
                        exporter.name,
                        exc,
                    )
            with self._idle:
                self._pending = max(0, self._pending - 1)
                self._idle.notify_all()

    def _lost(self, reason: str, count: int) -> None:
        for exporter in self.exporters:
            self.losses.drop(exporter.name, "reports", reason, count)

    def _stop_exporters(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception as exc:
                self._warn_once(exporter.name + ".shutdown", "CoreVital could not close %s: %r", exporter.name, exc)

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

    def abandon(self) -> int:
        """Give up what is still waiting or in an exporter's hands: drop and count it (once); how many."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with self._idle:
            lost = self._pending
            self._pending = 0
            self._abandoned = self._abandoned or lost > 0
            self._idle.notify_all()
        self._lost(SHUTDOWN, lost)
        self.lost_at_shutdown += lost
        return lost

    def shutdown(self, timeout: float = 2.0) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, give up the rest, then stop every exporter on
        our thread (one stuck in its backend holds nobody)."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        self._closed = True
        self.flush(timeout)
        self.abandon()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:  # pragma: no cover - emptied above, and submit() refuses once closed
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
