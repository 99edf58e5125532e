"""Metric instruments: GenAI client/server metrics plus CoreVital's risk and flags.

Only bounded attributes reach metrics: operation, provider, model names,
``error.type``, the token type and a flag name from a fixed set. The Python
SDK has no cardinality limit of its own, so this bound is ours to keep.
Measurements are recorded inside the generation span's context so exemplars
link histogram buckets to traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Meter

from .. import names as n
from ..report import Report, pause
from ..signals import is_finite

#: Hidden-state norms span orders of magnitude across models: powers of two from 1/4 to 16384.
LAYER_NORM_BUCKETS = tuple(2.0**e for e in range(-2, 15))
UNIT_BUCKETS = (0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class MetricSpec:
    """One instrument: a histogram with advisory buckets, or a counter when ``buckets`` is None."""

    name: str
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None

    def create(self, meter: Meter) -> Any:
        """The instrument on ``meter``."""
        if self.buckets is None:
            return meter.create_counter(self.name, unit=self.unit, description=self.description)
        return meter.create_histogram(
            self.name,
            unit=self.unit,
            description=self.description,
            explicit_bucket_boundaries_advisory=list(self.buckets),
        )


#: Every generation's instruments, by the key :meth:`Instruments.record` uses.
GENERATION_METRICS = {
    "duration": MetricSpec(n.METRIC_OPERATION_DURATION, "s", "GenAI operation duration", n.DURATION_BUCKETS),
    "token_usage": MetricSpec(
        n.METRIC_TOKEN_USAGE, "{token}", "Number of input and output tokens used", n.TOKEN_BUCKETS
    ),
    "ttft": MetricSpec(
        n.METRIC_TIME_TO_FIRST_TOKEN, "s", "Time to generate the first token, measured on the device", n.TTFT_BUCKETS
    ),
    "tpot": MetricSpec(
        n.METRIC_TIME_PER_OUTPUT_TOKEN,
        "s",
        "Mean time per output token after the first, measured per step on the device",
        n.TPOT_BUCKETS,
    ),
    "risk": MetricSpec(
        n.METRIC_RISK_SCORE, "1", "CoreVital risk score of each generation (0 healthy .. 1 failing)", n.RISK_BUCKETS
    ),
    "uncertainty": MetricSpec(
        n.METRIC_UNCERTAINTY_SCORE,
        "1",
        "CoreVital answer uncertainty of each generation (0 confident .. 1 likely wrong; capture full)",
        n.RISK_BUCKETS,
    ),
    "flags": MetricSpec(n.METRIC_HEALTH_FLAGS, "{flag}", "Generations on which a CoreVital health flag fired, by flag"),
    "token_entropy": MetricSpec(
        n.METRIC_TOKEN_ENTROPY,
        "bit",
        "Entropy of the next-token distribution at every generated token",
        n.ENTROPY_BUCKETS,
    ),
}
#: The same measurements under the newest GenAI conventions (``gen_ai_latest_experimental``): these replace
#: ``duration``, ``token_usage``, ``ttft`` and ``tpot``; usage counts are counters by modality, and their per-call
#: distribution is a histogram without it.
LATEST_METRICS = {
    "duration": MetricSpec(
        n.METRIC_INFERENCE_DURATION, "s", "GenAI client inference operation duration", n.DURATION_BUCKETS
    ),
    "ttft": MetricSpec(
        n.METRIC_INFERENCE_TIME_TO_FIRST_CHUNK,
        "s",
        "Time to the first output chunk (token), measured on the device",
        n.TTFT_BUCKETS,
    ),
    "tpot": MetricSpec(
        n.METRIC_INFERENCE_TIME_PER_OUTPUT_CHUNK,
        "s",
        "Mean time per output chunk (token) after the first, measured per step on the device",
        n.TPOT_BUCKETS,
    ),
    "usage_input": MetricSpec(n.METRIC_INFERENCE_USAGE_INPUT, "{token}", "Input (prompt) tokens used"),
    "usage_output": MetricSpec(n.METRIC_INFERENCE_USAGE_OUTPUT, "{token}", "Output (completion) tokens used"),
    "operation_input": MetricSpec(
        n.METRIC_INFERENCE_OPERATION_INPUT, "{token}", "Input tokens of each inference operation", n.TOKEN_BUCKETS
    ),
    "operation_output": MetricSpec(
        n.METRIC_INFERENCE_OPERATION_OUTPUT, "{token}", "Output tokens of each inference operation", n.TOKEN_BUCKETS
    ),
}
#: The GenAI metrics the newest conventions rename (the rest are CoreVital's and keep their names).
_RENAMED = ("duration", "token_usage", "ttft", "tpot")
#: CoreVital's own failures, by stage: a call that lost telemetry counts once per failed stage.
CALL_ERRORS = MetricSpec(
    n.METRIC_INTERNAL_CALL_ERRORS,
    "{error}",
    "Failures inside CoreVital that cost a call its telemetry (never its output), by stage",
)
#: Per-layer histograms (full capture), by ``LayerSeries`` field: one measurement per layer per sequence.
LAYER_HISTOGRAMS = {
    "hidden_norm": MetricSpec(
        n.METRIC_LAYER_PREFIX + "hidden_norm",
        "1",
        "Mean L2 norm of a decoder layer's new-token hidden state over a generation (full capture)",
        LAYER_NORM_BUCKETS,
    ),
    "attn_entropy": MetricSpec(
        n.METRIC_LAYER_PREFIX + "attn_entropy",
        "1",
        "Mean normalised attention entropy of a decoder layer over a generation (full capture)",
        UNIT_BUCKETS,
    ),
    "attn_collapsed_fraction": MetricSpec(
        n.METRIC_LAYER_PREFIX + "attn_collapsed_fraction",
        "1",
        "Mean share of collapsed attention heads of a decoder layer over a generation (full capture)",
        UNIT_BUCKETS,
    ),
}


class Instruments:
    """The metric instruments of one meter, created once from the tables above (``latest``: the GenAI metrics
    under the newest conventions' names, as with ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``)."""

    def __init__(self, meter: Meter, latest: bool = False) -> None:
        specs = dict(GENERATION_METRICS)
        if latest:
            specs = {k: v for k, v in specs.items() if k not in _RENAMED} | LATEST_METRICS
        self.latest = latest
        self.generation = {key: spec.create(meter) for key, spec in specs.items()}
        self.layers = {name: spec.create(meter) for name, spec in LAYER_HISTOGRAMS.items()}
        self.call_errors = CALL_ERRORS.create(meter)

    def record(self, report: Report, base: dict[str, Any]) -> None:
        """Every generation's measurements, with the bounded ``base`` attributes."""
        m = self.generation
        m["duration"].record(report.timings.duration_s, base)
        self._record_usage(report.usage.input_tokens, report.usage.output_tokens, base, "text")
        for key, value in (
            ("ttft", report.timings.time_to_first_token_s),
            ("tpot", report.timings.time_per_output_token_s),
            ("risk", report.summary.risk_score),
            ("uncertainty", report.summary.uncertainty),
        ):
            if is_finite(value):
                m[key].record(value, base)
        for flag in report.summary.flags:
            if flag in n.FLAG_NAMES:  # the attribute's value set stays bounded whatever a report holds
                m["flags"].add(1, {**base, n.FLAG_ATTRIBUTE: flag})
        for sequence in report.sequences:
            pause()
            for value in sequence.timeline.entropy:
                if is_finite(value):
                    m["token_entropy"].record(value, base)

    def record_layers(self, report: Report, base: dict[str, Any], groups: int = 0) -> None:
        """One measurement per captured layer per sequence (the mean over its steps), labelled by its group of
        consecutive layers when ``groups`` > 0 (at most ``groups`` series per metric), else by its index."""
        for seq in report.sequences:
            layers = seq.layers
            if layers is None:
                continue
            labels = layer_labels(list(layers.indices), groups)
            for name, histogram in self.layers.items():
                matrix = getattr(layers, name, None)
                if matrix is None:
                    continue
                for label, values in zip(labels, matrix):
                    finite = [v for v in values if v is not None]  # report values are finite or None
                    if finite:
                        histogram.record(sum(finite) / len(finite), {**base, **label})

    def record_failure(self, duration_s: float, base: dict[str, Any], error_type: str) -> None:
        """A failed generation counts in the duration histogram, with its ``error.type`` (and, under the newest
        conventions, as zero tokens of unknown modality, as they ask for failed operations)."""
        self.generation["duration"].record(duration_s, {**base, n.ERROR_TYPE: error_type})
        if self.latest:
            failed = {**base, n.ERROR_TYPE: error_type}
            self.generation["usage_input"].add(0, {**failed, n.TOKEN_MODALITY: "unknown"})
            self.generation["usage_output"].add(0, {**failed, n.TOKEN_MODALITY: "unknown"})

    def _record_usage(self, input_tokens: int, output_tokens: int, base: dict[str, Any], modality: str) -> None:
        m = self.generation
        if not self.latest:
            m["token_usage"].record(input_tokens, {**base, n.TOKEN_TYPE: "input"})
            m["token_usage"].record(output_tokens, {**base, n.TOKEN_TYPE: "output"})
            return
        m["usage_input"].add(input_tokens, {**base, n.TOKEN_MODALITY: modality})
        m["usage_output"].add(output_tokens, {**base, n.TOKEN_MODALITY: modality})
        m["operation_input"].record(input_tokens, base)
        m["operation_output"].record(output_tokens, base)

    def record_call_error(self, stage: str) -> None:
        """One failure inside CoreVital at ``stage`` (a value of ``names.CALL_STAGES``, so the count stays bounded)."""
        if stage in n.CALL_STAGES:
            self.call_errors.add(1, {n.INTERNAL_STAGE: stage})


def layer_labels(indices: list[int], groups: int) -> list[dict[str, Any]]:
    """Each layer's metric attribute: its index (``groups`` 0), or the ``"first-last"`` indices of its group, the
    layers split into ``groups`` runs of consecutive layers as equal as can be (the first ones one longer)."""
    if groups <= 0:
        return [{n.LAYER_ATTRIBUTE: index} for index in indices]
    size, extra = divmod(len(indices), groups)
    labels: list[dict[str, Any]] = []
    start = 0
    for group in range(min(groups, len(indices))):
        run = indices[start : start + size + (group < extra)]
        labels += [{n.LAYER_GROUP_ATTRIBUTE: f"{run[0]}-{run[-1]}"}] * len(run)
        start += len(run)
    return labels


def metric_attributes(operation: str, model: str, provider: str = n.PROVIDER) -> dict[str, Any]:
    """The GenAI attributes every metric point carries: operation, provider and model."""
    return {
        n.OPERATION_NAME: operation,
        n.PROVIDER_NAME: provider,
        n.REQUEST_MODEL: model,
        n.RESPONSE_MODEL: model,
    }
