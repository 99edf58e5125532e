"""Metric instruments: GenAI client/server metrics plus CoreVital's risk and flags.

Only bounded attributes reach metrics: operation, provider, model names,
``error.type``, the token type and a flag name from a fixed set. The Python
SDK has no cardinality limit of its own, so this bound is ours to keep.
Measurements are recorded inside the generation span's context so exemplars
link histogram buckets to traces.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from opentelemetry.metrics import Meter

from ..report import Report
from . import _names as n
from ._layers import layer_values


class Instruments:
    def __init__(self, meter: Meter, layer_metrics: bool = False) -> None:
        self.duration = meter.create_histogram(
            n.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(n.DURATION_BUCKETS),
        )
        self.token_usage = meter.create_histogram(
            n.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(n.TOKEN_BUCKETS),
        )
        self.ttft = meter.create_histogram(
            n.METRIC_TIME_TO_FIRST_TOKEN,
            unit="s",
            description="Time to generate the first token, measured on the device",
            explicit_bucket_boundaries_advisory=list(n.TTFT_BUCKETS),
        )
        self.tpot = meter.create_histogram(
            n.METRIC_TIME_PER_OUTPUT_TOKEN,
            unit="s",
            description="Mean time per output token after the first, measured per step on the device",
            explicit_bucket_boundaries_advisory=list(n.TPOT_BUCKETS),
        )
        self.risk = meter.create_histogram(
            n.METRIC_RISK_SCORE,
            unit="1",
            description="CoreVital risk score of each generation (0 healthy .. 1 failing)",
            explicit_bucket_boundaries_advisory=list(n.RISK_BUCKETS),
        )
        self.flags = meter.create_counter(
            n.METRIC_HEALTH_FLAGS,
            unit="{flag}",
            description="Generations on which a CoreVital health flag fired, by flag",
        )
        self.token_entropy = meter.create_histogram(
            n.METRIC_TOKEN_ENTROPY,
            unit="bit",
            description="Entropy of the next-token distribution at every generated token",
            explicit_bucket_boundaries_advisory=list(n.ENTROPY_BUCKETS),
        )
        self.layer_norm = None
        if layer_metrics:
            self.layer_norm = meter.create_histogram(
                n.METRIC_LAYER_HIDDEN_NORM,
                unit="1",
                description="L2 norm of each captured decoder layer's hidden state, per step, by layer index",
                explicit_bucket_boundaries_advisory=list(n.NORM_BUCKETS),
            )

    def record(self, report: Report, base: dict[str, Any]) -> None:
        self.duration.record(report.timings.duration_s, base)
        self.token_usage.record(report.usage.input_tokens, {**base, n.TOKEN_TYPE: "input"})
        self.token_usage.record(report.usage.output_tokens, {**base, n.TOKEN_TYPE: "output"})
        ttft = report.timings.time_to_first_token_s
        if ttft is not None and math.isfinite(ttft):
            self.ttft.record(ttft, base)
        tpot = report.timings.time_per_output_token_s
        if tpot is not None and math.isfinite(tpot):
            self.tpot.record(tpot, base)
        score = report.summary.risk_score
        if score is not None and math.isfinite(score):
            self.risk.record(score, base)
        for flag in report.summary.flags:
            self.flags.add(1, {**base, n.FLAG_ATTRIBUTE: flag})
        for sequence in report.sequences:
            for value in sequence.timeline.entropy:
                if value is not None and math.isfinite(value):
                    self.token_entropy.record(value, base)
            if self.layer_norm is not None:
                for layer, value in layer_values(sequence, "hidden_norm"):
                    self.layer_norm.record(value, {**base, n.LAYER_INDEX: layer})

    def record_failure(self, duration_s: float, base: dict[str, Any], error_type: str) -> None:
        self.duration.record(duration_s, {**base, n.ERROR_TYPE: error_type})


class FanOutInstruments:
    """Records every measurement into several meters (the user's, plus Prometheus' for example)."""

    def __init__(self, members: Sequence[Instruments]) -> None:
        self.members = list(members)

    def record(self, report: Report, base: dict[str, Any]) -> None:
        for member in self.members:
            member.record(report, base)

    def record_failure(self, duration_s: float, base: dict[str, Any], error_type: str) -> None:
        for member in self.members:
            member.record_failure(duration_s, base, error_type)


def metric_attributes(operation: str, model: str) -> dict[str, Any]:
    return {
        n.OPERATION_NAME: operation,
        n.PROVIDER_NAME: n.PROVIDER,
        n.REQUEST_MODEL: model,
        n.RESPONSE_MODEL: model,
    }
