"""``background_emit``: generate() returns after the capture's read-back; the report, its telemetry and the span's
end follow on the emission thread, and nothing is lost at a flush, at uninstrument() or at process exit.

Slowness comes in through a real SDK extension point: a SpanProcessor whose ``on_end`` blocks until the test
releases it (or 15 s pass, so a failing run still ends).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from opentelemetry.sdk.trace import SpanProcessor

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, CoreVitalMonitor, names, testing
from opentelemetry_instrumentation_corevital.emit import _background

PROMPT = torch.tensor([[5, 9, 13, 17, 21, 25]])


@pytest.fixture(scope="module")
def model():
    return testing.tiny_causal_lm("llama", seed=0)


def generate(model, **kwargs):
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0, **kwargs}
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), **kwargs)


class BlockingProcessor(SpanProcessor):
    """Holds each ``on_end`` until :attr:`release` is set (15 s at most)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ended = 0

    def on_end(self, span) -> None:
        self.release.wait(15)
        self.ended += 1


def call_errors(tc: testing.TelemetryCapture) -> dict[str, int]:
    metric = tc.metrics().get(names.METRIC_INTERNAL_CALL_ERRORS)
    if metric is None:
        return {}
    return {p.attributes[names.INTERNAL_STAGE]: p.value for p in metric.data.data_points}


def test_generate_returns_before_a_blocking_span_processor_and_the_span_keeps_the_generation_end(model):
    plain = generate(model)
    with testing.TelemetryCapture(capture="full", background_emit=True) as tc:
        blocking = BlockingProcessor()
        tc.tracer_provider.add_span_processor(blocking)
        start = time.time_ns()
        out = generate(model)
        returned = time.time_ns()
        assert (returned - start) / 1e9 < 5  # the synchronous path waits 15 s in on_end
        assert torch.equal(out, plain)
        assert blocking.ended == 0  # the span's end is still held on the emission thread
        blocking.release.set()
        assert CoreVitalInstrumentor().flush(10)
        (span,) = tc.spans()
        assert blocking.ended == 1 and len(tc.reports) == 1
        assert start <= span.end_time <= returned  # the generation's end, not the emission's
        assert span.attributes["corevital.capture.mode"] == "full"


def _comparable(tc: testing.TelemetryCapture) -> tuple:
    (span,) = tc.spans()
    varying = ("corevital.report_id", "gen_ai.response.id", "corevital.timing.", "corevital.step.duration")
    attrs = {k: v for k, v in span.attributes.items() if not k.startswith(varying)}
    logs = [(r.log_record.event_name, sorted(dict(r.log_record.attributes or {}))) for r in tc.logs()]
    (report,) = tc.reports
    content = (report.sequences[0].token_ids, report.input_messages)
    return attrs, [e.name for e in span.events], logs, sorted(tc.metrics()), content


@pytest.mark.parametrize("content", [False, True])
def test_background_telemetry_equals_the_synchronous_one_content_rules_included(model, content):
    """Spans, span events, log records and metrics arrive after a flush, the same as without the option."""
    seen = []
    for background in (False, True):
        with testing.TelemetryCapture(capture="full", capture_content=content, background_emit=background) as tc:
            generate(model)
            CoreVitalInstrumentor().flush(10)
            seen.append(_comparable(tc))
            assert len(tc.reports) == 1
    assert seen[0] == seen[1]
    _, _, logs, _, (token_ids, _) = seen[1]
    assert any(names.TOKEN_ID in keys for _, keys in logs) is content  # the step logs' token ids
    assert (token_ids is not None) is content


def test_a_full_queue_counts_the_loss_and_leaves_the_call_alone(model):
    plain = generate(model)
    with testing.TelemetryCapture(capture="summary", background_emit=True) as tc:
        blocking = BlockingProcessor()
        tc.tracer_provider.add_span_processor(blocking)
        _background.EMITTER.max_pending = 1
        try:
            outs = [generate(model) for _ in range(3)]  # 1 running (blocked), 1 queued, 1 refused
        finally:
            _background.EMITTER.max_pending = _background.MAX_PENDING
            blocking.release.set()
        assert all(torch.equal(o, plain) for o in outs)
        assert CoreVitalInstrumentor().flush(10)
        spans = tc.spans()
        assert len(spans) == 3 and len(tc.reports) == 2
        refused = [s for s in spans if s.attributes.get(names.CAPTURE_ERROR) == "telemetry queue full"]
        assert len(refused) == 1
        assert call_errors(tc) == {"emit": 1}


def test_uninstrument_finishes_what_is_queued(model):
    with testing.TelemetryCapture(capture="summary", background_emit=True) as tc:
        generate(model)
        generate(model)
    assert len(tc.spans()) == 2 and len(tc.reports) == 2


def test_a_monitor_still_returns_its_report(model):
    with testing.TelemetryCapture(capture="summary", background_emit=True):
        monitor = CoreVitalMonitor()
        with monitor.watch():
            generate(model)
            assert monitor.report is not None  # built before generate() returned


def test_process_exit_flushes_the_queued_telemetry(tmp_path):
    script = textwrap.dedent(
        """
        import time, torch
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, testing

        class Slow(SpanProcessor):
            def on_end(self, span):
                time.sleep(1.0)

        provider = TracerProvider()
        provider.add_span_processor(Slow())
        console = ConsoleSpanExporter(formatter=lambda s: "SPAN " + s.name + "\\n")
        provider.add_span_processor(SimpleSpanProcessor(console))
        CoreVitalInstrumentor().instrument(tracer_provider=provider, background_emit=True)
        model = testing.tiny_causal_lm("llama", seed=0)
        prompt = torch.tensor([[5, 9, 13]])
        mask = torch.ones_like(prompt)
        model.generate(prompt, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
        print("RETURNED", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "RETURNED"  # generate() returned before the span was exported
    assert [line for line in lines if line.startswith("SPAN ")] == ["SPAN text_completion llama"]


def test_the_emission_thread_gives_the_gil_back_between_sequences(model, monkeypatch):
    """A caller waiting for the GIL while the report is built would wait up to the switch interval (5 ms): the
    emission thread lets it in before each sequence's diagnosis, metrics and step logs; the caller never pauses."""
    from types import SimpleNamespace

    from opentelemetry_instrumentation_corevital.report import _gil

    paused: list[str] = []
    monkeypatch.setattr(_gil, "time", SimpleNamespace(sleep=lambda s: paused.append(threading.current_thread().name)))
    prompt = PROMPT.repeat(3, 1)
    with testing.TelemetryCapture(capture="full", background_emit=True) as tc:
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
        assert CoreVitalInstrumentor().flush(10)
        assert len(tc.reports) == 1
    assert paused == ["corevital-emit"] * 9  # 3 sequences x (diagnosis, entropy histogram, step logs)
    paused.clear()
    with testing.TelemetryCapture(capture="full") as tc:  # emitted on the caller: no pause
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    assert paused == []


def test_the_caller_leaves_the_read_of_the_capture_to_the_emission_thread(model, monkeypatch):
    """The caller queues the capture's copy to the host; the wait for it and the lists made from it (every
    ``tolist``) happen on the emission thread, and the report is the one built on the caller."""
    lists: list[str] = []
    original = torch.Tensor.tolist

    def counted(self, *args, **kwargs):
        lists.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    prompt = PROMPT.repeat(2, 1)
    kwargs = {"attention_mask": torch.ones_like(prompt), "max_new_tokens": 5, "do_sample": False}
    with testing.TelemetryCapture(capture="full") as tc:
        model.generate(prompt, **kwargs)
    on_caller = list(lists)
    expected = tc.reports[0]
    lists.clear()
    caller = threading.current_thread().name
    with testing.TelemetryCapture(capture="full", background_emit=True) as tc:
        model.generate(prompt, **kwargs)
        during = list(lists)
        assert CoreVitalInstrumentor().flush(10)
    assert on_caller.count(caller) >= 3  # the sequences, the statistics' parts and the prompt rows, read here
    ours = on_caller.count(caller) - during.count(caller)  # what moved off the caller
    assert ours >= 2 and "corevital-emit" in lists
    report = tc.reports[0]
    assert report.sequences[0].timeline == expected.sequences[0].timeline
    assert [s.token_ids for s in report.sequences] == [s.token_ids for s in expected.sequences]
