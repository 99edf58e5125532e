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

__all__ = ["CoreVitalInstrumentor", "generation_context", "SCOPE"]

#: Recent chat-templated prompts, process-wide: kept across instrument()/uninstrument() cycles.
_PROMPTS = PromptRegistry()


class CoreVitalInstrumentor(BaseInstrumentor):
    """Instrument Hugging Face ``generate`` with OpenTelemetry and CoreVital signals.

    ``instrument(tracer_provider=None, meter_provider=None, logger_provider=None,
    capture="summary", max_span_steps=512, report_log=False,
    high_entropy_bits=4.0, capture_content=None)``; every option also reads an
    ``OTEL_INSTRUMENTATION_COREVITAL_*`` variable (see the README), keyword
    arguments winning. ``uninstrument()`` restores the original functions.
    """

    _telemetry: Any = None  # a _call.Telemetry while instrumented

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    @property
    def telemetry(self) -> Any:
        return self._telemetry

    def _instrument(self, **kwargs: Any) -> None:
        options = resolve_options(kwargs)
        tracer = trace.get_tracer(SCOPE, __version__, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL)
        meter = get_meter(SCOPE, __version__, kwargs.get("meter_provider"), schema_url=SCHEMA_URL)
        logger = get_logger(SCOPE, __version__, kwargs.get("logger_provider"), schema_url=SCHEMA_URL)

        from ..emit import Instruments
        from ._call import Telemetry
        from ._wrappers import Wrappers

        self._telemetry = Telemetry(
            tracer=tracer,
            instruments=Instruments(meter),
            logger=logger,
            options=options,
            prompts=_PROMPTS,
            on_report=kwargs.get("on_report"),
        )
        wrappers = Wrappers(lambda: self._telemetry)
        import transformers.generation.utils as generation_utils

        wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin.generate", wrappers.generate)
        if hasattr(generation_utils.GenerationMixin, "_get_logits_processor"):
            wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin._get_logits_processor", wrappers.logits_processor)
        if hasattr(generation_utils.GenerationMixin, "_update_finished_beams"):
            wrap_function_wrapper(_GENERATION_MODULE, "GenerationMixin._update_finished_beams",
                                  wrappers.update_finished_beams)
        wrap_function_wrapper(_CACHE_MODULE, "Cache.reorder_cache", wrappers.reorder_cache)
        wrap_function_wrapper(_CACHE_MODULE, "EncoderDecoderCache.reorder_cache", wrappers.reorder_cache)
        wrap_function_wrapper(_TOKENIZER_MODULE, "PreTrainedTokenizerBase.apply_chat_template", wrappers.apply_chat_template)
        wrap_function_wrapper(_TOKENIZER_MODULE, "PreTrainedTokenizerBase.__call__", wrappers.tokenizer_call)
        from ..capture import _intercept

        _intercept.install()

    def _uninstrument(self, **kwargs: Any) -> None:
        import transformers.cache_utils as cache_utils
        import transformers.generation.utils as generation_utils
        import transformers.tokenization_utils_base as tokenization_utils_base

        from ..capture import _intercept

        self._telemetry = None
        _intercept.uninstall()
        unwrap(generation_utils.GenerationMixin, "generate")
        unwrap(generation_utils.GenerationMixin, "_get_logits_processor")
        unwrap(generation_utils.GenerationMixin, "_update_finished_beams")
        unwrap(cache_utils.Cache, "reorder_cache")
        unwrap(cache_utils.EncoderDecoderCache, "reorder_cache")
        unwrap(tokenization_utils_base.PreTrainedTokenizerBase, "apply_chat_template")
        unwrap(tokenization_utils_base.PreTrainedTokenizerBase, "__call__")
