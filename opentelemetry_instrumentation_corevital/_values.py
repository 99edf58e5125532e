"""Value types of the options and one parser per kind of value.

Every parser takes the raw value (a keyword argument or an environment
string) and the name it came from, and returns the typed value or raises
:class:`ConfigurationError` naming that source, the value and what is
accepted. The options themselves are declared in :mod:`._config`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError, shorten

if TYPE_CHECKING:
    from .signals.profiles import Profile


class CaptureMode(str, enum.Enum):
    """How much CoreVital captures inside each generation."""

    OFF = "off"  # span, GenAI metrics and timings only
    SUMMARY = "summary"  # + on-device logit signals, per-layer hidden-state norms, flags and risk
    FULL = "full"  # + every per-layer hidden and attention statistic, prompt telemetry, MoE, step events and logs
    ON_RISK = "on_risk"  # capture as full on the device; emit full detail only for risky generations


class ContentMode(str, enum.Enum):
    """Where prompt and output text may be recorded (GenAI content-capture convention)."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_span(self) -> bool:
        """Whether prompt and output text go on the span."""
        return self in (ContentMode.SPAN_ONLY, ContentMode.SPAN_AND_EVENT)

    @property
    def on_event(self) -> bool:
        """Whether prompt and output text go on log events."""
        return self in (ContentMode.EVENT_ONLY, ContentMode.SPAN_AND_EVENT)

    @property
    def enabled(self) -> bool:
        """Whether any content is recorded at all."""
        return self is not ContentMode.NO_CONTENT


#: Destinations ``exporters=`` accepts. The first four build OpenTelemetry SDK pipelines of their own
#: (traces, metrics and logs); ``prometheus`` adds a metrics endpoint; ``ddtrace`` hands spans to
#: ddtrace; the last three consume each finished report.
EXPORTER_NAMES = ("otlp", "otlp-json", "console", "datadog", "prometheus", "ddtrace", "dogstatsd", "sqlite", "wandb")


#: Layer indices ``layers=`` accepts lie in [-MAX_LAYERS, MAX_LAYERS): no decoder has that many layers, and a
#: huge range would cost memory and time on every call before the model's own count could cut it.
MAX_LAYERS = 1024

#: Conditions ``stop_on`` can stop a generation on, checked on the device every step.
STOP_CONDITIONS = ("repetition_loop", "nan_or_inf", "high_entropy")


@dataclass(frozen=True)
class LayerSelection:
    """Which decoder layers to capture: all, explicit indices, or every n-th."""

    indices: tuple[int, ...] | None = None
    every: int | None = None

    def resolve(self, count: int) -> tuple[int, ...] | None:
        """The layer indices for a model of ``count`` layers (negatives from the end); None means all."""
        if self.indices is not None:  # the model's own layers, each once
            return tuple(dict.fromkeys(i if i >= 0 else count + i for i in self.indices if -count <= i < count))
        if self.every is not None:
            return tuple(range(0, count, self.every))
        return None

    def describe(self) -> str:
        """The selection as ``layers=`` would spell it."""
        if self.indices is not None:
            return ",".join(str(i) for i in self.indices)
        return f"every:{self.every}" if self.every is not None else "all"


def parse_capture(value: Any, source: str = "capture") -> CaptureMode:
    """A :class:`CaptureMode` from its name, any case."""
    if isinstance(value, CaptureMode):
        return value
    text = str(value).strip().lower()
    try:
        return CaptureMode(text)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in CaptureMode)
        raise ConfigurationError(f"{source}={value!r} is not a capture mode; use one of {allowed}.") from None


def parse_bool(value: Any, source: str) -> bool:
    """A boolean from true/false, yes/no, on/off or 1/0 (empty is false)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{source}={value!r} is not a boolean; use true or false.")


def parse_positive_int(value: Any, source: str) -> int:
    """A whole number >= 1."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not an integer; use a whole number >= 1.") from None
    if number < 1:
        raise ConfigurationError(f"{source}={value!r} must be >= 1.")
    return number


def parse_positive_float(value: Any, source: str) -> float:
    """A finite number > 0."""
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
            return _bounded(LayerSelection(indices=tuple(int(v) for v in value)), value, source)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{source}={shorten(value)} must hold layer indices (integers).") from None
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
                indices.extend(range(start, min(stop, MAX_LAYERS) + 1))  # past the bound: refused below
            else:
                indices.append(int(part))
    except ValueError:
        raise ConfigurationError(
            f"{source}={shorten(value)} is not a layer selection; use all, every:N, or indices like 0,4,8 or 0-7,-1."
        ) from None
    return _bounded(LayerSelection(indices=tuple(indices)), value, source)


def _bounded(selection: LayerSelection, value: Any, source: str) -> LayerSelection:
    """``selection`` when every index lies in [-MAX_LAYERS, MAX_LAYERS) and there are at most MAX_LAYERS of them."""
    indices = selection.indices or ()
    if len(indices) > MAX_LAYERS or any(not -MAX_LAYERS <= i < MAX_LAYERS for i in indices):
        raise ConfigurationError(
            f"{source}={shorten(value)}: layer indices must lie in -{MAX_LAYERS}..{MAX_LAYERS - 1}, "
            f"at most {MAX_LAYERS} of them."
        )
    return selection


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
    """A number between 0 and 1, both included."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{source}={value!r} is not a number.") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigurationError(f"{source}={value!r} must be between 0 and 1.")
    return number


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


def parse_profile(value: Any, source: str = "profile") -> Profile:
    """A shipped profile name or a profile file path, loaded now so that a bad one fails at ``instrument()``."""
    from .signals.profiles import Profile, builtin_names, load_profile

    if isinstance(value, Profile):
        return value
    text = str(value).strip()
    try:
        return load_profile(text)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{source}={shorten(value)}: {exc} "
            f"(shipped profiles: {', '.join(builtin_names())}; or a .json profile file)"
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


def parse_whole(low: int, high: int | None = None) -> Callable[[Any, str], int]:
    """A parser of whole numbers from ``low`` (to ``high``)."""

    def parse(value: Any, source: str) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigurationError(f"{source}={value!r} is not a whole number.") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigurationError(f"{source}={value!r} must be {bound}.")
        return number

    return parse


def parse_host(value: Any, source: str) -> str:
    """A host name or address; ``localhost`` becomes 127.0.0.1 (no IPv6 surprise)."""
    text = str(value).strip()
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise ConfigurationError(f"{source}={value!r} is not a host name or address.")
    return "127.0.0.1" if text == "localhost" else text


def parse_path(value: Any, source: str) -> Path:
    """A file or folder path, ``~`` expanded."""
    return Path(str(value)).expanduser()


def parse_sqlite_path(value: Any, source: str) -> Path:
    """A SQLite file path; ``:memory:`` is refused: that database dies with its connection, and the history with it."""
    path = parse_path(value, source)
    if str(path) == ":memory:":
        raise ConfigurationError(
            f"{source}={value!r}: an in-memory SQLite database would throw every report away when the exporter "
            "closes; give a file path."
        )
    return path


def parse_text(value: Any, source: str) -> str:
    """Any non-empty text."""
    return str(value)


def parse_model_name(value: Any, source: str) -> str:
    """A model name for telemetry: non-blank text, trimmed."""
    text = str(value).strip()
    if not text:
        raise ConfigurationError(f"{source}={value!r}: a model name cannot be empty.")
    return text


def parse_object(value: Any, source: str) -> Any:
    """A Python object handed over as is (keyword arguments only)."""
    return value


def parse_callable(value: Any, source: str) -> Callable[..., object]:
    """A function, checked now so that a wrong value fails before any generation."""
    if not callable(value):
        raise ConfigurationError(f"{source} must be callable: it receives a StepView and returns True to stop.")
    return value


@dataclass(frozen=True)
class StepView:
    """What a ``step_callback`` sees about the step that just ended (values per row)."""

    step: int
    entropy: list[float]  # bits
    top1_prob: list[float]
    tokens: list[int]  # the token each row just emitted
