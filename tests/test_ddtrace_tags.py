"""The ddtrace route's tag budget: ddtrace turns every element of a sequence attribute into a tag of its own
(``key.0``, ``key.1``, ...), so bulky per-step arrays must not reach a ddtrace span; they travel in the report, the
log records and the OTLP routes. A real ddtrace (its OpenTelemetry ``TracerProvider``, ``exporters="ddtrace"``) runs
in a subprocess; a ``TraceFilter`` (ddtrace's own extension point) hands back the finished spans' tags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ._services import ROOT
from .conftest import free_port

APP = r"""
import json, torch
from ddtrace.trace import TraceFilter, tracer
from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm

spans = []


class Keep(TraceFilter):
    def process_trace(self, trace):
        spans.extend({"resource": s.resource, "meta": dict(s.get_tags()), "metrics": dict(s.get_metrics())}
                     for s in trace)
        return None  # nothing to send


tracer.configure(trace_processors=[Keep()])
model = tiny_causal_lm("llama", seed=0)
reports = []
config = configure(exporters="ddtrace")
CoreVitalInstrumentor().instrument(capture="CAPTURE", **config.instrument_kwargs(on_report=reports.append))
prompt = torch.tensor([[1, 17, 42, 99, 7]])
model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
CoreVitalInstrumentor().uninstrument()
config.shutdown()
tracer.flush()
print(json.dumps({"spans": spans, "report": reports[0].to_dict()}))
"""


def ddtrace_generation(tmp_path, capture: str) -> tuple[dict, dict]:
    script = tmp_path / "app.py"
    script.write_text(APP.replace("CAPTURE", capture))
    env = {
        **os.environ,
        "DD_TRACE_OTEL_ENABLED": "true",
        "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{free_port()}",  # closed: the filter keeps everything here
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
        "DD_TRACE_STARTUP_LOGS": "false",
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (span,) = [s for s in out["spans"] if s["resource"] == "text_completion llama"]
    return span, out["report"]


def test_no_per_step_array_becomes_ddtrace_tags(tmp_path):
    """24 tokens, summary and full: no ``corevital.*`` sequence is flattened; the scalars are all there, as many
    ``corevital.*`` and ``gen_ai.*`` tags as docs/backends.md's budget says."""
    docs = (Path(ROOT) / "docs" / "backends.md").read_text(encoding="utf-8")
    pattern = r"\*\*(\d+) tags\*\* \(\d+ `corevital\.\*`, \d+ `gen_ai\.\*`\) in `summary`, \*\*(\d+)\*\* with"
    (budget,) = re.findall(pattern, docs)
    for capture, documented in zip(("summary", "full"), budget):
        span, report = ddtrace_generation(tmp_path, capture)
        tags = {**span["meta"], **span["metrics"]}
        flattened = sorted(k for k in tags if k.startswith("corevital.") and re.search(r"\.\d+$", k))
        assert flattened == [], capture
        assert tags["corevital.risk.score"] == report["summary"]["risk_score"]
        assert tags["corevital.risk.level"] == report["summary"]["risk_level"]
        assert tags["corevital.entropy.mean"] == report["summary"]["aggregates"]["entropy_mean"]
        assert tags["corevital.narrative"] == report["summary"]["narrative"]
        assert tags["gen_ai.usage.output_tokens"] == 24
        assert tags["gen_ai.response.finish_reasons.0"] == "length"  # the GenAI keys as they are
        assert len([k for k in tags if k.startswith(("corevital.", "gen_ai."))]) == int(documented), capture
