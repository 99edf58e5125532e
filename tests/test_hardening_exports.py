"""Our own exports never hold the application: no export on the caller's thread, bounded queues that drop and
count, a bounded shutdown (OTLP endpoint closed or black-holed, SQLite locked), writes that never follow a planted
symlink. Faults are real: a FIFO, a listening socket that never answers, a held SQLite lock, a blocking exporter."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.configuration import ZeroCodeInstrumentor
from opentelemetry_instrumentation_corevital.exporters._guard import Once, guard
from opentelemetry_instrumentation_corevital.exporters._worker import MAX_QUEUED_ITEMS
from opentelemetry_instrumentation_corevital.exporters.losses import EXPORT_FAILED, QUEUE_FULL, SHUTDOWN, Losses
from opentelemetry_instrumentation_corevital.names import METRIC_INTERNAL_DROPPED, METRIC_INTERNAL_ERRORS

from .conftest import free_port

PROMPT = torch.tensor([[1, 17, 42, 99, 7]])
REPO = Path(__file__).resolve().parents[1]


def generate(model, tokens=5):
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=tokens, do_sample=False)


def generate_within(model, seconds: float, tokens=5):
    """The output of one generate() on a daemon thread, or a failure if it has not returned within ``seconds``."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(generate(model, tokens).tolist()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"generate() did not return within {seconds} s"
    return result[0]


def corevital_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("opentelemetry_instrumentation_corevital")
    ]


def timed(call) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


# -- never on the caller's thread; bounded queues --------------------------------------------------------------


def test_fifo_traces_file_never_blocks_generate(tiny_llama, tmp_path, caplog):
    """traces.jsonl replaced by a FIFO nobody reads: each generate() returns with its output, the other files are
    written, one warning names the refused file, and shutdown is prompt. (It used to block forever in open().)"""
    expected = generate(tiny_llama).tolist()
    os.mkfifo(tmp_path / "traces.jsonl")
    caplog.set_level(logging.WARNING)
    config = configure(exporters="otlp-json", out=tmp_path)
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(**config.instrument_kwargs())
    try:
        outputs = [generate_within(tiny_llama, 10) for _ in range(3)]
        assert config.flush(timeout=10)
        assert timed(instrumentor.uninstrument) < 5
        assert timed(config.shutdown) < 5
    finally:
        os.close(os.open(tmp_path / "traces.jsonl", os.O_RDONLY | os.O_NONBLOCK))  # frees a writer stuck in open()
    assert outputs == [expected] * 3
    assert (tmp_path / "traces.jsonl").is_fifo()
    assert (tmp_path / "metrics.jsonl").stat().st_size > 0
    (warning,) = corevital_warnings(caplog)
    assert "spans to otlp-json (telemetry lost" in warning and "traces.jsonl" in warning
    assert config.losses.errors("otlp-json") == 3  # one refused batch per generation (one span each)
    assert config.losses.dropped("otlp-json", EXPORT_FAILED) == 3


class BlockingSpans(SpanExporter):
    """An exporter whose first export blocks until released: a hung backend, seen through the SDK interface."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.exported = 0

    def export(self, spans):
        self.entered.set()
        self.release.wait()
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


def test_blocked_exporter_drops_and_counts_beyond_the_queue_and_shutdown_is_bounded(caplog):
    caplog.set_level(logging.WARNING)
    losses = Losses()
    inner = BlockingSpans()
    exporter = guard(inner, Once("blocked", losses), "spans", timeout=0.5)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    reader = InMemoryMetricReader()
    losses.observe(MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
    try:
        tracer.start_span("first").end()
        assert inner.entered.wait(5)  # our thread holds the first span; the caller's thread is free
        spent = timed(lambda: [tracer.start_span(f"s{i}").end() for i in range(MAX_QUEUED_ITEMS + 5)])
        assert spent < 5
        assert losses.dropped("blocked", QUEUE_FULL) == 5
        assert timed(provider.shutdown) < 2.5
        assert losses.dropped("blocked", SHUTDOWN) == MAX_QUEUED_ITEMS + 1  # the queue and the span in hand
    finally:
        inner.release.set()
    (warning,) = corevital_warnings(caplog)
    assert warning == (
        f"CoreVital's blocked exporter is {MAX_QUEUED_ITEMS} spans behind; dropping new ones until it catches up "
        "(telemetry lost, output unaffected)"
    )
    points = {
        (metric.name, point.attributes.get("error.type")): point.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    assert points == {
        (METRIC_INTERNAL_DROPPED, QUEUE_FULL): 5,
        (METRIC_INTERNAL_DROPPED, SHUTDOWN): MAX_QUEUED_ITEMS + 1,
    }
    assert METRIC_INTERNAL_ERRORS == "corevital.internal.errors"


# -- bounded shutdown ---------------------------------------------------------------------------------------------


@pytest.fixture
def black_hole():
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def zero_code_otlp(monkeypatch):
    def point(endpoint: str) -> None:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

    return point


@pytest.mark.parametrize("where", ["closed", "black-holed"])
def test_uninstrument_is_bounded_when_the_otlp_endpoint_is_down(where, black_hole, zero_code_otlp, tiny_llama):
    """Default OTLP timeout (10 s): uninstrument() used to take 15-19 s; now at most the 2 s shutdown timeout."""
    expected = generate(tiny_llama).tolist()
    zero_code_otlp(f"http://127.0.0.1:{free_port()}" if where == "closed" else black_hole)
    instrumentor = ZeroCodeInstrumentor()
    instrumentor.instrument()
    config = ZeroCodeInstrumentor._config
    try:
        outputs = [generate_within(tiny_llama, 10) for _ in range(2)]
        time.sleep(0.3)  # the batch processor hands the spans to our exporter thread
    finally:
        spent = timed(instrumentor.uninstrument)
    assert outputs == [expected] * 2
    assert spent < 3.0
    if where == "black-holed":  # the first request still hangs: what it carried is given up and counted
        assert config.losses.dropped("otlp", SHUTDOWN) > 0


EXIT_SCRIPT = """
from opentelemetry_instrumentation_corevital import configure

config = configure(exporters="otlp")
config.tracer_provider.get_tracer("exit").start_span("one span").end()
print("last line", flush=True)
"""


@pytest.mark.parametrize("where", ["closed", "black-holed"])
def test_process_exits_promptly_when_the_otlp_endpoint_is_down(where, black_hole):
    """No shutdown called: at exit the pipeline is stopped within the shutdown timeout (it used to take 17-23 s).

    No model in this process: torch's own teardown takes seconds on a loaded machine and is not ours."""
    endpoint = f"http://127.0.0.1:{free_port()}" if where == "closed" else black_hole
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line == "last line\n":
                break
        last = time.monotonic()
        assert proc.wait(timeout=30) == 0
        spent = time.monotonic() - last
    finally:
        proc.kill()
    assert lines[-1] == "last line\n"
    assert spent < 4.0


def test_locked_sqlite_shutdown_is_bounded_and_the_loss_reported(tiny_llama, tmp_path, caplog):
    """BEGIN EXCLUSIVE held by another connection: shutdown used to wait 90 s and lose every report silently."""
    db = tmp_path / "locked.sqlite3"
    caplog.set_level(logging.WARNING)
    instrumentor = CoreVitalInstrumentor()
    config = configure(exporters="sqlite", sqlite_path=db)
    instrumentor.instrument(**config.instrument_kwargs())
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(2):
            generate_within(tiny_llama, 10)
        instrumentor.uninstrument()
        spent = timed(config.shutdown)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert spent < 3.0
    assert config.losses.dropped("sqlite", SHUTDOWN) == 2
    (warning,) = corevital_warnings(caplog)
    assert warning == (
        "CoreVital stopped its exporters after 2.0 s (shutdown_timeout): 2 reports and 0 telemetry items "
        f"were not delivered (counted in {METRIC_INTERNAL_DROPPED})"
    )


def test_sqlite_locked_for_a_moment_keeps_every_report(tiny_llama, tmp_path, caplog):
    """A lock released within the shutdown timeout: the reports wait for it and are all written, no warning."""
    db = tmp_path / "busy.sqlite3"
    caplog.set_level(logging.WARNING)
    instrumentor = CoreVitalInstrumentor()
    config = configure(exporters="sqlite", sqlite_path=db)
    instrumentor.instrument(**config.instrument_kwargs())
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            generate_within(tiny_llama, 10)
        instrumentor.uninstrument()
        threading.Timer(0.5, lambda: blocker.execute("COMMIT")).start()
        config.shutdown()
    finally:
        blocker.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM generations").fetchone()[0] == 3
    assert config.losses.dropped() == 0
    assert corevital_warnings(caplog) == []


# -- symlinks ---------------------------------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def test_planted_write_test_symlink_is_not_followed(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".corevital-write-test").symlink_to(victim)
    with configure(exporters="otlp-json", out=out):
        pass
    assert victim.read_text() == "precious\n"
    assert (out / ".corevital-write-test").is_symlink()


def test_planted_traces_symlink_is_refused(tiny_llama, tmp_path, victim, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "traces.jsonl").symlink_to(victim)
    expected = generate(tiny_llama).tolist()
    caplog.set_level(logging.WARNING)
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="otlp-json", out=out) as config:
        instrumentor.instrument(**config.instrument_kwargs())
        outputs = [generate(tiny_llama).tolist() for _ in range(2)]
        config.flush()
        instrumentor.uninstrument()
    assert outputs == [expected] * 2
    assert victim.read_text() == "precious\n"
    assert (out / "traces.jsonl").is_symlink()
    assert (out / "metrics.jsonl").stat().st_size > 0  # only the refused file's telemetry is lost
    (warning,) = corevital_warnings(caplog)
    assert "refusing to write through a symlink" in warning and str(out / "traces.jsonl") in warning
    assert config.losses.errors("otlp-json") == 2
    assert config.losses.dropped("otlp-json", EXPORT_FAILED, signal="spans") == 2


def test_rotation_never_writes_through_planted_symlinks(tiny_llama, tmp_path, victim):
    """Symlinks planted at rotated names: rotation renames and prunes the links themselves, never their target."""
    out = tmp_path / "out"
    out.mkdir()
    for stamp in ("2000-01-01T00-00-00.000", "2999-01-01T00-00-00.000"):
        (out / f"traces-{stamp}-000.jsonl").symlink_to(victim)
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="otlp-json", out=out, otlp_json_max_bytes=200, otlp_json_backups=1) as config:
        instrumentor.instrument(**config.instrument_kwargs())
        for _ in range(3):
            generate(tiny_llama)
            config.flush()
        instrumentor.uninstrument()
    assert victim.read_text() == "precious\n"
    assert not any(p.is_symlink() for p in out.glob("traces-2000-*"))  # the oldest link was pruned, not its target
    assert (out / "traces.jsonl").stat().st_size > 0
