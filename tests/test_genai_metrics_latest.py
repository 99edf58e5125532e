"""GenAI metrics under the newest conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``).

The opt-in renames the client metrics (``gen_ai.client.inference.*``): duration, time to first chunk, time per
output chunk, token usage as counters by modality and the per-operation token histograms. Without it the current
names stay. CoreVital's own metrics keep their names either way.
"""

from __future__ import annotations

import pytest
import torch

from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7], [3, 8, 5, 9, 2]])
CURRENT = {
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "gen_ai.server.time_to_first_token",
    "gen_ai.server.time_per_output_token",
}
LATEST = {
    "gen_ai.client.inference.duration",
    "gen_ai.client.inference.time_to_first_chunk",
    "gen_ai.client.inference.time_per_output_chunk",
    "gen_ai.client.inference.usage.input_tokens",
    "gen_ai.client.inference.usage.output_tokens",
    "gen_ai.client.inference.operation.input_tokens",
    "gen_ai.client.inference.operation.output_tokens",
}


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama")


def generate(model):
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=6, min_new_tokens=6)


def test_without_the_opt_in_the_current_names_stay(model):
    with TelemetryCapture() as tc:
        generate(model)
    names = set(tc.metrics())
    assert CURRENT <= names and not names & LATEST
    assert {"corevital.risk.score", "corevital.token.entropy"} <= names


def test_the_opt_in_renames_the_genai_metrics(model):
    with TelemetryCapture(semconv_opt_in="gen_ai_latest_experimental") as tc:
        generate(model)
    metrics = tc.metrics()
    names = set(metrics)
    assert LATEST <= names and not names & CURRENT
    assert {"corevital.risk.score", "corevital.token.entropy"} <= names  # ours keep their names
    (report,) = tc.reports
    # 2 rows x 5 prompt tokens in, 2 rows x 6 new tokens out
    for name, tokens in (("input_tokens", 10), ("output_tokens", 12)):
        (point,) = metrics[f"gen_ai.client.inference.usage.{name}"].data.data_points
        assert point.value == tokens
        assert point.attributes["gen_ai.token.modality"] == "text"
        assert metrics[f"gen_ai.client.inference.usage.{name}"].unit == "{token}"
        (histogram,) = metrics[f"gen_ai.client.inference.operation.{name}"].data.data_points
        assert (histogram.count, histogram.sum) == (1, tokens)
        assert "gen_ai.token.modality" not in histogram.attributes  # percentiles across modalities do not add up
    (duration,) = metrics["gen_ai.client.inference.duration"].data.data_points
    assert duration.count == 1 and duration.sum == pytest.approx(report.timings.duration_s)
    assert duration.attributes["gen_ai.operation.name"] == report.request.operation
    assert list(duration.explicit_bounds)[:3] == [0.01, 0.02, 0.04]


def test_a_failed_call_counts_zero_tokens_of_unknown_modality():
    model = tiny_causal_lm("llama")

    def broken_forward(*args, **kwargs):
        raise RuntimeError("device fell over")

    model.forward = broken_forward
    with TelemetryCapture(semconv_opt_in="gen_ai_latest_experimental") as tc:
        with pytest.raises(RuntimeError):
            generate(model)
    metrics = tc.metrics()
    (duration,) = metrics["gen_ai.client.inference.duration"].data.data_points
    assert duration.attributes["error.type"] == "RuntimeError"
    for name in ("input_tokens", "output_tokens"):
        (point,) = metrics[f"gen_ai.client.inference.usage.{name}"].data.data_points
        assert point.value == 0
        assert point.attributes["gen_ai.token.modality"] == "unknown"
        assert point.attributes["error.type"] == "RuntimeError"
