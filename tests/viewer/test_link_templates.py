"""Links into the viewer from tracing UIs (issue 16): the templates in dashboards/ are valid JSON and, with a trace id
filled in as Grafana, Datadog and Jaeger fill theirs, make a URL that opens that run."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index, links

from . import handmade as h

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
VIEWER = "http://127.0.0.1:8577/"
#: Each template's file, where its URL sits, and the placeholder the tool fills with the trace id.
TEMPLATES = {
    "grafana-viewer-link.json": (("fieldConfig", "defaults", "links", 0, "url"), "${__data.fields.traceID}"),
    "datadog-viewer-link.json": (("definition", "custom_links", 0, "link"), "{{otel.trace_id.value}}"),
    "jaeger-ui-config.json": (("linkPatterns", 0, "url"), "#{traceID}"),
    "jaeger-ui-config.json#tags": (("linkPatterns", 1, "url"), "#{trace.traceID}"),
}


def template(name: str) -> tuple[str, str]:
    """The URL template of one file and its placeholder."""
    path, placeholder = TEMPLATES[name]
    value = json.loads((DASHBOARDS / name.split("#")[0]).read_text(encoding="utf-8"))
    for step in path:
        value = value[step]
    return value, placeholder


def filled(name: str, trace_id: str) -> str:
    """The URL the tool opens for a row or span of this trace."""
    url, placeholder = template(name)
    assert url.count(placeholder) == 1 and url.startswith(VIEWER + "?run="), url
    return url.replace(placeholder, trace_id)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_a_template_makes_a_url_that_opens_the_run(name, good_dir):
    runs = build_index([str(good_dir)]).runs
    url = filled(name, h.DEEP_TRACE)
    (wanted,) = parse_qs(urlsplit(url).query)[links.RUN]
    run = links.linked(runs, wanted)
    assert run is not None and (run.trace_id, run.span_id) == (h.DEEP_TRACE, h.DEEP_SPAN)


def test_datadogs_decimal_ids_open_the_run_too(good_dir):
    """Datadog's trace view shows a trace id as the decimal of its low 64 bits (span ids likewise)."""
    runs = build_index([str(good_dir)]).runs
    for decimal in (str(int(h.DEEP_TRACE[-16:], 16)), str(int(h.DEEP_SPAN, 16))):
        run = links.linked(runs, decimal)
        assert run is not None and run.span_id == h.DEEP_SPAN, decimal
    assert links.linked(runs, "12345678901234567890123") is None  # no run has this id, decimal or hex
