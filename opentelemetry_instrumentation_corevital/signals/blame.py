"""Layer blame: which layers are most responsible for what went wrong, each with reasons and a severity.

Reasons, each with a severity in [0, 1] (a layer's severity is the largest of its reasons):

* ``nonfinite`` (1.0) — at some step this was the first captured layer whose new-token state was NaN/inf:
  the fault enters the stack at or just before this layer.
* ``norm_spike`` — the mid-layer anomaly test found the layer's norm a factor r >= R off both neighbours, or
  off its own history from this layer to the output: severity 1 - 0.5 * ln R / ln r, i.e. 0.5 at the
  threshold, 0.75 at R squared.
* ``attention_collapse`` — on average over the run at least ``collapse_share`` of the layer's heads were
  collapsed: severity = that mean share.

Only layers with a severity of at least ``min_severity`` are blamed, the ``max_layers`` worst first, so a
healthy run blames nothing (the original CoreVital blamed 27 of 32 layers of a normal Llama run). A layer's
update ratio is deliberately not a reason: on SmolLM2 the layer that writes massive activations (layer 2)
changes the residual stream 13-17x more than its median on ordinary tokens of healthy runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .layers import LayerAnomaly, Matrix


@dataclass(frozen=True)
class BlameReason:
    """One reason a layer is blamed, with the measurement and a phrase for people."""

    code: str  # nonfinite, norm_spike, attention_collapse
    severity: float
    step: int | None  # first step where it showed (None for whole-run reasons)
    value: float  # the measurement behind it: a ratio, or a share
    detail: str  # one short phrase with the numbers


@dataclass(frozen=True)
class LayerBlame:
    """A blamed layer: its worst severity and every reason, worst first."""

    layer: int
    severity: float
    reasons: tuple[BlameReason, ...]


def spike_severity(ratio: float, threshold: float) -> float:
    """0.5 at the threshold ratio, rising towards 1 as the ratio grows (0 below the threshold)."""
    if ratio < threshold or threshold <= 1.0:
        return 0.0
    if not math.isfinite(ratio):
        return 1.0
    return 1.0 - 0.5 * math.log(threshold) / math.log(ratio)


def _nonfinite_reasons(
    norms: Matrix, nonfinite: Matrix | None, indices: Sequence[int], steps: Sequence[int]
) -> dict[int, BlameReason]:
    """At each step, the first captured layer whose state is non-finite: where the fault enters the stack."""
    found: dict[int, BlameReason] = {}
    if not any(None in row for row in norms) and (
        nonfinite is None or not any(v for row in nonfinite for v in row if v is not None)
    ):
        return found  # the common case, checked at C speed
    width = max((len(row) for row in norms), default=0)
    for j in range(width):
        for i, row in enumerate(norms):
            count = nonfinite[i][j] if nonfinite is not None and j < len(nonfinite[i]) else None
            if (j < len(row) and row[j] is None) or (count is not None and count > 0):
                found.setdefault(
                    indices[i],
                    BlameReason("nonfinite", 1.0, steps[j], math.inf, f"non-finite hidden state from step {steps[j]}"),
                )
                break
    return found


def blame_layers(
    *,
    indices: Sequence[int],
    steps: Sequence[int],
    hidden_norm: Matrix,
    anomalies: Sequence[LayerAnomaly] = (),
    norm_ratio: float,
    hidden_nonfinite: Matrix | None = None,
    collapsed: Matrix | None = None,
    collapse_share: float = 0.5,
    min_severity: float = 0.5,
    max_layers: int = 3,
) -> list[LayerBlame]:
    """The ``max_layers`` layers with the highest severity (at least ``min_severity``), worst first."""
    reasons: dict[int, list[BlameReason]] = {}

    def add(layer: int, reason: BlameReason) -> None:
        reasons.setdefault(layer, []).append(reason)

    for layer, reason in _nonfinite_reasons(hidden_norm, hidden_nonfinite, indices, steps).items():
        add(layer, reason)
    worst_spike: dict[int, LayerAnomaly] = {}
    for a in anomalies:
        if a.nonfinite:
            continue
        if a.layer not in worst_spike or abs(a.log_ratio) > abs(worst_spike[a.layer].log_ratio):
            worst_spike[a.layer] = a
    for layer, a in worst_spike.items():
        direction = "above" if a.log_ratio > 0 else "below"
        detail = (
            f"norm {a.ratio:.1f}x {direction} both neighbours at step {a.step}"
            if a.kind == "spike"
            else f"norm {a.ratio:.1f}x {direction} its usual level from here to the output at step {a.step}"
        )
        add(layer, BlameReason("norm_spike", spike_severity(a.ratio, norm_ratio), a.step, a.ratio, detail))
    if collapsed is not None:
        for i, row in enumerate(collapsed):
            values = [v for v in row if v is not None]
            if values and (share := sum(values) / len(values)) >= collapse_share:
                add(
                    indices[i],
                    BlameReason("attention_collapse", share, None, share, f"{share:.0%} of heads collapsed on average"),
                )
    blamed = []
    for layer, found in reasons.items():
        found.sort(key=lambda r: r.severity, reverse=True)
        severity = found[0].severity
        if severity >= min_severity:
            blamed.append(LayerBlame(layer, severity, tuple(found)))
    blamed.sort(key=lambda b: (-b.severity, b.layer))
    return blamed[:max_layers]
