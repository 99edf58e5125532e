"""Backends that are down or die mid-run: the generation's output is unchanged, no exception reaches the
caller, CoreVital logs one warning per exporter, and what waits in memory stays bounded."""

from __future__ import annotations

import logging
import sqlite3

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.testing import OTLPSink

from ._services import rotel_collector, stop, wait_until
from .conftest import free_port

PROMPT = torch.tensor([[1, 17, 42, 99, 7]])


def generate(model, tokens=6):
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=tokens, do_sample=False)


def corevital_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("opentelemetry_instrumentation_corevital")
    ]


def otlp_errors(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("opentelemetry.exporter.otlp")
    ]


@pytest.fixture
def otlp_to(monkeypatch):
    def point(endpoint: str) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")

    return point


@pytest.mark.parametrize("exporter", ["otlp", "datadog"])
def test_closed_port(exporter, tiny_llama, otlp_to, caplog):
    expected = [generate(tiny_llama, n).tolist() for n in (6, 4, 5)]
    otlp_to(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    caplog.set_level(logging.WARNING)
    instrumentor = CoreVitalInstrumentor()
    reports: list = []
    config = configure(exporters=exporter)
    instrumentor.instrument(report_log=True, step_logs=True, **config.instrument_kwargs(on_report=reports.append))
    try:
        outputs = []
        for n in (6, 4, 5):
            outputs.append(generate(tiny_llama, n).tolist())
            config.flush()  # one failed export per signal per generation
    finally:
        instrumentor.uninstrument()
        config.shutdown()
    assert outputs == expected
    assert len(reports) == 3  # the reports are still built and handed over
    (warning,) = corevital_warnings(caplog)
    assert warning.startswith("CoreVital could not export ") and f" to {exporter} (telemetry lost" in warning
    assert otlp_errors(caplog) == []  # the SDK exporters' per-export warnings are folded into ours


@pytest.mark.slow
def test_collector_killed_mid_run(tiny_llama, otlp_to, caplog, tmp_path):
    expected = [generate(tiny_llama, n).tolist() for n in (6, 4, 5, 3)]
    caplog.set_level(logging.WARNING)
    with OTLPSink() as sink:
        grpc, http = free_port(), free_port()
        forward = [
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            sink.endpoint,
            "--otlp-exporter-protocol",
            "http",
            "--otlp-exporter-retry-max-elapsed-time",
            "2s",
        ]
        otlp_to(f"http://127.0.0.1:{http}")
        instrumentor = CoreVitalInstrumentor()
        config = configure(exporters="otlp")
        instrumentor.instrument(**config.instrument_kwargs())
        outputs = []
        try:
            with rotel_collector(grpc, http, *forward, log_path=str(tmp_path / "rotel.log")) as rotel:
                outputs.append(generate(tiny_llama, 6).tolist())
                config.flush()
                wait_until(lambda: sink.spans(), timeout=15, what="the first span through rotel")
                assert stop(rotel) == 0  # the collector dies mid-run
            for n in (4, 5, 3):
                outputs.append(generate(tiny_llama, n).tolist())
                config.flush()
        finally:
            instrumentor.uninstrument()
            config.shutdown()
    assert outputs == expected
    assert len(sink.spans()) == 1
    (warning,) = corevital_warnings(caplog)
    assert "to otlp (telemetry lost, output unaffected" in warning
    assert otlp_errors(caplog) == []


def test_stuck_report_exporter_keeps_memory_bounded(tiny_llama, tmp_path, caplog):
    """A SQLite store locked by someone else blocks the exporter: reports beyond the queue are dropped, the
    generations go on unchanged, one warning says so, and the queued ones land once the lock is released."""
    db = tmp_path / "locked.sqlite3"
    expected = generate(tiny_llama, 4).tolist()
    caplog.set_level(logging.WARNING)
    instrumentor = CoreVitalInstrumentor()
    config = configure(exporters="sqlite", sqlite_path=db, export_queue_size=3)
    instrumentor.instrument(**config.instrument_kwargs())
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the exporter now waits in its busy handler
    try:
        dispatcher = config.dispatcher
        outputs = [generate(tiny_llama, 4).tolist() for _ in range(12)]
        assert dispatcher.queued() <= 3
        dropped = dispatcher.dropped
        assert dropped >= 12 - 1 - 3  # at most one in the exporter's hands and three waiting
        blocker.execute("COMMIT")
        assert dispatcher.flush(timeout=60)
    finally:
        blocker.close()
        instrumentor.uninstrument()
        config.shutdown()
    assert outputs == [expected] * 12
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM generations").fetchone()[0]
    assert rows == 12 - dropped
    (warning,) = corevital_warnings(caplog)
    assert warning == "CoreVital report exporters are 3 reports behind; dropping reports until they catch up"
