"""Metric instruments: GenAI client/server metrics plus CoreVital's risk and flags.

Only bounded attributes reach metrics: operation, provider, model names,
``error.type``, the token type and a flag name from a fixed set. The Python
SDK has no cardinality limit of its own, so this bound is ours to keep.
Measurements are recorded inside the generation span's context so exemplars
link histogram buckets to traces.
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.metrics import Meter

from ..report import Report
from .. import names as n


#: Hidden-state norms span orders of magnitude across models: powers of two from 1/4 to 16384.
LAYER_NORM_BUCKETS = tuple(2.0**e for e in range(-2, 15))
UNIT_BUCKETS = (0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class Instruments:
    def __init__(self, meter: Meter) -> None:
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
        self.layers = {
            "hidden_norm": meter.create_histogram(
                n.METRIC_LAYER_PREFIX + "hidden_norm",
                unit="1",
                description="Mean L2 norm of a decoder layer's new-token hidden state over a generation (full capture)",
                explicit_bucket_boundaries_advisory=list(LAYER_NORM_BUCKETS),
            ),
            "attn_entropy": meter.create_histogram(
                n.METRIC_LAYER_PREFIX + "attn_entropy",
                unit="1",
                description="Mean normalised attention entropy of a decoder layer over a generation (full capture)",
                explicit_bucket_boundaries_advisory=list(UNIT_BUCKETS),
            ),
            "attn_collapsed_fraction": meter.create_histogram(
                n.METRIC_LAYER_PREFIX + "attn_collapsed_fraction",
                unit="1",
                description="Mean share of collapsed attention heads of a decoder layer over a generation (full capture)",
                explicit_bucket_boundaries_advisory=list(UNIT_BUCKETS),
            ),
        }

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
            if flag in n.FLAG_NAMES:  # the attribute's value set stays bounded whatever a report holds
                self.flags.add(1, {**base, n.FLAG_ATTRIBUTE: flag})
        for sequence in report.sequences:
            for value in sequence.timeline.entropy:
                if value is not None and math.isfinite(value):
                    self.token_entropy.record(value, base)

    def record_layers(self, report: Report, base: dict[str, Any]) -> None:
        """One measurement per captured layer per sequence: the mean over its steps."""
        for seq in report.sequences:
            layers = seq.layers
            if layers is None:
                continue
            for name, histogram in self.layers.items():
                matrix = getattr(layers, name, None)
                if matrix is None:
                    continue
                for index, values in zip(layers.indices, matrix):
                    finite = [v for v in values if v is not None]  # report values are finite or None
                    if finite:
                        histogram.record(sum(finite) / len(finite), {**base, n.LAYER_ATTRIBUTE: index})

    def record_failure(self, duration_s: float, base: dict[str, Any], error_type: str) -> None:
        self.duration.record(duration_s, {**base, n.ERROR_TYPE: error_type})


def metric_attributes(operation: str, model: str) -> dict[str, Any]:
    return {
        n.OPERATION_NAME: operation,
        n.PROVIDER_NAME: n.PROVIDER,
        n.REQUEST_MODEL: model,
        n.RESPONSE_MODEL: model,
    }
