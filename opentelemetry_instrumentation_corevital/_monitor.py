"""``CoreVitalMonitor``: the library API for people who want answers in Python, not (only) telemetry.

A monitor watches the generations started inside ``with monitor.watch():`` (or
by ``monitor.generate``) and keeps their reports. It rides on the same
instrumentation as the OpenTelemetry path: if ``CoreVitalInstrumentor`` is
already active, the watched generation is captured once and both get the
report (spans and metrics go wherever they already go); if not, the monitor
activates the instrumentation for the duration of the block, with what
``configure()`` builds from the environment (``OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS``)
and otherwise the global OpenTelemetry providers, which are no-ops when no SDK
is configured.
The monitor's options (capture mode, thresholds, ``stop_on``...) apply to the
generations it watches, whatever the instrumentor was started with.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._config import parse_overrides
from ._errors import ConfigurationError
from .configuration import Configuration, instrument_from_environment
from .instrument import WATCHERS, CoreVitalInstrumentor, score
from .report import Report

_DEFAULT_INTERVENE_ON = ("repetition_loop", "nan_or_inf")
_lock = threading.Lock()
_activations = 0  # monitors currently holding an instrumentation they started
_configuration: Configuration | None = None  # what the first of them configured from the environment


class CoreVitalMonitor:
    """Watch generations and ask about them.

    >>> monitor = CoreVitalMonitor(capture="full", stop_on=("repetition_loop",))
    >>> output = monitor.generate(model, **inputs, max_new_tokens=64)
    >>> monitor.get_risk_score(), monitor.get_health_flags(), monitor.should_intervene()

    Keyword arguments are ``instrument()``'s options (``capture``, ``layers``,
    ``step_stride``, ``profile``, ``thresholds``, ``high_entropy_bits``, ``stop_on``, ``step_callback``,
    ``callback_every``, ``on_risk_threshold``, ...), validated now; plus
    ``intervene_above`` (risk score, default 0.7) and ``intervene_on`` (flags,
    default repetition_loop and nan_or_inf) for :meth:`should_intervene`.
    """

    def __init__(
        self,
        *,
        intervene_above: float = 0.7,
        intervene_on: Sequence[str] = _DEFAULT_INTERVENE_ON,
        keep: int = 100,
        **options: Any,
    ) -> None:
        if not 0.0 <= float(intervene_above) <= 1.0:
            raise ConfigurationError(f"intervene_above={intervene_above!r} must be between 0 and 1.")
        self.overrides = parse_overrides(options)
        self.intervene_above = float(intervene_above)
        self.intervene_on = tuple(intervene_on)
        self.reports: list[Report] = []
        self._keep = keep
        self._lock = threading.Lock()

    # -- watching --------------------------------------------------------------------------------
    @contextmanager
    def watch(self) -> Iterator[CoreVitalMonitor]:
        """Capture every generation started in this block (in this thread or context)."""
        started = _ensure_instrumented()
        token = WATCHERS.set((*WATCHERS.get(), self))
        try:
            yield self
        finally:
            WATCHERS.reset(token)
            if started:
                _release_instrumentation()

    def generate(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """``model.generate(*args, **kwargs)`` under :meth:`watch`; returns exactly what it returns."""
        with self.watch():
            return model.generate(*args, **kwargs)

    def score(self, model: Any, prompt_ids: Any, continuation_ids: Any, attention_mask: Any = None) -> Report | None:
        """Teacher-force ``continuation_ids`` after ``prompt_ids`` in one forward and return its report.

        The report has one step per continuation token with the same signals a
        generation would have had (span operation ``score``); it is also kept as
        :attr:`report`, so the other answers apply to it. None only when the
        report could not be built (telemetry is lost, never the forward's result).
        """
        with self.watch():
            return score(model, prompt_ids, continuation_ids, attention_mask)

    def receive(self, report: Report) -> None:
        """Called by the instrumentation with each watched generation's report."""
        with self._lock:
            self.reports.append(report)
            del self.reports[: max(0, len(self.reports) - self._keep)]

    # -- answers about the last watched generation ------------------------------------------------
    @property
    def report(self) -> Report | None:
        """The last watched generation's :class:`Report` (None before the first)."""
        return self.reports[-1] if self.reports else None

    def _last(self) -> Report:
        report = self.report
        if report is None:
            raise LookupError("no generation has been watched yet: call monitor.generate(...) or use monitor.watch()")
        return report

    def get_risk_score(self) -> float | None:
        """The riskiest sequence's risk score (0..1), None when signals were not captured."""
        return self._last().summary.risk_score

    def get_health_flags(self) -> dict[str, bool]:
        """Every health flag and whether it fired on any sequence."""
        report = self._last()
        names = (
            [f.name for f in type(report.sequences[0].flags).__dataclass_fields__.values() if f.type in ("bool", bool)]
            if report.sequences
            else []
        )
        return {name: any(getattr(s.flags, name) for s in report.sequences) for name in names}

    def get_summary(self) -> dict[str, Any]:
        """A compact dictionary: risk, level, flags, the aggregates, token counts, timings, interventions."""
        report = self._last()
        summary = report.summary
        return {
            "model": report.model.name,
            "risk_score": summary.risk_score,
            "risk_level": summary.risk_level,
            "flags": list(summary.flags),
            "aggregates": dict(vars(summary.aggregates)),
            "input_tokens": report.usage.input_tokens,
            "output_tokens": report.usage.output_tokens,
            "finish_reasons": [s.finish_reason for s in report.sequences],
            "interventions": [vars(s.intervention) if s.intervention else None for s in report.sequences],
            "duration_s": report.timings.duration_s,
            "time_to_first_token_s": report.timings.time_to_first_token_s,
        }

    def should_intervene(self) -> bool:
        """True when the last generation's risk reached ``intervene_above`` or an ``intervene_on`` flag fired."""
        report = self._last()
        score = report.summary.risk_score
        if score is not None and score >= self.intervene_above:
            return True
        return any(flag in report.summary.flags for flag in self.intervene_on)


def _ensure_instrumented() -> bool:
    """Activate the instrumentation if nobody has; True when this call did (and must release it)."""
    global _activations, _configuration

    with _lock:
        instrumentor = CoreVitalInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry and not _activations:
            return False  # the application's own instrumentation: leave it alone
        if not instrumentor.is_instrumented_by_opentelemetry:
            _configuration = instrument_from_environment()
        _activations += 1
        return True


def _release_instrumentation() -> None:
    global _activations, _configuration

    with _lock:
        _activations -= 1
        if _activations == 0:
            if CoreVitalInstrumentor().is_instrumented_by_opentelemetry:
                CoreVitalInstrumentor().uninstrument()
            if _configuration is not None:
                _configuration.shutdown()
                _configuration = None
