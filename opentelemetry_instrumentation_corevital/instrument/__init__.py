"""``CoreVitalInstrumentor``: wraps ``generate`` (and the tokenizer calls that tell chat from completion), the
``openai`` client's ``create`` methods when that package is installed, and vLLM when it is imported."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry._logs import get_logger
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # upstream module is `# type: ignore`d whole
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import get_meter
from opentelemetry.semconv.schemas import Schemas
from wrapt import wrap_function_wrapper

from .._config import ExporterSettings, Options, check_keys, keywords, resolve_options, signature
from .._content_switch import ignored_switch
from .._errors import ConfigurationError
from ..package import _instruments
from ..version import __version__
from ._context import WATCHERS, generation_context
from ._prompts import PromptRegistry

_logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: _call and _wrappers import torch
    from ..report import Report
    from ._call import Telemetry
    from ._vllm import VLLMWrappers
    from ._wrappers import Wrappers

#: Instrumentation scope name shared by tracer, meter and logger: the package path.
SCOPE = "opentelemetry_instrumentation_corevital"
SCHEMA_URL = Schemas.V1_41_0.value

__all__ = ["CoreVitalInstrumentor", "SCOPE", "WATCHERS", "generation_context", "score"]

#: Keywords of ``instrument()`` besides the options.
_PROVIDERS = ("tracer_provider", "meter_provider", "logger_provider", "on_report")
_ACCEPTED = (*_PROVIDERS, *keywords(Options))
#: configure()'s keywords given to instrument() get a pointer to where they went.
_HINTS = {
    key: " (an option of configure(), which builds exporters: instrument(**configure(...).instrument_kwargs()))"
    for key in keywords(ExporterSettings)
}

#: Seconds ``uninstrument()`` waits for generations whose telemetry is still queued (``background_emit``).
_DRAIN_ON_UNINSTRUMENT = 2.0

#: Recent chat-templated prompts, process-wide: kept across instrument()/uninstrument() cycles.
_PROMPTS = PromptRegistry()


def _targets(wrappers: Wrappers) -> list[tuple[type, str, Any]]:
    """(class, method, wrapper) for every function we wrap; optional ones only where transformers has them."""
    import transformers.cache_utils as cache_utils
    import transformers.generation.streamers as streamers
    import transformers.generation.utils as generation_utils
    import transformers.tokenization_utils_base as tokenization_utils_base

    mixin = generation_utils.GenerationMixin
    tokenizer = tokenization_utils_base.PreTrainedTokenizerBase
    targets = [
        (mixin, "generate", wrappers.generate),
        (mixin, "_get_logits_processor", wrappers.logits_processor),
        (mixin, "_get_stopping_criteria", wrappers.stopping_criteria),
        (mixin, "_update_finished_beams", wrappers.update_finished_beams),
        (streamers.TextStreamer, "__init__", wrappers.streamer_init),
        (cache_utils.Cache, "reorder_cache", wrappers.reorder_cache),
        (cache_utils.EncoderDecoderCache, "reorder_cache", wrappers.reorder_cache),
        (tokenizer, "apply_chat_template", wrappers.apply_chat_template),
        (tokenizer, "__call__", wrappers.tokenizer_call),
    ]
    return [(owner, name, wrapper) for owner, name, wrapper in targets if hasattr(owner, name)]


class CoreVitalInstrumentor(BaseInstrumentor):
    """Instrument Hugging Face ``generate`` with OpenTelemetry and CoreVital signals.

    Providers in, nothing else built: exporters are ``configure()``'s job.
    """

    _telemetry: Telemetry | None = None  # while instrumented
    _wrapped: tuple[tuple[type, str], ...] = ()
    _vllm: VLLMWrappers | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The transformers versions we support: BaseInstrumentor checks them before instrumenting."""
        return _instruments

    @property
    def telemetry(self) -> Telemetry | None:
        """What every instrumented call shares (tracer, instruments, logger, options), or None."""
        return self._telemetry

    def _instrument(self, **kwargs: Any) -> None:
        from ..emit import Instruments
        from ._call import Telemetry
        from ._openai import OpenAIWrappers
        from ._vllm import VLLMWrappers
        from ._wrappers import Wrappers

        check_keys(kwargs, _ACCEPTED, _HINTS)
        options = resolve_options(kwargs)
        ignored = ignored_switch(options.content, options.semconv_opt_in)
        if ignored:
            _logger.warning("CoreVital captures no content: %s.", ignored)
        self._telemetry = Telemetry(
            tracer=trace.get_tracer(SCOPE, __version__, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL),
            instruments=Instruments(
                get_meter(SCOPE, __version__, kwargs.get("meter_provider"), schema_url=SCHEMA_URL),
                latest=options.semconv_opt_in,
            ),
            logger=get_logger(SCOPE, __version__, kwargs.get("logger_provider"), schema_url=SCHEMA_URL),
            options=options,
            prompts=_PROMPTS,
            on_report=kwargs.get("on_report"),
        )
        _PROMPTS.discover_tokenizers()
        wrappers = Wrappers(lambda: self._telemetry)
        wrapped = []
        for owner, name, wrapper in [*_targets(wrappers), *OpenAIWrappers(lambda: self._telemetry).targets()]:
            wrap_function_wrapper(owner, name, wrapper)
            wrapped.append((owner, name))
        self._wrapped = tuple(wrapped)
        self._vllm = VLLMWrappers(lambda: self._telemetry)
        self._vllm.install()
        from ..capture import install_attention_interception

        install_attention_interception()

    def flush(self, timeout: float = 30.0) -> bool:
        """Finish the generations whose telemetry is still being built and emitted (``background_emit``), at most
        ``timeout`` seconds; False if some were not. Then flush your providers to export it."""
        from ..emit import drain

        return drain(timeout)

    def _uninstrument(self, **kwargs: Any) -> None:
        from ..capture import forget_graphs, uninstall_attention_interception
        from ..emit import drain

        drain(_DRAIN_ON_UNINSTRUMENT)
        self._telemetry = None
        uninstall_attention_interception()
        forget_graphs()  # the reduce graphs kept between generations hold device memory
        wrapped, self._wrapped = self._wrapped, ()
        for owner, name in wrapped:
            unwrap(owner, name)
        vllm, self._vllm = self._vllm, None
        if vllm is not None:
            vllm.uninstall()


def score(model: Any, prompt_ids: Any, continuation_ids: Any, attention_mask: Any = None) -> Report | None:
    """Teacher-force ``continuation_ids`` after ``prompt_ids`` with the active instrumentation; its ``Report``."""
    from ._score import ScoreCall  # torch: imported on first use only

    telemetry = CoreVitalInstrumentor().telemetry
    if telemetry is None:
        raise ConfigurationError("score() needs the instrumentation on: call it in a Monitor or after instrument()")
    return ScoreCall(telemetry, model, prompt_ids, continuation_ids, attention_mask).run()


CoreVitalInstrumentor.__doc__ = (
    (CoreVitalInstrumentor.__doc__ or "")
    + f"""

    ``instrument(tracer_provider=None, meter_provider=None, logger_provider=None, on_report=None,
    {signature(Options)})``

    Every option also reads an environment variable (docs/options.md), keyword
    arguments winning; an unknown keyword is a ``ConfigurationError``.
    ``on_report`` is called with each finished ``Report``. ``uninstrument()``
    restores exactly the functions ``instrument()`` wrapped.
    """
)
