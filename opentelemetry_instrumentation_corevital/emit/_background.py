"""Finishing generations' telemetry after the caller returned: one daemon thread behind a bounded queue.

With ``background_emit`` on, ``generate()`` queues the capture's one read-back and hands the rest (the wait for
it, building the report, span attributes and events, metrics, step logs, the report log record, ``on_report``,
the span's end) to this thread. The hand-off never blocks: when :data:`MAX_PENDING` generations already wait,
the new one is refused and the caller counts the loss. :func:`drain` waits for what is queued (``uninstrument()``,
``Configuration.flush``/``shutdown``, the instrumentor's ``flush``, process exit), at most its timeout.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..report import pause_often

_logger = logging.getLogger(__name__)

#: Generations waiting for their telemetry; more are refused (telemetry lost, counted by the caller).
MAX_PENDING = 256
#: How long process exit waits for the queued generations.
EXIT_TIMEOUT = 5.0


class BackgroundEmitter:
    """Runs queued jobs (each one generation's telemetry, guarded by its caller) in order, on a daemon thread."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._jobs: deque[Callable[[], object]] = deque()
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], object]) -> bool:
        """Queue ``job``; never blocks. False when it was refused (the queue is full)."""
        with self._cond:
            if len(self._jobs) >= self.max_pending:
                return False
            self._jobs.append(job)
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:  # registered now, after the providers: exit drains before they shut down
                    atexit.register(self.drain, EXIT_TIMEOUT)
                self._thread = threading.Thread(target=self._run, name="corevital-emit", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every queued job ran, at most ``timeout`` seconds; False if some had not."""
        if threading.current_thread() is self._thread:  # a job flushing: it cannot wait for itself
            return False
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._jobs) + self._busy

    def _run(self) -> None:
        pause_often()
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.popleft()
                self._busy = True
            try:
                job()
            except Exception:  # jobs guard their own stages; this only keeps the thread alive
                _logger.debug("CoreVital background emission failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


EMITTER = BackgroundEmitter()


def hand_off(job: Callable[[], object]) -> bool:
    """Queue one generation's telemetry for the emission thread; False when refused (the queue is full)."""
    return EMITTER.submit(job)


def drain(timeout: float = EXIT_TIMEOUT) -> bool:
    """Finish the generations whose telemetry is still queued, at most ``timeout`` seconds; False if not all."""
    return EMITTER.drain(timeout)
