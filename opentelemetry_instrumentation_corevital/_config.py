"""Options of the instrumentation, from keyword arguments and environment variables.

Keyword arguments of ``instrument()`` win over environment variables, which win
over defaults. Every bad value raises :class:`ConfigurationError` naming the
option, the value and what is accepted, at ``instrument()`` time, never inside
a generation.
"""

from __future__ import annotations

import dataclasses

import enum
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._errors import ConfigurationError

ENV_PREFIX = "OTEL_INSTRUMENTATION_COREVITAL_"
ENV_CAPTURE = ENV_PREFIX + "CAPTURE"
ENV_MAX_SPAN_STEPS = ENV_PREFIX + "MAX_SPAN_STEPS"
ENV_REPORT_LOG = ENV_PREFIX + "REPORT_LOG"
ENV_HIGH_ENTROPY_BITS = ENV_PREFIX + "HIGH_ENTROPY_BITS"
ENV_EXPORTERS = ENV_PREFIX + "EXPORTERS"
ENV_LAYERS = ENV_PREFIX + "LAYERS"
ENV_STEP_STRIDE = ENV_PREFIX + "STEP_STRIDE"
ENV_ON_RISK_THRESHOLD = ENV_PREFIX + "ON_RISK_THRESHOLD"
ENV_STEP_EVENTS = ENV_PREFIX + "STEP_EVENTS"
ENV_STEP_LOGS = ENV_PREFIX + "STEP_LOGS"
ENV_LAYER_METRICS = ENV_PREFIX + "LAYER_METRICS"
ENV_CUDA_GRAPHS = ENV_PREFIX + "CUDA_GRAPHS"
ENV_STOP_ON = ENV_PREFIX + "STOP_ON"
ENV_STOP_LOOP_REPEAT = ENV_PREFIX + "STOP_LOOP_REPEAT"
ENV_PROFILE = ENV_PREFIX + "PROFILE"
ENV_THRESHOLDS = ENV_PREFIX + "THRESHOLDS"
# Owned by the GenAI conventions (opentelemetry-util-genai); we honour it, never a second switch.
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class CaptureMode(str, enum.Enum):
    """How much CoreVital captures inside each generation."""

    OFF = "off"  # span, GenAI metrics and timings only
    SUMMARY = "summary"  # + on-device logit signals, per-layer hidden-state norms, flags and risk
    FULL = "full"  # + every per-layer hidden and attention statistic, prompt telemetry, MoE, step events and logs
    ON_RISK = "on_risk"  # capture as full on the device; emit full detail only for risky generations


#: Modes that later releases may add; named here so the error can say so.
PLANNED_MODES: tuple[str, ...] = ()


class ContentMode(str, enum.Enum):
    """Where prompt and output text may be recorded (GenAI content-capture convention)."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_span(self) -> bool:
        return self in (ContentMode.SPAN_ONLY, ContentMode.SPAN_AND_EVENT)

    @property
    def on_event(self) -> bool:
        return self in (ContentMode.EVENT_ONLY, ContentMode.SPAN_AND_EVENT)

    @property
    def enabled(self) -> bool:
        return self is not ContentMode.NO_CONTENT


#: Destinations ``exporters=`` accepts. The first four build OpenTelemetry SDK pipelines of their own
#: (traces, metrics and logs); ``prometheus`` adds a metrics endpoint; ``ddtrace`` hands spans to
#: ddtrace; the last three consume each finished report.
EXPORTER_NAMES = ("otlp", "otlp-json", "console", "datadog", "prometheus", "ddtrace", "dogstatsd", "sqlite", "wandb")


DEFAULT_MAX_SPAN_STEPS = 512
DEFAULT_HIGH_ENTROPY_BITS = 4.0
DEFAULT_ON_RISK_THRESHOLD = 0.5


@dataclass(frozen=True)
class StepView:
    """What a ``step_callback`` sees about the step that just ended (values per row)."""

    step: int
    entropy: list[float]  # bits
    top1_prob: list[float]
    tokens: list[int]  # the token each row just emitted


#: Conditions ``stop_on`` can stop a generation on, checked on the device every step.
STOP_CONDITIONS = ("repetition_loop", "nan_or_inf", "high_entropy")


@dataclass(frozen=True)
class LayerSelection:
    """Which decoder layers to capture: all, explicit indices, or every n-th."""

    indices: tuple[int, ...] | None = None
    every: int | None = None

    def resolve(self, count: int) -> tuple[int, ...] | None:
        if self.indices is not None:
            return tuple(i if i >= 0 else count + i for i in self.indices)
        if self.every is not None:
            return tuple(range(0, count, self.every))
        return None

    def describe(self) -> str:
        if self.indices is not None:
            return ",".join(str(i) for i in self.indices)
        return f"every:{self.every}" if self.every is not None else "all"


@dataclass(frozen=True)
class Options:
    """Resolved options; one instance per ``instrument()`` call."""

    capture: CaptureMode = CaptureMode.SUMMARY
    max_span_steps: int = DEFAULT_MAX_SPAN_STEPS
    report_log: bool = False
    content: ContentMode = ContentMode.NO_CONTENT
    high_entropy_bits: float | None = None  # None: the model profile's threshold
    exporters: tuple[str, ...] = ()
    layers: LayerSelection = field(default_factory=LayerSelection)
    step_stride: int = 1
    on_risk_threshold: float = DEFAULT_ON_RISK_THRESHOLD
    step_events: bool = True
    step_logs: bool = True
    layer_metrics: bool = True
    cuda_graphs: bool = True
    stop_on: tuple[str, ...] = ()
    high_entropy_run: int = 8
    stop_loop_repeat: int | None = None
    step_callback: Any = None
    callback_every: int = 1
    profile: Any = None  # a loaded signals.profiles.Profile, or None: chosen per model
    thresholds: Mapping[str, float] | None = None  # single thresholds overriding the profile's
    extra: Mapping[str, Any] = field(default_factory=dict)


def parse_capture(value: Any, source: str = "capture") -> CaptureMode:
    if isinstance(value, CaptureMode):
        return value
    text = str(value).strip().lower()
    try:
        return CaptureMode(text)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in CaptureMode)
        if text in PLANNED_MODES:
            raise ConfigurationError(
                f"{source}={value!r} is not available in this version; use one of {allowed}."
            ) from None
        raise ConfigurationError(f"{source}={value!r} is not a capture mode; use one of {allowed}.") from None


def parse_bool(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{source}={value!r} is not a boolean; use true or false.")


def parse_positive_int(value: Any, source: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not an integer; use a whole number >= 1.") from None
    if number < 1:
        raise ConfigurationError(f"{source}={value!r} must be >= 1.")
    return number


def parse_positive_float(value: Any, source: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not a number.") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ConfigurationError(f"{source}={value!r} must be a finite number > 0.")
    return number


def parse_layers(value: Any, source: str = "layers") -> LayerSelection:
    """``all``, ``every:N``, or indices and ranges such as ``0,4,8`` or ``0-7,-1`` (or a sequence of ints)."""
    if isinstance(value, LayerSelection):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return LayerSelection(indices=tuple(int(v) for v in value))
        except (TypeError, ValueError):
            raise ConfigurationError(f"{source}={value!r} must hold layer indices (integers).") from None
    text = str(value).strip().lower()
    if text in ("", "all"):
        return LayerSelection()
    if text.startswith("every:"):
        return LayerSelection(every=parse_positive_int(text.split(":", 1)[1], source))
    indices: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part.lstrip("-"):
                low, high = part.lstrip("-").split("-", 1) if not part.startswith("-") else (part, part)
                start, stop = int(low), int(high)
                if stop < start:
                    raise ValueError
                indices.extend(range(start, stop + 1))
            else:
                indices.append(int(part))
    except ValueError:
        raise ConfigurationError(
            f"{source}={value!r} is not a layer selection; use all, every:N, or indices like 0,4,8 or 0-7,-1."
        ) from None
    return LayerSelection(indices=tuple(indices))


def parse_stop_on(value: Any, source: str = "stop_on") -> tuple[str, ...]:
    """Conditions that stop a generation early: repetition_loop, nan_or_inf, high_entropy."""
    if value is None or value == "":
        return ()
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v for v in items if v]
    unknown = [v for v in items if v not in STOP_CONDITIONS]
    if unknown:
        raise ConfigurationError(
            f"{source}={value!r}: unknown condition {unknown[0]!r}; use any of {', '.join(STOP_CONDITIONS)}."
        )
    return tuple(dict.fromkeys(items))


def parse_unit_float(value: Any, source: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not a number.") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigurationError(f"{source}={value!r} must be between 0 and 1.")
    return number


def parse_content_mode(value: Any, source: str = ENV_CAPTURE_CONTENT) -> ContentMode:
    """Accept both the legacy ``true``/``false`` and the latest-experimental enum values."""
    if isinstance(value, ContentMode):
        return value
    if isinstance(value, bool):
        return ContentMode.SPAN_AND_EVENT if value else ContentMode.NO_CONTENT
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return ContentMode.SPAN_AND_EVENT
    if text.lower() in ("false", "0", "no", ""):
        return ContentMode.NO_CONTENT
    try:
        return ContentMode(text.upper())
    except ValueError:
        allowed = "true, false, " + ", ".join(m.value for m in ContentMode)
        raise ConfigurationError(f"{source}={value!r} is not a content-capture mode; use one of {allowed}.") from None


def parse_exporters(value: Any, source: str = "exporters") -> tuple[str, ...]:
    """A comma-separated string or a list of names from :data:`EXPORTER_NAMES`, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower().replace("_", "-")
        if not name or name == "none":
            continue
        if name not in EXPORTER_NAMES:
            raise ConfigurationError(
                f"{source}={value!r}: {item!r} is not an exporter; use any of {', '.join(EXPORTER_NAMES)}."
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_profile(value: Any, source: str = "profile") -> Any:
    """A shipped profile name or a profile file path, loaded now so that a bad one fails at ``instrument()``."""
    from .signals.profiles import Profile, builtin_names, load_profile

    if isinstance(value, Profile):
        return value
    text = str(value).strip()
    try:
        return load_profile(text)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{source}={value!r}: {exc} (shipped profiles: {', '.join(builtin_names())}; or a .json profile file)"
        ) from None


def parse_thresholds(value: Any, source: str = "thresholds") -> dict[str, float]:
    """A mapping of threshold name to number, or ``name=value,name=value`` text (environment)."""
    from .signals.profiles import check_threshold

    if isinstance(value, str):
        items: dict[str, Any] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, number = part.partition("=")
            if not sep:
                raise ConfigurationError(f"{source}={value!r}: {part.strip()!r} is not name=value.")
            try:
                items[name.strip()] = float(number)
            except ValueError:
                raise ConfigurationError(f"{source}={value!r}: {number.strip()!r} is not a number.") from None
        value = items
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{source}={value!r} must be a mapping of threshold name to number.")
    return {str(k): check_threshold(str(k), v, source) for k, v in value.items()}


def resolve_options(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Options:
    """Build :class:`Options` from ``instrument()`` keyword arguments and the environment."""
    env = os.environ if environ is None else environ

    def pick(key: str, env_key: str) -> tuple[Any, str] | None:
        if kwargs.get(key) is not None:
            return kwargs[key], key
        if env.get(env_key, "").strip():
            return env[env_key], env_key
        return None

    options: dict[str, Any] = {}
    if (found := pick("capture", ENV_CAPTURE)) is not None:
        options["capture"] = parse_capture(*found)
    if (found := pick("max_span_steps", ENV_MAX_SPAN_STEPS)) is not None:
        options["max_span_steps"] = parse_positive_int(*found)
    if (found := pick("report_log", ENV_REPORT_LOG)) is not None:
        options["report_log"] = parse_bool(*found)
    if (found := pick("high_entropy_bits", ENV_HIGH_ENTROPY_BITS)) is not None:
        options["high_entropy_bits"] = parse_positive_float(*found)
    if (found := pick("capture_content", ENV_CAPTURE_CONTENT)) is not None:
        options["content"] = parse_content_mode(*found)
    if (found := pick("exporters", ENV_EXPORTERS)) is not None:
        options["exporters"] = parse_exporters(*found)
    if (found := pick("layers", ENV_LAYERS)) is not None:
        options["layers"] = parse_layers(*found)
    if (found := pick("step_stride", ENV_STEP_STRIDE)) is not None:
        options["step_stride"] = parse_positive_int(*found)
    if (found := pick("on_risk_threshold", ENV_ON_RISK_THRESHOLD)) is not None:
        options["on_risk_threshold"] = parse_unit_float(*found)
    if (found := pick("step_events", ENV_STEP_EVENTS)) is not None:
        options["step_events"] = parse_bool(*found)
    if (found := pick("step_logs", ENV_STEP_LOGS)) is not None:
        options["step_logs"] = parse_bool(*found)
    if (found := pick("layer_metrics", ENV_LAYER_METRICS)) is not None:
        options["layer_metrics"] = parse_bool(*found)
    if (found := pick("cuda_graphs", ENV_CUDA_GRAPHS)) is not None:
        options["cuda_graphs"] = parse_bool(*found)
    if (found := pick("stop_on", ENV_STOP_ON)) is not None:
        options["stop_on"] = parse_stop_on(*found)
    if (found := pick("stop_loop_repeat", ENV_STOP_LOOP_REPEAT)) is not None:
        options["stop_loop_repeat"] = parse_positive_int(*found)
    if (found := pick("profile", ENV_PROFILE)) is not None:
        options["profile"] = parse_profile(*found)
    if (found := pick("thresholds", ENV_THRESHOLDS)) is not None:
        options["thresholds"] = parse_thresholds(*found)
    if kwargs.get("high_entropy_run") is not None:
        options["high_entropy_run"] = parse_positive_int(kwargs["high_entropy_run"], "high_entropy_run")
    if kwargs.get("callback_every") is not None:
        options["callback_every"] = parse_positive_int(kwargs["callback_every"], "callback_every")
    if kwargs.get("step_callback") is not None:
        if not callable(kwargs["step_callback"]):
            raise ConfigurationError("step_callback must be callable: it receives a StepView and returns True to stop.")
        options["step_callback"] = kwargs["step_callback"]
    return Options(**options)


#: ``instrument()``/monitor keyword -> ``Options`` field, where the names differ.
_FIELD_OF = {"capture_content": "content"}


def parse_overrides(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Only the options given in ``kwargs``, parsed and validated like ``instrument()``'s (no environment)."""
    known = {f.name for f in dataclasses.fields(Options)} - set(_FIELD_OF.values()) - {"extra"} | set(_FIELD_OF)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigurationError(f"unknown option {unknown[0]!r}; options are: {', '.join(sorted(known))}.")
    resolved = resolve_options(kwargs, environ={})
    return {
        _FIELD_OF.get(key, key): getattr(resolved, _FIELD_OF.get(key, key))
        for key, value in kwargs.items()
        if value is not None and hasattr(resolved, _FIELD_OF.get(key, key))
    }
