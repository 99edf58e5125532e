"""Options declared once: the docs table is current, unknown keywords are refused everywhere, the instrumentor takes
providers only and unwraps exactly what it wrapped, configure() hands over providers and a report sink."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import (
    ConfigurationError,
    CoreVitalInstrumentor,
    CoreVitalMonitor,
    configure,
)
from opentelemetry_instrumentation_corevital._config import ExporterSettings, Options, options_markdown, resolve, specs
from opentelemetry_instrumentation_corevital.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PROMPT = torch.tensor([[1, 17, 42, 99, 7]])


def test_docs_options_table_is_current():
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"<!-- options:start -->\n(.*?)\n<!-- options:end -->", text, re.S)
    assert block == options_markdown(), "docs/options.md is out of date: run python tools/render_options.py"


def test_every_option_is_documented_once_with_its_flag():
    rendered = options_markdown()
    for table in (Options, ExporterSettings):
        for key, _, spec in specs(table):
            assert rendered.count(f"| `{key}` |") == 1, key
            assert spec.doc and "\n" not in spec.doc
    run_flags = {
        a.option_strings[0]
        for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
        if a.option_strings
    }
    declared = {spec.flag for table in (Options, ExporterSettings) for _, _, spec in specs(table) if spec.flag}
    assert declared == {
        "--model-name",
        "--capture",
        "--layers",
        "--step-stride",
        "--profile",
        "--thresholds",
        "--stop-on",
        "--content",
        "--exporter",
        "--out",
        "--rotate-bytes",
        "--rotate-backups",
        "--prometheus-host",
        "--prometheus-port",
        "--sqlite",
        "--wandb-project",
        "--dogstatsd-host",
        "--dogstatsd-port",
    }
    assert declared <= run_flags


def test_keyword_then_environment_then_default():
    env = {
        "OTEL_INSTRUMENTATION_COREVITAL_CAPTURE": "full",
        "OTEL_INSTRUMENTATION_COREVITAL_STEP_STRIDE": "3",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    }
    options = resolve(Options, {"capture": "off"}, env)
    assert (options.capture.value, options.step_stride, options.content.value) == ("off", 3, "SPAN_ONLY")
    assert options.max_span_steps == 512 and options.layers.describe() == "all"
    settings = resolve(ExporterSettings, {"out": "x"}, {"WANDB_PROJECT": "p", "DD_AGENT_HOST": "10.0.0.1"})
    assert (settings.out, settings.sqlite_file, settings.wandb_project) == (Path("x"), Path("x/corevital.sqlite3"), "p")
    assert settings.dogstatsd_host == "10.0.0.1"


def test_unknown_keyword_to_instrument_is_refused_with_the_accepted_ones():
    with pytest.raises(ConfigurationError) as info:
        CoreVitalInstrumentor().instrument(captur="full")
    assert str(info.value) == (
        "unknown option 'captur'; options are: background_emit, callback_every, capture, capture_content, cuda_graphs, "
        "genai_event, "
        "high_entropy_bits, high_entropy_run, layer_groups, layer_metrics, layers, logger_provider, max_span_steps, "
        "meter_provider, model_name, on_report, on_risk_threshold, profile, report_log, request_logprobs, "
        "semconv_opt_in, step_callback, step_events, step_logs, step_stride, stop_loop_repeat, stop_on, thresholds, "
        "tracer_provider."
    )
    assert not CoreVitalInstrumentor().is_instrumented_by_opentelemetry


def test_exporters_on_instrument_points_to_configure():
    with pytest.raises(
        ConfigurationError,
        match=r"^unknown option 'exporters' \(an option of configure\(\), which "
        r"builds exporters: instrument\(\*\*configure\(\.\.\.\)\.instrument_kwargs\(\)\)\); ",
    ):
        CoreVitalInstrumentor().instrument(exporters="otlp")
    assert not CoreVitalInstrumentor().is_instrumented_by_opentelemetry


def test_unknown_keyword_to_configure_and_monitor_is_refused():
    with pytest.raises(
        ConfigurationError,
        match=r"^unknown option 'exporter'; options are: dogstatsd_host, "
        r"dogstatsd_port, export_queue_size, exporters, otlp_json_backups, "
        r"otlp_json_max_bytes, out, prometheus_host, prometheus_port, "
        r"shutdown_timeout, sqlite_path, wandb_project, wandb_run\.$",
    ):
        configure(exporter="otlp")
    with pytest.raises(
        ConfigurationError, match=r"^unknown option 'tracer_provider'; options are: background_emit, callback_every, "
    ):
        CoreVitalMonitor(tracer_provider=None)


def test_uninstrument_restores_exactly_the_wrapped_functions():
    import transformers.cache_utils as cache_utils
    import transformers.generation.utils as generation_utils
    import transformers.tokenization_utils_base as tokenization_utils_base

    owners = {
        generation_utils.GenerationMixin: ("generate", "_get_logits_processor", "_get_stopping_criteria"),
        cache_utils.Cache: ("reorder_cache",),
        tokenization_utils_base.PreTrainedTokenizerBase: ("apply_chat_template", "__call__"),
    }
    before = {(owner, name): owner.__dict__[name] for owner, names in owners.items() for name in names}
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument()
    assert all(owner.__dict__[name] is not original for (owner, name), original in before.items())
    assert all(hasattr(owner, name) for owner, name in instrumentor._wrapped)
    instrumentor.uninstrument()
    assert all(owner.__dict__[name] is original for (owner, name), original in before.items())
    assert instrumentor._wrapped == ()


def test_configure_hands_over_providers_and_a_report_sink(tiny_llama, tmp_path):
    """sqlite + a caller's on_report: both get the report; no provider is built, so the global ones are used."""
    import sqlite3

    reports = []
    with configure(exporters="sqlite", out=tmp_path) as config:
        kwargs = config.instrument_kwargs(on_report=reports.append)
        assert sorted(kwargs) == ["on_report"]
        assert (config.tracer_provider, config.meter_provider, config.logger_provider) == (None, None, None)
        assert config.files == [tmp_path / "corevital.sqlite3"] and config.prometheus_url is None
        CoreVitalInstrumentor().instrument(**kwargs)
        tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3, do_sample=False)
        CoreVitalInstrumentor().uninstrument()
    (report,) = reports
    rows = sqlite3.connect(tmp_path / "corevital.sqlite3").execute("SELECT report_id FROM generations").fetchall()
    assert rows == [(report.report_id,)]


def test_configure_without_exporters_builds_nothing():
    config = configure()
    assert config.exporters == () and config.instrument_kwargs() == {} and config.files == []
    config.shutdown()
    config.shutdown()  # idempotent


def test_zero_code_instrumentor_routes_the_environment_exporters(tiny_llama, tmp_path, monkeypatch):
    from opentelemetry_instrumentation_corevital.configuration import ZeroCodeInstrumentor

    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS", "otlp-json")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_OUT", str(tmp_path))
    ZeroCodeInstrumentor().instrument(skip_dep_check=True)
    assert CoreVitalInstrumentor().is_instrumented_by_opentelemetry
    tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3, do_sample=False)
    ZeroCodeInstrumentor().uninstrument()
    assert not CoreVitalInstrumentor().is_instrumented_by_opentelemetry
    assert len((tmp_path / "traces.jsonl").read_text().splitlines()) == 1


def test_configure_without_exporters_ignores_other_tools_variables(monkeypatch):
    """DD_AGENT_HOST may hold a socket path for ddtrace; it is only ours to check when dogstatsd is asked for."""
    monkeypatch.setenv("DD_AGENT_HOST", "unix:///var/run/datadog/apm.socket")
    with configure() as config:
        assert config.instrument_kwargs() == {}
    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS", "dogstatsd")
    with pytest.raises(ConfigurationError, match="^DD_AGENT_HOST='unix:///var/run/datadog/apm.socket' is not a host"):
        configure()
