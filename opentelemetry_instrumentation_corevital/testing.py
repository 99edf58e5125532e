"""Helpers for testing code that uses CoreVital, shipped with the package.

* :func:`tiny_causal_lm` / :func:`tiny_seq2seq_lm` build small random models of a
  real architecture from a config (no download), deterministic for a seed.
* :class:`TelemetryCapture` instruments with in-memory SDK exporters and hands
  back the spans, metrics, log records and reports of what ran inside it.
* :class:`OTLPSink` is an OTLP/HTTP receiver on 127.0.0.1 that keeps what it gets.

The real SmolLM2 the ``corevital`` CLI uses is ``cli.load_smollm2()``.

Needs ``opentelemetry-sdk`` (the ``cli`` or ``test`` extra) and torch/transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import torch

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.metrics.export import Metric
    from opentelemetry.sdk.trace import ReadableSpan
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

    from .report import Report

#: Shapes used by every tiny model: small enough for milliseconds per step on a CPU.
TINY = {
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
TINY_EOS = 255
TINY_PAD = 0


class _TokenIds(TypedDict):
    eos_token_id: int
    pad_token_id: int
    bos_token_id: int


def tiny_config(arch: str = "llama", **overrides: Any) -> PreTrainedConfig:
    """A small config of a real architecture: llama, mistral, mixtral, qwen2, phi3 or gpt2."""
    import transformers as tf

    common = _TokenIds(eos_token_id=TINY_EOS, pad_token_id=TINY_PAD, bos_token_id=1)
    shapes = dict(TINY)
    if arch == "gpt2":
        config = tf.GPT2Config(
            vocab_size=shapes["vocab_size"],
            n_embd=shapes["hidden_size"],
            n_layer=2,
            n_head=4,
            n_positions=shapes["max_position_embeddings"],
            **common,
        )
    else:
        classes = {
            "llama": tf.LlamaConfig,
            "mistral": tf.MistralConfig,
            "mixtral": tf.MixtralConfig,
            "qwen2": tf.Qwen2Config,
            "phi3": tf.Phi3Config,
        }
        if arch not in classes:
            raise ValueError(f"unknown tiny architecture {arch!r}; use one of {', '.join(['gpt2', *classes])}")
        if arch == "mixtral":
            shapes.update(num_local_experts=4, num_experts_per_tok=2)
        config = classes[arch](**shapes, **common)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_causal_lm(arch: str = "llama", seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A deterministic random causal LM of ``arch`` in eval mode, on the CPU."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    model.generation_config.pad_token_id = TINY_PAD
    model.generation_config.eos_token_id = TINY_EOS
    return model.eval()


TINY_WORDS = (
    "the a an and or but of to in on at for with from by is are was were be been it this that these those "
    "i you he she we they me him her us them my your his its our their what which who when where why how "
    "sky sea sun moon star blue red green light dark day night water fire air earth tree bird fish cat dog "
    "user assistant system hello hi yes no please thanks write tell explain say short long poem story "
    "one two three four five many few all some more most very so not can will would should could "
    ". , ? ! : ;"
).split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer whose ids fit the tiny models' vocabulary, with a chat template.

    ``<pad>`` is 0, ``<s>`` 1, ``</s>`` 255 (the tiny models' EOS), ``<unk>`` 2 and
    the words of :data:`TINY_WORDS` follow from 3.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": TINY_PAD, "<s>": 1, "<unk>": 2, "</s>": TINY_EOS}
    for i, word in enumerate(TINY_WORDS):
        vocab[word] = 3 + i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<s> assistant :{% endif %}"
    )
    return tokenizer


def tiny_seq2seq_lm(seed: int = 0) -> PreTrainedModel:
    """A deterministic random T5 (2 encoder and 2 decoder layers) in eval mode, on the CPU.

    Its decoder starts from token 2 (also its pad token) and ends at :data:`TINY_EOS`.
    """
    import transformers as tf

    config = tf.T5Config(
        vocab_size=TINY["vocab_size"],
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=2,
        eos_token_id=TINY_EOS,
    )
    config.decoder_start_token_id = 2  # not a field of T5Config: set as a plain attribute, as its kwargs would
    config.tie_word_embeddings = False  # a tied random model just repeats its input token
    torch.manual_seed(seed)
    return tf.AutoModelForSeq2SeqLM.from_config(config).eval()


class OTLPSink:
    """A tiny OTLP/HTTP receiver on 127.0.0.1 that keeps every request it gets, decoded.

    Accepts protobuf (gzip or not) on ``/v1/traces``, ``/v1/metrics`` and
    ``/v1/logs`` and answers like a collector, so exporters and collectors
    (rotel, the OpenTelemetry Collector) can forward to it in tests.

    >>> with OTLPSink() as sink:
    ...     exporter = OTLPSpanExporter(endpoint=sink.endpoint + "/v1/traces")
    ...     sink.wait_for_spans(lambda span, attrs: span.name.startswith("chat"))
    """

    def __init__(self, port: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.requests: dict[str, list[Any]] = {"traces": [], "metrics": [], "logs": []}
        self._cond = threading.Condition()
        kinds: dict[str, tuple[str, type[Message], type[Message]]] = {
            "/v1/traces": (
                "traces",
                trace_service_pb2.ExportTraceServiceRequest,
                trace_service_pb2.ExportTraceServiceResponse,
            ),
            "/v1/metrics": (
                "metrics",
                metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse,
            ),
            "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
        }
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                import gzip

                kind = kinds.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if kind is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                name, request_cls, response_cls = kind
                request = request_cls()
                request.ParseFromString(body)
                with sink._cond:
                    sink.requests[name].append(request)
                    sink._cond.notify_all()
                payload = response_cls().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                """Quiet: no line per request on stderr."""
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)

    def __enter__(self) -> OTLPSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[tuple[Any, dict[str, Any]]]:
        """(span proto, attributes as a Python dict) for every span received so far."""
        found = []
        for request in list(self.requests["traces"]):
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append((span, self.attributes(span.attributes)))
        return found

    @staticmethod
    def attributes(key_values: Any) -> dict[str, Any]:
        """OTLP ``KeyValue`` protos (a span's, a log record's, a resource's) as a Python dict."""
        return {kv.key: _any_value(kv.value) for kv in key_values}

    def wait_for_spans(
        self, predicate: Callable[[Any, dict[str, Any]], bool], timeout: float = 10.0
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Block until a received span satisfies ``predicate(span, attrs)``; return the matching ones."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [(s, a) for s, a in self.spans() if predicate(s, a)]
                remaining = deadline - time.monotonic()
                if matches or remaining <= 0:
                    return matches
                self._cond.wait(remaining)


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` proto as the Python value it carries (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class TelemetryCapture:
    """Instrument with in-memory exporters for the duration of a ``with`` block.

    >>> with TelemetryCapture(capture="summary") as tc:
    ...     model.generate(...)
    >>> tc.spans(), tc.metrics(), tc.logs(), tc.reports
    """

    def __init__(self, **instrument_kwargs: Any) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self.log_exporter = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))
        self.reports: list[Report] = []
        self._kwargs = instrument_kwargs

    def __enter__(self) -> TelemetryCapture:
        from .instrument import CoreVitalInstrumentor

        instrumentor = CoreVitalInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
            on_report=self.reports.append,
            **self._kwargs,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        from .instrument import CoreVitalInstrumentor

        CoreVitalInstrumentor().uninstrument()

    def spans(self) -> list[ReadableSpan]:
        """The spans finished so far, in end order."""
        return list(self.span_exporter.get_finished_spans())

    def logs(self) -> list[ReadableLogRecord]:
        """The log records emitted so far, in order."""
        return list(self.log_exporter.get_finished_logs())

    def metrics(self) -> dict[str, Metric]:
        """Metric name -> SDK metric object, from one collection of the in-memory reader."""
        data = self.metric_reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found
