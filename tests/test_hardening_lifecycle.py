"""Telemetry failures at any stage of a call cost telemetry only: never an exception, never changed output,
never a hook left on the model.

Faults come in through real OpenTelemetry extension points (a Sampler, a SpanProcessor, a LogRecordProcessor,
an ExemplarFilter that raise) or by making one of our own functions raise. Each stage's loss is counted in
``corevital.internal.call_errors`` (by stage) and said in a warning.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.metrics import ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from transformers import TextIteratorStreamer

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, names, testing
from opentelemetry_instrumentation_corevital.capture import (
    TransformersSource,
    VLLMRequestCapture,
    _hidden,
    _reducer,
    _transformers,
)
from opentelemetry_instrumentation_corevital.instrument import _call, score
from opentelemetry_instrumentation_corevital.instrument._vllm_call import EngineFacts, VLLMCall
from opentelemetry_instrumentation_corevital.report import CaptureResult

PROMPT = torch.tensor([[1, 5, 9, 3, 7]])
NEW_TOKENS = 8


@dataclass
class SamplingParams:
    """The fields of vLLM's SamplingParams a finished request's report reads (greedy, two tokens)."""

    temperature: float = 0.0
    max_tokens: int = 2
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    seed: int | None = None
    stop: list[str] | None = None


class Boom(RuntimeError):
    """The injected fault."""


def _raise(*args, **kwargs):
    raise Boom("injected")


class RaisingSampler(Sampler):
    def should_sample(self, *args, **kwargs):
        raise Boom("sampler")

    def get_description(self) -> str:
        return "raises"


class RaisingOnStart(SpanProcessor):
    def on_start(self, span, parent_context=None) -> None:
        raise Boom("on_start")


class RaisingOnEnd(SpanProcessor):
    def on_end(self, span) -> None:
        raise Boom("on_end")


class RaisingLogProcessor(LogRecordProcessor):
    def on_emit(self, log_record) -> None:
        raise Boom("on_emit")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class RaisingExemplarFilter(ExemplarFilter):
    """Called on every measurement: every metric instrument of its provider raises."""

    def should_sample(self, value, time_unix_nano, attributes, context) -> bool:
        raise Boom("measurement")


def hook_count(model: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def live_sources() -> int:
    """Capture sources still alive after a collection."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some torch objects warns of deprecations
        warnings.simplefilter("ignore")
        return sum(isinstance(o, TransformersSource) for o in gc.get_objects())


class Providers:
    """Real SDK providers with in-memory readers; faults added through their extension points."""

    def __init__(self, sampler=None, meter_faults: bool = False) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        extra = {"exemplar_filter": RaisingExemplarFilter()} if meter_faults else {}
        self.meter_provider = MeterProvider(metric_readers=[self.reader], **extra)
        self.logger_provider = LoggerProvider()
        self.reports: list = []

    def instrument(self, on_report=None, **options) -> None:
        CoreVitalInstrumentor().instrument(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
            on_report=on_report or self.reports.append,
            **options,
        )

    def call_errors(self) -> dict[str, int]:
        """``corevital.internal.call_errors`` by stage."""
        found: dict[str, int] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == names.METRIC_INTERNAL_CALL_ERRORS:
                        for point in metric.data.data_points:
                            found[point.attributes[names.INTERNAL_STAGE]] = point.value
        return found


@pytest.fixture(scope="module")
def model():
    return testing.tiny_causal_lm("llama", seed=0)


@pytest.fixture(scope="module")
def plain(model):
    """The uninstrumented greedy output."""
    return model.generate(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)


@pytest.fixture(autouse=True)
def _warn_again(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(_call, "_warned", set())


def _greedy(model):
    return model.generate(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)


# -- 1. hooks never pile up when the span cannot start ----------------------------------------------------------
@pytest.mark.parametrize("fault", ["sampler", "on_start"])
def test_hooks_never_pile_up_when_the_span_cannot_start(model, plain, fault):
    before, sources = hook_count(model), live_sources()
    providers = Providers(sampler=RaisingSampler() if fault == "sampler" else None)
    if fault == "on_start":
        providers.tracer_provider.add_span_processor(RaisingOnStart())
    providers.instrument(capture="full")
    short = plain[:, : PROMPT.shape[1] + 2]
    for _ in range(100):
        assert torch.equal(model.generate(PROMPT, max_new_tokens=2, do_sample=False), short)
        assert hook_count(model) == before
    assert len(providers.reports) == 100  # the report goes on without a span
    assert all(r.sequences[0].layers is not None for r in providers.reports)  # the taps were in, and ran
    assert providers.spans.get_finished_spans() == ()
    assert providers.call_errors() == {"span_start": 100}
    CoreVitalInstrumentor().uninstrument()
    assert hook_count(model) == before
    assert live_sources() == sources  # every call's capture source was released


@pytest.mark.parametrize("finish_fails", [False, True])
def test_hooks_never_left_when_generate_raises(model, monkeypatch, finish_fails):
    if finish_fails:  # recording the failure fails too
        monkeypatch.setattr(_transformers.TransformersSource, "finish", _raise)
    providers = Providers()
    providers.instrument(capture="full")
    for _ in range(3):
        with pytest.raises(ValueError):  # the model's own exception, unchanged
            model.generate(PROMPT, max_new_tokens=NEW_TOKENS, num_beams=2, num_return_sequences=3)
        assert hook_count(model) == 0
    assert [s.status.status_code.name for s in providers.spans.get_finished_spans()] == ["ERROR"] * 3
    assert providers.call_errors() == ({"fail": 3} if finish_fails else {})


# -- 2. a SpanProcessor whose on_end raises: the output comes back, nothing raised ------------------------------
def _on_end_raising():
    providers = Providers()
    providers.tracer_provider.add_span_processor(RaisingOnEnd())
    providers.instrument(capture="full")
    return providers


def test_on_end_raising_never_reaches_generate(model, plain, caplog):
    providers = _on_end_raising()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(_greedy(model), plain)
    assert hook_count(model) == 0
    assert len(providers.reports) == 3
    assert len(providers.spans.get_finished_spans()) == 3  # processors before the raising one still saw the end
    assert providers.call_errors() == {"span_end": 3}
    assert "could not end a span" in caplog.text


def test_on_end_raising_never_reaches_a_failing_generate(model):
    _on_end_raising()
    with pytest.raises(ValueError):  # the model's own exception, not ours
        model.generate(PROMPT, max_new_tokens=NEW_TOKENS, num_beams=2, num_return_sequences=3)
    assert hook_count(model) == 0


def test_on_end_raising_never_reaches_a_streamed_generate(model, plain):
    tok = testing.tiny_tokenizer()
    providers = _on_end_raising()
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["ids"] = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False, streamer=streamer)
        except BaseException as exc:  # pragma: no cover - the failure this test guards against
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    pieces = list(streamer)
    worker.join(timeout=60)
    assert "error" not in outcome
    assert torch.equal(outcome["ids"], plain)
    assert "".join(pieces) == tok.decode(plain[0, PROMPT.shape[1] :])
    assert len(providers.reports) == 1
    assert hook_count(model) == 0


def test_on_end_raising_never_reaches_score(model):
    providers = _on_end_raising()
    report = score(model, PROMPT, torch.tensor([[4, 6, 8]]))
    assert report is not None and report.request.operation == "score"
    assert len(report.sequences[0].timeline.entropy) == 3
    assert providers.call_errors() == {"span_end": 1}
    assert hook_count(model) == 0


class _ChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server answering every chat completion with one fixed response."""

    BODY = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "red"}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(self.BODY).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_on_end_raising_never_reaches_an_openai_call():
    openai = pytest.importorskip("openai")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        providers = _on_end_raising()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="none")
        response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "colour?"}])
        assert response.choices[0].message.content == "red"
        assert len(providers.reports) == 1
        assert providers.call_errors() == {"span_end": 1}
    finally:
        server.shutdown()
        server.server_close()


def test_on_end_raising_never_reaches_the_vllm_engine():
    """A finished vLLM request is reported from the engine's own step: its span's on_end must not raise there."""
    providers = _on_end_raising()
    found = VLLMRequestCapture(
        key="r1",
        marker={"id": "r1"},
        params=SamplingParams(),
        prompt_ids=[1, 5, 9],
        output_ids=[4, 7],
        result=CaptureResult(signals=False, prefix_len=3, steps=2, rows=1, sequences=[[1, 5, 9, 4, 7]]),
    )
    call = VLLMCall(CoreVitalInstrumentor().telemetry, found, EngineFacts("length", "r1"))
    report = call.emit()
    assert report is not None and (report.usage.input_tokens, report.usage.output_tokens) == (3, 2)
    assert providers.call_errors() == {"span_end": 1}


# -- 3. a fault at every stage of one generate() ----------------------------------------------------------------
#: stage -> (how the fault comes in, the stage counted, a warning's words)
STAGES = {
    "hooks": ("hook", "capture", "capture stopped"),
    "reduce": ("reduce", "capture", "capture stopped"),
    "transfer": ("transfer", "capture", "could not read back"),
    "beams": ("beams", "capture", "capture stopped"),  # beam search's cache reorder, followed by our reducer
    "finish": ("finish", "report", "could not report a generation"),  # the whole read-back, taps removal included
    "report": ("report", "report", "could not report a generation"),
    "emit_metrics": ("meter", None, "could not emit"),
    "emit_logs": ("logger", "emit", "could not emit"),
    "span_start": ("sampler", "span_start", "could not start a span"),
    "span_start_processor": ("on_start", "span_start", "could not start a span"),
    "span_end": ("on_end", "span_end", "could not end a span"),
    "on_report": ("on_report", "on_report", "on_report receiver"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_fault_at_each_stage_costs_telemetry_only(model, stage, monkeypatch, caplog):
    fault, counted, words = STAGES[stage]
    decoding = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "num_beams": 2 if fault == "beams" else 1}
    plain = model.generate(PROMPT, **decoding)  # not instrumented yet
    if fault == "hook":  # the prefill reduction inside a decoder layer's forward hook
        monkeypatch.setattr(_hidden, "masked_token_norm_mean", _raise)
    elif fault == "reduce":
        monkeypatch.setattr(_reducer.StepReducer, "step", _raise)
    elif fault == "transfer":
        monkeypatch.setattr(_transformers, "transfer", _raise)
    elif fault == "beams":
        monkeypatch.setattr(_reducer.StepReducer, "follow_beams", _raise)
    elif fault == "finish":
        monkeypatch.setattr(_transformers.TransformersSource, "finish", _raise)
    elif fault == "report":
        monkeypatch.setattr(_call, "build_report", _raise)
    providers = Providers(sampler=RaisingSampler() if fault == "sampler" else None, meter_faults=fault == "meter")
    if fault == "on_start":
        providers.tracer_provider.add_span_processor(RaisingOnStart())
    elif fault == "on_end":
        providers.tracer_provider.add_span_processor(RaisingOnEnd())
    elif fault == "logger":
        providers.logger_provider.add_log_record_processor(RaisingLogProcessor())
    on_report = _raise if fault == "on_report" else None
    providers.instrument(on_report=on_report, capture="full", report_log=True, step_logs=True)

    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert torch.equal(model.generate(PROMPT, **decoding), plain)  # nothing raised, the same tokens
            assert hook_count(model) == 0
    assert words in caplog.text
    if counted is not None:  # (a meter that raises cannot count its own failure: the warning says it)
        assert providers.call_errors() == {counted: 2}
    if fault in ("hook", "reduce", "transfer", "beams"):
        spans = providers.spans.get_finished_spans()
        assert [s.attributes[names.CAPTURE_ERROR] for s in spans] == ["Boom: injected"] * 2
        assert [r.capture.error for r in providers.reports] == ["Boom: injected"] * 2
    CoreVitalInstrumentor().uninstrument()
    assert hook_count(model) == 0
