"""``corevital run --perf strict``: plain against instrumented ``generate`` in this process."""

from __future__ import annotations

import statistics
import time
from typing import Any

from ..instrument import CoreVitalInstrumentor
from ..report import Report


def measure_overhead(
    model: Any, inputs: dict, generate_kwargs: dict, runs: int, seed: int | None, options: dict[str, Any]
) -> dict[str, Any]:
    """Median wall time of plain and instrumented generate, alternating, after one warm-up of each.

    The instrumented runs export to throwaway in-memory providers, so they pay
    for span, report and metrics work but write nothing to --out.
    """
    import torch
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(InMemoryLogRecordExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    reports: list[Report] = []
    instrumentor = CoreVitalInstrumentor()

    def timed(instrumented: bool) -> float:
        if seed is not None:
            torch.manual_seed(seed)
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        if instrumented:
            instrumentor.instrument(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                logger_provider=logger_provider,
                on_report=reports.append,
                report_log=True,
                **options,
            )
        try:
            start = time.perf_counter()
            model.generate(**inputs, **generate_kwargs)
            return time.perf_counter() - start
        finally:
            if instrumented:
                instrumentor.uninstrument()

    try:
        timed(False)
        timed(True)
        plain, instrumented = [], []
        for _ in range(runs):
            plain.append(timed(False))
            instrumented.append(timed(True))
    finally:
        for provider in (meter_provider, tracer_provider, logger_provider):
            provider.shutdown()
    plain_s, instrumented_s = statistics.median(plain), statistics.median(instrumented)
    return {
        "method": "strict",
        "runs": runs,
        "plain_s": plain_s,
        "instrumented_s": instrumented_s,
        "ratio": instrumented_s / plain_s,
    }
