"""Every option, declared once: keyword, parser, default, environment variables, ``corevital run`` flag, doc.

Two tables, each a frozen dataclass whose fields carry an :class:`OptionSpec`: :class:`Options` (what
``instrument()`` and ``CoreVitalMonitor`` capture and emit) and :class:`ExporterSettings` (what ``configure()``
builds). Keyword parsing, environment parsing, the ``corevital run`` flags, the instrumentor's docstring and
``docs/options.md`` are all derived from these fields.

Keyword arguments win over environment variables, which win over defaults.
Every bad value, and every unknown keyword, raises :class:`ConfigurationError`
naming the option at configuration time, never inside a generation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import _content_switch as cs
from ._content_switch import CAPTURE_CONTENT_ENV
from ._errors import ConfigurationError, shorten
from ._values import (
    EXPORTER_NAMES,
    MAX_LAYERS,
    STOP_CONDITIONS,
    CaptureMode,
    ContentMode,
    LayerSelection,
    StepView,
    parse_bool,
    parse_callable,
    parse_capture,
    parse_exporters,
    parse_host,
    parse_layers,
    parse_model_name,
    parse_object,
    parse_path,
    parse_positive_float,
    parse_positive_int,
    parse_profile,
    parse_sqlite_path,
    parse_stop_on,
    parse_text,
    parse_thresholds,
    parse_unit_float,
    parse_whole,
)

if TYPE_CHECKING:
    from .signals.profiles import Profile

ENV_PREFIX = "OTEL_INSTRUMENTATION_COREVITAL_"
#: Turns CoreVital on in every process of a vLLM server (the ``vllm.general_plugins`` entry point reads it).
VLLM_PLUGIN_ENV = ENV_PREFIX + "VLLM"
_P = ENV_PREFIX
_SPEC = "corevital"
T = TypeVar("T")


@dataclass(frozen=True)
class OptionSpec:
    """How one option is given and documented; the field's name and default come from the dataclass."""

    parse: Callable[[Any, str], Any]
    doc: str
    env: tuple[str, ...] = ()
    flag: str | None = None  # the ``corevital run`` flag
    keyword: str | None = None  # when the keyword differs from the field name
    shown_default: str | None = None  # the default as the docs say it, when repr() would not


def option(
    default: Any,
    parse: Callable[[Any, str], Any],
    doc: str,
    *env: str,
    flag: str | None = None,
    keyword: str | None = None,
    shown_default: str | None = None,
) -> Any:
    """A dataclass field declaring one option."""
    spec = OptionSpec(parse, doc, tuple(env), flag, keyword, shown_default)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class Options:
    """What ``instrument()`` captures and emits; one instance per ``instrument()`` call."""

    capture: CaptureMode = option(
        CaptureMode.SUMMARY,
        parse_capture,
        "how much to capture: off, summary, full or on_risk",
        _P + "CAPTURE",
        flag="--capture",
    )
    model_name: str | None = option(
        None,
        parse_model_name,
        "the model's name on spans, metrics and reports (gen_ai.request.model), instead of the derived one",
        _P + "MODEL_NAME",
        flag="--model-name",
        shown_default="derived from the model",
    )
    layers: LayerSelection = option(
        LayerSelection(),
        parse_layers,
        "decoder layers to capture: all, every:N, or indices and ranges such as 0,4,8 or 0-7,-1 "
        f"(indices from -{MAX_LAYERS} to {MAX_LAYERS - 1}; those past the model's layers are skipped)",
        _P + "LAYERS",
        flag="--layers",
        shown_default="all",
    )
    step_stride: int = option(
        1,
        parse_positive_int,
        "capture layer data every N-th step (logit signals stay per step)",
        _P + "STEP_STRIDE",
        flag="--step-stride",
    )
    on_risk_threshold: float = option(
        0.5, parse_unit_float, "on_risk: emit full detail when the risk score reaches this", _P + "ON_RISK_THRESHOLD"
    )
    step_events: bool = option(True, parse_bool, "with full detail, corevital.step span events", _P + "STEP_EVENTS")
    background_emit: bool = option(
        False,
        parse_bool,
        "build each generation's report and emit its telemetry on a worker thread, so generate() returns once "
        "the capture's read-back is queued (the wait for it runs on that thread too; the span keeps the "
        "generation's end time; on_report is called there too; a monitor's generations are always built before "
        "it returns)",
        _P + "BACKGROUND_EMIT",
    )
    step_logs: bool = option(
        True,
        parse_bool,
        "with full detail, one corevital.generation.step log record per generated token",
        _P + "STEP_LOGS",
    )
    layer_metrics: bool = option(
        True, parse_bool, "with full detail, the per-layer histograms corevital.layer.*", _P + "LAYER_METRICS"
    )
    layer_groups: int = option(
        4, parse_whole(0), "layer histograms in this many groups of adjacent layers; 0: per layer", _P + "LAYER_GROUPS"
    )
    cuda_graphs: bool = option(
        True, parse_bool, "on CUDA, replay each step's fixed-shape reduce as one CUDA graph", _P + "CUDA_GRAPHS"
    )
    max_span_steps: int = option(
        512,
        parse_positive_int,
        "most per-step values per array attribute on the span (thinned evenly beyond)",
        _P + "MAX_SPAN_STEPS",
    )
    report_log: bool = option(
        False, parse_bool, "also emit the full report as one corevital.generation.report log record", _P + "REPORT_LOG"
    )
    high_entropy_bits: float | None = option(
        None,
        parse_positive_float,
        "threshold of the high_entropy flag and of stop_on=high_entropy",
        _P + "HIGH_ENTROPY_BITS",
        shown_default="the profile's",
    )
    profile: Profile | None = option(
        None,
        parse_profile,
        "a shipped profile name or a .json profile file (a loaded Profile)",
        _P + "PROFILE",
        flag="--profile",
        shown_default="from the model",
    )
    thresholds: Mapping[str, float] | None = option(
        None,
        parse_thresholds,
        "single thresholds overriding the profile's: a mapping, or name=value,name=value",
        _P + "THRESHOLDS",
        flag="--thresholds",
    )
    stop_on: tuple[str, ...] = option(
        (),
        parse_stop_on,
        "stop a generation on the device when a condition holds: " + ", ".join(STOP_CONDITIONS),
        _P + "STOP_ON",
        flag="--stop-on",
    )
    stop_loop_repeat: int | None = option(
        None,
        parse_positive_int,
        "repetition_loop: stop once the repeated part is this many tokens long",
        _P + "STOP_LOOP_REPEAT",
        shown_default="3 whole periods",
    )
    high_entropy_run: int = option(8, parse_positive_int, "stop_on=high_entropy: steps in a row above the threshold")
    step_callback: Callable[[StepView], object] | None = option(
        None, parse_callable, "your function of a StepView, run every callback_every steps; True stops the generation"
    )
    callback_every: int = option(1, parse_positive_int, "steps between step_callback calls")
    content: ContentMode | bool = option(
        False, cs.parse_content_switch, cs.CONTENT_DOC, CAPTURE_CONTENT_ENV, keyword="capture_content", flag="--content"
    )
    semconv_opt_in: bool = option(False, cs.parse_opt_in, cs.OPT_IN_DOC, cs.STABILITY_OPT_IN_ENV, shown_default="none")
    genai_event: bool | None = option(None, parse_bool, cs.EMIT_EVENT_DOC, cs.EMIT_EVENT_ENV, shown_default="by mode")
    request_logprobs: int = option(
        0,
        parse_whole(0, 20),
        "openai client: ask for this many top log-probabilities per token in requests that ask for none "
        "(0: never change a request; then such a request's logit signals are reported unavailable)",
        _P + "REQUEST_LOGPROBS",
    )


@dataclass(frozen=True)
class ExporterSettings:
    """What ``configure()`` builds and where it sends."""

    exporters: tuple[str, ...] = option(
        (),
        parse_exporters,
        "destinations to set up: " + ", ".join(EXPORTER_NAMES),
        _P + "EXPORTERS",
        flag="--exporter",
        shown_default="none",
    )
    out: Path = option(
        Path("corevital-data"),
        parse_path,
        "folder of CoreVital's files (otlp-json lines, the sqlite history)",
        _P + "OUT",
        flag="--out",
    )
    otlp_json_max_bytes: int = option(
        100 * 1024 * 1024,
        parse_whole(0),
        "otlp-json: rotate each file before it grows past this (0: never)",
        _P + "OTLP_JSON_MAX_BYTES",
        flag="--rotate-bytes",
        shown_default="100 MiB",
    )
    otlp_json_backups: int = option(
        5, parse_whole(0), "otlp-json: rotated files kept per signal", _P + "OTLP_JSON_BACKUPS", flag="--rotate-backups"
    )
    prometheus_host: str = option(
        "127.0.0.1",
        parse_host,
        "prometheus: address of the /metrics endpoint",
        "OTEL_EXPORTER_PROMETHEUS_HOST",
        flag="--prometheus-host",
    )
    prometheus_port: int = option(
        9464,
        parse_whole(0, 65535),
        "prometheus: port of the /metrics endpoint (0 picks a free one)",
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        flag="--prometheus-port",
    )
    sqlite_path: Path | None = option(
        None,
        parse_sqlite_path,
        "sqlite: the history file",
        _P + "SQLITE_PATH",
        flag="--sqlite",
        shown_default="OUT/corevital.sqlite3",
    )
    wandb_project: str = option(
        "corevital",
        parse_text,
        "wandb: the project of the run it starts",
        _P + "WANDB_PROJECT",
        "WANDB_PROJECT",
        flag="--wandb-project",
    )
    wandb_run: Any = option(None, parse_object, "wandb: an existing run to log into instead of starting one")
    dogstatsd_host: str = option(
        "127.0.0.1",
        parse_host,
        "dogstatsd: the agent's host",
        "DD_DOGSTATSD_HOST",
        "DD_AGENT_HOST",
        flag="--dogstatsd-host",
    )
    dogstatsd_port: int = option(
        8125, parse_whole(1, 65535), "dogstatsd: the agent's port", "DD_DOGSTATSD_PORT", flag="--dogstatsd-port"
    )
    export_queue_size: int = option(
        1000, parse_whole(1), "reports waiting for the report exporters; more are dropped", _P + "EXPORT_QUEUE_SIZE"
    )
    shutdown_timeout: float = option(
        2.0,
        parse_positive_float,
        "seconds shutdown waits for the exporters; what is not delivered by then is dropped and counted",
        _P + "SHUTDOWN_TIMEOUT",
    )

    @property
    def sqlite_file(self) -> Path:
        """The SQLite history file: ``sqlite_path``, or ``corevital.sqlite3`` in ``out``."""
        return self.sqlite_path if self.sqlite_path is not None else self.out / "corevital.sqlite3"


# -- derived from the tables -------------------------------------------------------------------------


def specs(table: type) -> list[tuple[str, dataclasses.Field, OptionSpec]]:
    """(keyword, field, spec) of every option of ``table``, in declaration order."""
    return [(f.metadata[_SPEC].keyword or f.name, f, f.metadata[_SPEC]) for f in dataclasses.fields(table)]


def keywords(table: type) -> list[str]:
    """The keyword arguments ``table`` accepts."""
    return [key for key, _, _ in specs(table)]


def check_keys(given: Iterable[str], accepted: Iterable[str], hints: Mapping[str, str] | None = None) -> None:
    """Refuse the first unknown keyword, naming the accepted ones (and a hint where one helps)."""
    accepted = set(accepted)
    unknown = sorted(set(given) - accepted)
    if unknown:
        hint = (hints or {}).get(unknown[0], "")
        raise ConfigurationError(f"unknown option {unknown[0]!r}{hint}; options are: {', '.join(sorted(accepted))}.")


def resolve(
    table: type[T],
    kwargs: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
) -> T:
    """An instance of ``table`` from keyword arguments, then the environment, then defaults.

    ``sources`` names where a keyword came from in errors (``corevital run`` passes its flags).
    """
    values = {}
    for key, f, spec in specs(table):
        found = _given(key, spec, kwargs, os.environ if environ is None else environ, sources or {})
        if found is not None:
            values[f.name] = parse(spec, *found)
    return table(**values)


def resolve_one(table: type, key: str, kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """One option of ``table``, resolved like :func:`resolve` without looking at the others."""
    ((_, f, spec),) = [item for item in specs(table) if item[0] == key]
    found = _given(key, spec, kwargs, os.environ if environ is None else environ, {})
    return parse(spec, *found) if found is not None else f.default


def given(table: type, key: str, kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Whether an option of ``table`` was given, as a keyword or in the environment (a default was not)."""
    ((_, _, spec),) = [item for item in specs(table) if item[0] == key]
    return _given(key, spec, kwargs, os.environ if environ is None else environ, {}) is not None


def _given(
    key: str, spec: OptionSpec, kwargs: Mapping[str, Any], env: Mapping[str, str], sources: Mapping[str, str]
) -> tuple[Any, str] | None:
    """(raw value, where it came from) of an option that was given, else None."""
    if kwargs.get(key) is not None:
        return kwargs[key], sources.get(key, key)
    for name in spec.env:
        if env.get(name, "").strip():
            return env[name], name
    return None


def parse(spec: OptionSpec, value: Any, source: str) -> Any:
    """``spec``'s parser on one value; whatever else it raises (an OSError, a RecursionError...) becomes a
    ``ConfigurationError`` naming the option, so that one bad value is never mistaken for a bug of ours."""
    try:
        return spec.parse(value, source)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"{source}={shorten(value)}: cannot use it ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None


def resolve_options(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Options:
    """:class:`Options` from ``instrument()`` keyword arguments and the environment."""
    return resolve(Options, kwargs, environ)


def parse_overrides(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Only the options given in ``kwargs`` (field name -> parsed value), validated like ``instrument()``'s."""
    check_keys(kwargs, keywords(Options))
    return {
        f.name: parse(spec, *found)
        for key, f, spec in specs(Options)
        if (found := _given(key, spec, kwargs, {}, {})) is not None
    }


def default_text(f: dataclasses.Field, spec: OptionSpec) -> str:
    """The default as the docs and `--help` say it."""
    if spec.shown_default is not None:
        return spec.shown_default
    value = f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == ():
        return "none"
    return str(value.value if hasattr(value, "value") else value)


def signature(table: type, width: int = 100) -> str:
    """``key=default, ...`` as Python would spell the defaults, wrapped for docstrings."""
    lines, line = [], ""
    for key, f, _ in specs(table):
        value: object = f.default
        value = value.value if hasattr(value, "value") else value.describe() if hasattr(value, "describe") else value
        item = f"{key}={str(value)!r}" if isinstance(value, Path) else f"{key}={value!r}"
        if line and len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    return "\n    ".join([*lines, line])


def markdown_table(table: type) -> str:
    """The options of ``table`` as a Markdown table (keyword, variables, flag, default, meaning)."""
    rows = ["| keyword | environment variable | `corevital run` | default | meaning |", "|---|---|---|---|---|"]
    for key, f, spec in specs(table):
        env = " or ".join(f"`{name}`" for name in spec.env) or "–"
        flag = f"`{spec.flag}`" if spec.flag else "–"
        default = default_text(f, spec) if spec.shown_default else f"`{default_text(f, spec)}`"
        rows.append(f"| `{key}` | {env} | {flag} | {default} | {spec.doc} |")
    return "\n".join(rows)


def options_markdown() -> str:
    """The Markdown that docs/options.md holds between its markers: one table per option table."""
    return "\n".join(
        [
            "### `instrument()` and `CoreVitalMonitor`",
            "",
            "Besides these, `instrument()` takes `tracer_provider`, `meter_provider`, `logger_provider` "
            "(default: the global ones) and `on_report` (called with each finished `Report`).",
            "",
            markdown_table(Options),
            "",
            "### `configure()`",
            "",
            markdown_table(ExporterSettings),
        ]
    )
