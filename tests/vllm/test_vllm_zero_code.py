"""Zero code with vLLM's defaults: ``opentelemetry-instrument python app.py``, the engine in a spawned process.

vLLM's engine core runs in a process of its own (``VLLM_ENABLE_V1_MULTIPROCESSING`` left on); the
auto-instrumentation runs in it too, so that process reports each request through CoreVital's exporters from
the environment. The app has no CoreVital code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import VLLM_MODEL

pytestmark = pytest.mark.slow

APP = """
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    llm = LLM(model={model!r}, enforce_eager=True, dtype="float32", max_model_len=2048)
    out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=5), use_tqdm=False)
    print("TOKENS", list(out[0].outputs[0].token_ids), flush=True)
"""


def test_opentelemetry_instrument_reports_from_vllms_engine_process(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP.format(model=VLLM_MODEL))
    out = tmp_path / "corevital-data"
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "VLLM_ENABLE_V1_MULTIPROCESSING" and not key.startswith("OTEL_")
    }
    env.update(
        OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS="otlp-json",
        OTEL_INSTRUMENTATION_COREVITAL_OUT=str(out),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    result = subprocess.run(
        [instrument, sys.executable, str(app)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tokens = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("TOKENS"))[7:])
    spans = [
        span
        for line in (out / "traces.jsonl").read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    (span,) = spans
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert span["name"].startswith("text_completion ")
    assert attrs["gen_ai.provider.name"] == {"stringValue": "vllm"}
    assert attrs["gen_ai.usage.output_tokens"] == {"intValue": str(len(tokens))}
    assert "corevital.risk.score" in attrs
