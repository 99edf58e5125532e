"""What CoreVital's own exporters lost, counted where it happens: the ``corevital.internal.*`` counters.

A backend that is down, a queue that is full or a shutdown deadline costs
telemetry only; these counts say how much, so the loss is never silent.
They are exposed as observable counters on the meter provider
``configure()`` built (when it built one) and readable here in any case.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..names import (
    ERROR_TYPE,
    EXPORTER_ATTRIBUTE,
    INTERNAL_METRIC_UNITS,
    METRIC_INTERNAL_DROPPED,
    METRIC_INTERNAL_ERRORS,
    SIGNAL_ATTRIBUTE,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

#: Why items were dropped (the ``error.type`` of ``corevital.internal.dropped``).
QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"
EXPORT_FAILED = "export_failed"  # the backend refused or never answered the batch


class Losses:
    """Thread-safe counts of dropped items and failed exports, per (exporter, signal[, reason])."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped: Counter[tuple[str, str, str]] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter()

    def drop(self, exporter: str, signal: str, reason: str, count: int = 1) -> None:
        """Count ``count`` items of ``signal`` that ``exporter`` will never deliver."""
        if count > 0:
            with self._lock:
                self._dropped[(exporter, signal, reason)] += count

    def error(self, exporter: str, signal: str) -> None:
        """Count one failed export."""
        with self._lock:
            self._errors[(exporter, signal)] += 1

    def dropped(self, exporter: str | None = None, reason: str | None = None, signal: str | None = None) -> int:
        """Items dropped so far, by one exporter, for one reason, of one signal (each optional), or all."""
        with self._lock:
            return sum(
                n
                for (name, kind, why), n in self._dropped.items()
                if exporter in (None, name) and reason in (None, why) and signal in (None, kind)
            )

    def errors(self, exporter: str | None = None) -> int:
        """Failed exports so far, by one exporter or all."""
        with self._lock:
            return sum(n for (name, _), n in self._errors.items() if exporter in (None, name))

    def observe(self, meter_provider: MeterProvider) -> None:
        """Expose the counts as ``corevital.internal.dropped`` and ``corevital.internal.errors``."""
        from opentelemetry.metrics import Observation

        def dropped(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                items = list(self._dropped.items())
            for (name, signal, why), n in items:
                yield Observation(n, {EXPORTER_ATTRIBUTE: name, SIGNAL_ATTRIBUTE: signal, ERROR_TYPE: why})

        def errors(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                items = list(self._errors.items())
            for (name, signal), n in items:
                yield Observation(n, {EXPORTER_ATTRIBUTE: name, SIGNAL_ATTRIBUTE: signal})

        meter = meter_provider.get_meter("opentelemetry-instrumentation-corevital.internal")
        for metric, callback in ((METRIC_INTERNAL_DROPPED, dropped), (METRIC_INTERNAL_ERRORS, errors)):
            meter.create_observable_counter(metric, [callback], unit=INTERNAL_METRIC_UNITS[metric])
