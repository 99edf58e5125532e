"""``CoreVitalInstrumentor``: wraps ``generate`` (and the tokenizer calls that tell chat from completion)."""

from __future__ import annotations

from typing import Any, Collection

from opentelemetry import trace
from opentelemetry._logs import get_logger
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import get_meter
from opentelemetry.semconv.schemas import Schemas
from wrapt import wrap_function_wrapper

from .._config import resolve_options
from .._errors import ConfigurationError
from ..package import _instruments
from ..version import __version__
from ._context import generation_context
from ._prompts import PromptRegistry

#: Instrumentation scope name shared by tracer, meter and logger: the package path.
SCOPE = "opentelemetry_instrumentation_corevital"
SCHEMA_URL = Schemas.V1_41_0.value

_GENERATION_MODULE = "transformers.generation.utils"
_TOKENIZER_MODULE = "transformers.tokenization_utils_base"
_CACHE_MODULE = "transformers.cache_utils"
_STREAMER_MODULE = "transformers.generation.streamers"

__all__ = ["CoreVitalInstrumentor", "generation_context", "SCOPE"]

#: Recent chat-templated prompts, process-wide: kept across instrument()/uninstrument() cycles.
_PROMPTS = PromptRegistry()


class CoreVitalInstrumentor(BaseInstrumentor):
    """Instrument Hugging Face ``generate`` with OpenTelemetry and CoreVital signals.

    ``instrument(tracer_provider=None, meter_provider=None, logger_provider=None,
    capture="summary", max_span_steps=512, report_log=False,
    high_entropy_bits=None, capture_content=None, layers="all", step_stride=1,
    on_risk_threshold=0.5, step_events=True, step_logs=True, layer_metrics=True,
    profile=None, thresholds=None, stop_on=(), exporters=(), on_report=None,
    <exporter settings>)``; every option also reads an
    ``OTEL_INSTRUMENTATION_COREVITAL_*`` variable (see the README), keyword
    arguments winning. ``exporters`` names destinations CoreVital sets up and
    owns (see ``exporters/pipeline.py``). ``uninstrument()`` flushes and stops
    them and restores the original functions.
    """

    _telemetry: Any = None  # a _call.Telemetry while instrumented
    _pipeline: Any = None  # an exporters.pipeline.Pipeline when exporters= named any

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    @property
    def telemetry(self) -> Any:
        return self._telemetry

    @property
    def pipeline(self) -> Any:
        """The exporters CoreVital built for ``exporters=`` (files, Prometheus URL, ``flush()``), or None."""
        return self._pipeline

    def _instrument(self, **kwargs: Any) -> None:
        options = resolve_options(kwargs)
        pipeline = None
        if options.exporters:
            from ..exporters.pipeline import SDK_EXPORTERS, build_pipeline
            from ..exporters.settings import resolve_settings

            settings = resolve_settings(kwargs)
            sdk = [name for name in options.exporters if name in SDK_EXPORTERS]
            given = [k for k in ("tracer_provider", "meter_provider", "logger_provider") if kwargs.get(k) is not None]
            if sdk and given:
                raise ConfigurationError(
                    f"exporters={sdk[0]!r} builds CoreVital's own providers, so {given[0]}= cannot be used with it; "
                    "pass your providers without that exporter, or the exporter without providers"
                )
            if "ddtrace" in options.exporters and kwargs.get("tracer_provider") is not None:
                raise ConfigurationError("exporters='ddtrace' supplies the tracer provider; drop tracer_provider=")
            pipeline = build_pipeline(options.exporters, settings)
        try:
            self._setup(kwargs, options, pipeline)
        except BaseException:
            if pipeline is not None:
                pipeline.shutdown()
            raise
        self._pipeline = pipeline

    def _setup(self, kwargs: dict[str, Any], options: Any, pipeline: Any) -> None:
        from ..emit import FanOutInstruments, FanOutLogger, Instruments
        from ._call import Telemetry
        from ._wrappers import Wrappers

        tracer_provider = kwargs.get("tracer_provider")
        meter_providers = [kwargs.get("meter_provider")]
        logger_providers = [kwargs.get("logger_provider")]
        on_report = kwargs.get("on_report")
        if pipeline is not None:
            if pipeline.tracer_provider is not None:
                tracer_provider = pipeline.tracer_provider
            if pipeline.sdk:  # an SDK pipeline replaces the caller's providers
                meter_providers, logger_providers = [pipeline.meter_provider], [pipeline.logger_provider]
            elif pipeline.meter_provider is not None:  # Prometheus alone: in addition to the caller's
                meter_providers.append(pipeline.meter_provider)
            if pipeline.dispatcher is not None:
                on_report = _chain(on_report, pipeline.submit)
        tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meters = [get_meter(SCOPE, __version__, p, schema_url=SCHEMA_URL) for p in meter_providers]
        loggers = [get_logger(SCOPE, __version__, p, schema_url=SCHEMA_URL) for p in logger_providers]
        instruments = [Instruments(m) for m in meters]

        self._telemetry = Telemetry(
            tracer=tracer,
            instruments=instruments[0] if len(instruments) == 1 else FanOutInstruments(instruments),
            logger=loggers[0] if len(loggers) == 1 else FanOutLogger(loggers),
            options=options,
            prompts=_PROMPTS,
            on_report=on_report,
        )
        wrappers = Wrappers(lambda: self._telemetry)
        import transformers.generation.utils as generation_utils

        wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin.generate", wrappers.generate)
        if hasattr(generation_utils.GenerationMixin, "_get_logits_processor"):
            wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin._get_logits_processor", wrappers.logits_processor)
        if hasattr(generation_utils.GenerationMixin, "_get_stopping_criteria"):
            wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin._get_stopping_criteria",
                                  wrappers.stopping_criteria)
        if hasattr(generation_utils.GenerationMixin, "_update_finished_beams"):
            wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin._update_finished_beams",
                                  wrappers.update_finished_beams)
        wrap_function_wrapper(_STREAMER_MODULE, "TextStreamer.__init__", wrappers.streamer_init)
        wrap_function_wrapper(_CACHE_MODULE, "Cache.reorder_cache", wrappers.reorder_cache)
        wrap_function_wrapper(_CACHE_MODULE, "EncoderDecoderCache.reorder_cache", wrappers.reorder_cache)
        wrap_function_wrapper(_TOKENIZER_MODULE, "PreTrainedTokenizerBase.apply_chat_template", wrappers.apply_chat_template)
        wrap_function_wrapper(_TOKENIZER_MODULE, "PreTrainedTokenizerBase.__call__", wrappers.tokenizer_call)
        from ..capture import install_attention_interception

        install_attention_interception()

    def _uninstrument(self, **kwargs: Any) -> None:
        import transformers.cache_utils as cache_utils
        import transformers.generation.utils as generation_utils
        import transformers.tokenization_utils_base as tokenization_utils_base

        from ..capture import uninstall_attention_interception

        self._telemetry = None
        uninstall_attention_interception()
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.shutdown()
        unwrap(generation_utils.GenerationMixin, "generate")
        unwrap(generation_utils.GenerationMixin, "_get_logits_processor")
        unwrap(generation_utils.GenerationMixin, "_update_finished_beams")
        unwrap(generation_utils.GenerationMixin, "_get_stopping_criteria")
        unwrap(cache_utils.Cache, "reorder_cache")
        import transformers.generation.streamers as streamers

        unwrap(streamers.TextStreamer, "__init__")
        unwrap(cache_utils.EncoderDecoderCache, "reorder_cache")
        unwrap(tokenization_utils_base.PreTrainedTokenizerBase, "apply_chat_template")
        unwrap(tokenization_utils_base.PreTrainedTokenizerBase, "__call__")


def _chain(first: Any, second: Any) -> Any:
    if first is None:
        return second

    def both(report: Any) -> None:
        try:
            first(report)
        finally:
            second(report)

    return both
