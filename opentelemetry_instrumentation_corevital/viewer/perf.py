"""Performance figures of a run: time to first token, per-token time, step durations, overhead.

Step durations come from the report's ``timings.step_end_s`` (every step) or
the span's ``corevital.step.duration`` (thinned like the other series); step
0 includes the prefill. Overhead figures are whatever the files carry:
``corevital.perf.*`` span attributes and a report ``perf`` section, shown as
they are, since this viewer does not compute overhead itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import names as n
from . import otlp
from .index import RunDetail

PERF_PREFIX = n.CV + "perf."


@dataclass
class Perf:
    """One run's timings as the performance tab shows them."""

    duration_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    output_tokens: int | None
    step_durations: list[float | None] = field(default_factory=list)
    step_stride: int = 1
    overhead: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of the whole generation, when both are known."""
        if self.output_tokens and self.duration_s:
            return self.output_tokens / self.duration_s
        return None

    @property
    def ratio(self) -> float | None:
        """Instrumented over plain generate time (``corevital run --perf strict``), when measured."""
        for key in ("perf.ratio", PERF_PREFIX + "ratio"):
            value = otlp.finite(self.overhead.get(key))
            if value is not None:
                return value
        return None

    @property
    def prefill_s(self) -> float | None:
        """Step 0's duration: the prompt pass and the first token."""
        return self.step_durations[0] if self.step_durations else None

    def step_rows(self) -> list[dict[str, Any]]:
        """One row per captured step with its duration in milliseconds, for charts."""
        return [
            {"step": i * self.step_stride, "duration (ms)": d * 1000 if d is not None else None}
            for i, d in enumerate(self.step_durations)
        ]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def perf(detail: RunDetail) -> Perf:
    """A run's timings, step durations and measured overhead, from whatever its files hold."""
    s = detail.summary
    result = Perf(duration_s=s.duration_s, ttft_s=s.ttft_s, tpot_s=s.tpot_s, output_tokens=s.output_tokens)
    report = detail.report or {}
    timings = otlp.typed(report, "timings", dict, {})
    ends = timings.get("step_end_s")
    span = detail.span or {}
    if isinstance(ends, list) and ends:
        clean = [otlp.finite(e) for e in ends]
        result.step_durations = [
            (b - a) if a is not None and b is not None else None for a, b in zip([0.0] + clean[:-1], clean)
        ]
    elif isinstance(span.get(n.STEP_DURATION), list):
        result.step_durations = [otlp.finite(d) for d in span[n.STEP_DURATION]]
        result.step_stride = _duration_stride(span, len(result.step_durations))
    if report.get("perf") is not None:
        _flatten("perf", report.get("perf"), result.overhead)
    for key, value in span.items():
        # The span repeats the report's perf section as corevital.perf.*; keep only what the report lacks.
        if key.startswith(PERF_PREFIX) and result.overhead.get("perf." + key[len(PERF_PREFIX) :]) != value:
            result.overhead[key] = value
    return result


def _duration_stride(span: dict[str, Any], kept: int) -> int:
    """The stride the span thinned step durations with.

    Durations (one per decoding step) are thinned on their own: with one
    sequence that is the timeline's stride; with several, the step count is
    the longest sequence's, so the stride is ``ceil(steps / kept)``.
    """
    stride = otlp.typed(span, n.TIMELINE_STRIDE, int, 1)
    lengths = span.get(n.TIMELINE_LENGTHS)
    if not isinstance(lengths, list) or len(lengths) <= 1 or not kept:
        return stride
    steps = max(lengths) * stride
    return max(1, -(-steps // kept)) if steps > kept else 1
