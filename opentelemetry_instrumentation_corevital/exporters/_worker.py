"""One exporter's exports on a thread of its own, behind a bounded queue.

The caller (``span.end()``, a log record, the metric reader) only queues the
batch: a write that blocks (a FIFO, a hung network filesystem, a black-holed
endpoint) holds our thread, never the application's. When the queue is full
the new batch is dropped and counted; :meth:`ExportWorker.close` waits for the
queue to drain at most ``timeout`` seconds, then drops and counts the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .losses import QUEUE_FULL, SHUTDOWN, Losses

_logger = logging.getLogger(__name__)

#: Items (spans, log records, metric collections) waiting per exporter, as the SDK's batch processors allow.
MAX_QUEUED_ITEMS = 2048


class ExportWorker:
    """Runs ``export`` on a daemon thread for each queued batch, then ``stop`` once when closed."""

    def __init__(
        self,
        name: str,
        signal: str,
        export: Callable[[Any], object],
        stop: Callable[[], object],
        losses: Losses,
        max_items: int = MAX_QUEUED_ITEMS,
    ) -> None:
        self.name, self.signal, self.losses, self.max_items = name, signal, losses, max_items
        self._export, self._stop = export, stop
        self.deadline: float | None = None  # set by a shutdown that shares one deadline among many workers
        self._batches: deque[tuple[Any, int]] = deque()
        self._queued = 0  # items in _batches
        self._busy = 0  # items in the export running now
        self._closed = False
        self.lost_at_shutdown = 0
        self._warned = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"corevital-export-{name}-{signal}", daemon=True)
        self._thread.start()

    def submit(self, batch: Any, count: int) -> bool:
        """Queue ``batch`` (``count`` items); never blocks. False when it was dropped (full or closed)."""
        with self._cond:
            if self._closed:
                reason = SHUTDOWN
            elif self._queued > 0 and self._queued + count > self.max_items:
                reason = QUEUE_FULL
            else:
                self._batches.append((batch, count))
                self._queued += count
                self._cond.notify_all()
                return True
            warn = reason == QUEUE_FULL and not self._warned
            self._warned = self._warned or warn
        self.losses.drop(self.name, self.signal, reason, count)
        if warn:
            _logger.warning(
                "CoreVital's %s exporter is %d %s behind; dropping new ones until it catches up "
                "(telemetry lost, output unaffected)",
                self.name,
                self.max_items,
                self.signal,
            )
        return False

    def _run(self) -> None:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with suppress_instrumentation():  # our own HTTP calls are not the application's telemetry
            while True:
                with self._cond:
                    while not self._batches and not self._closed:
                        self._cond.wait()
                    if not self._batches:
                        break
                    batch, count = self._batches.popleft()
                    self._queued -= count
                    self._busy = count
                try:
                    self._export(batch)
                except Exception:  # pragma: no cover - the guard's export never raises
                    pass
                finally:
                    with self._cond:
                        self._busy = 0
                        self._cond.notify_all()
            try:
                self._stop()
            except Exception:  # pragma: no cover - the guard's stop never raises
                pass

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was exported, at most ``timeout`` seconds; False if it was not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._batches or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float) -> int:
        """Stop taking batches, deliver what is queued for at most ``timeout`` seconds (or until ``deadline``),
        drop and count the rest.

        Returns the number of items dropped; the exporter is stopped on our thread once it is free.
        """
        end = self.deadline if self.deadline is not None else time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(0.0, end - time.monotonic()))
        with self._cond:
            lost = self._queued + self._busy  # an export still running past the deadline is given up too
            self._batches.clear()
            self._queued = self._busy = 0
            self._cond.notify_all()
        self.losses.drop(self.name, self.signal, SHUTDOWN, lost)
        self.lost_at_shutdown += lost
        return lost

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: what fails later was already counted (and warned of) at shutdown."""
        return self._closed

    @property
    def stopped(self) -> bool:
        """True once the thread finished: the last export returned and the exporter was stopped."""
        return not self._thread.is_alive()
