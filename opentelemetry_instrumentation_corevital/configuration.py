"""``configure()``: build exporters and providers, separately from instrumenting.

The instrumentor takes providers and capture options only. ``configure()``
builds what ``exporters=`` names (see :mod:`.exporters.pipeline`) and hands
back a :class:`Configuration` to pass on::

    with configure(exporters="otlp-json,sqlite", out="corevital-data") as config:
        CoreVitalInstrumentor().instrument(capture="full", **config.instrument_kwargs())
        model.generate(...)
        CoreVitalInstrumentor().uninstrument()

Zero-code (``opentelemetry-instrument``) loads :class:`ZeroCodeInstrumentor`,
which does the same from the ``OTEL_INSTRUMENTATION_COREVITAL_*`` environment.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import ExporterSettings, check_keys, keywords, resolve, resolve_one
from ._errors import ConfigurationError
from .exporters.losses import Losses
from .exporters.pipeline import build, flush, stop
from .instrument import CoreVitalInstrumentor
from .package import _instruments
from .report import Report

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import TracerProvider

    from .exporters.dispatch import ReportDispatcher
    from .exporters.pipeline import ExportWorker
    from .exporters.prometheus import PrometheusEndpoint

#: What ``on_report`` receives: each finished report.
ReportCallback = Callable[[Report], None]

_logger = logging.getLogger(__name__)

__all__ = ["Configuration", "ZeroCodeInstrumentor", "configure", "instrument_from_environment"]


class Configuration:
    """What :func:`configure` built: providers for ``instrument()``, a report sink, files; ``shutdown()`` stops all.

    A provider is None where no exporter needed one (``instrument()`` then uses
    the global one); ``on_report`` is None unless a report exporter (sqlite,
    wandb, dogstatsd) was named.
    """

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.logger_provider: LoggerProvider | None = None
        self.prometheus: PrometheusEndpoint | None = None
        self.dispatcher: ReportDispatcher | None = None
        self.files: list[Path] = []  # files the exporters write
        self.providers: list[SdkMeterProvider | SdkTracerProvider | SdkLoggerProvider] = []  # built here, metrics first
        self.workers: list[ExportWorker] = []  # the threads our SDK exporters write on
        self.losses = Losses()  # what the exporters dropped or failed to send: corevital.internal.*
        self._closed = False

    @property
    def exporters(self) -> tuple[str, ...]:
        """The exporters built, in the order given."""
        return self.settings.exporters

    @property
    def out(self) -> Path:
        """The folder of CoreVital's files."""
        return self.settings.out

    @property
    def prometheus_url(self) -> str | None:
        """Where Prometheus scrapes (``exporters="prometheus"``), else None."""
        return self.prometheus.url if self.prometheus is not None else None

    @property
    def on_report(self) -> ReportCallback | None:
        """Queues a finished report for the report exporters (never blocks, never raises), or None."""
        return self.dispatcher.submit if self.dispatcher is not None else None

    def instrument_kwargs(self, on_report: ReportCallback | None = None) -> dict[str, Any]:
        """Keyword arguments for ``instrument()``: what was built, and ``on_report`` called before the sinks."""
        kwargs = {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
            "on_report": _chain(on_report, self.on_report),
        }
        return {key: value for key, value in kwargs.items() if value is not None}

    def flush(self, timeout: float = 30.0) -> bool:
        """Export what is buffered now (spans, metrics, logs, queued reports); False if ``timeout`` s ran out."""
        return flush(self, timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is queued, then stop everything built here, within ``timeout`` seconds; idempotent.

        ``timeout`` defaults to the ``shutdown_timeout`` option; what is not delivered by then is dropped, counted
        in ``corevital.internal.dropped`` and reported in one warning. Also runs at interpreter exit.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        stop(self, self.settings.shutdown_timeout if timeout is None else timeout)

    def __enter__(self) -> Configuration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def configure(**kwargs: Any) -> Configuration:
    """Build the exporters ``exporters=`` names, for ``instrument(**configure(...).instrument_kwargs())``.

    Keywords are the exporter settings of docs/options.md (each also read from
    its environment variable); an unknown one, or a bad value, raises
    ``ConfigurationError`` before anything starts.
    """
    check_keys(kwargs, keywords(ExporterSettings))
    named = resolve_one(ExporterSettings, "exporters", kwargs)
    # With nothing to build, other tools' variables (DD_AGENT_HOST...) are none of our business.
    config = Configuration(resolve(ExporterSettings, kwargs, None if named else {}))
    build(config)
    if config.exporters:
        atexit.register(config.shutdown)  # bounded, unlike the SDK providers' own exit handlers
    return config


def instrument_from_environment(**instrument_kwargs: Any) -> Configuration:
    """``configure()`` from the environment, then ``instrument()`` with what it built (zero-code, the monitor)."""
    config = configure()
    try:
        CoreVitalInstrumentor().instrument(**instrument_kwargs, **config.instrument_kwargs())
    except BaseException:
        config.shutdown()
        raise
    return config


class ZeroCodeInstrumentor:
    """What ``opentelemetry-instrument`` loads: exporters from ``OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS``, then
    the plain :class:`CoreVitalInstrumentor` with them (which stays the one instrumentor of the process)."""

    _config: Configuration | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The same requirements as the instrumentor's."""
        return _instruments

    def instrument(self, **kwargs: Any) -> None:
        """Configure from the environment and instrument; the exporters stop at exit or ``uninstrument()``.

        Never raises: ``opentelemetry-instrument`` stops loading every instrumentor after one that raised, so a
        bad CoreVital setting is logged (as a ``ConfigurationError``) and CoreVital alone stays off.
        """
        if CoreVitalInstrumentor().is_instrumented_by_opentelemetry:
            return
        try:
            config = instrument_from_environment(**kwargs)
        except ConfigurationError as exc:
            _logger.error("CoreVital instrumentation is off: ConfigurationError: %s", exc)
            return
        except Exception:  # not a setting of the user's: ours, with its traceback
            _logger.exception("CoreVital instrumentation is off: it failed to start")
            return
        if config.exporters:
            ZeroCodeInstrumentor._config = config  # configure() registered its shutdown at exit

    def uninstrument(self, **kwargs: Any) -> None:
        """Restore the wrapped functions and stop what ``instrument()`` configured."""
        CoreVitalInstrumentor().uninstrument(**kwargs)
        config, ZeroCodeInstrumentor._config = ZeroCodeInstrumentor._config, None
        if config is not None:
            config.shutdown()


def _chain(first: ReportCallback | None, second: ReportCallback | None) -> ReportCallback | None:
    """Both callbacks in order (``second`` even when ``first`` raised), or the one given."""
    if first is None or second is None:
        return first or second

    def both(report: Report) -> None:
        try:
            first(report)
        finally:
            second(report)

    return both
