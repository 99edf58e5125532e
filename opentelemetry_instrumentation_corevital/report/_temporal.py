"""Findings over time: compound signals (several signals moving together) and early warnings (CUSUM alarms).

Split from the diagnosis by idea. Both read the per-step timeline and, where the capture has it, the
per-layer attention of a sequence; what they could not check is named in ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..signals import compound as compound_mod
from ..signals import layers as layer_sig
from ..signals import trend
from ..signals.profiles import DiagnosisThresholds
from ._model import LayerSeries, Timeline

NO_ATTENTION = "no attention data in this report (capture='full' has it)"
NO_COLLAPSE = "no collapsed-head share in this report (capture='full' has it)"


def at_steps(layers: LayerSeries, row: Sequence[float | None], n: int) -> list[float | None]:
    """A layer row as a per-generation-step list (None at steps without layer data)."""
    out: list[float | None] = [None] * n
    for step, value in zip(layers.steps, row):
        if step < n:
            out[step] = value
    return out


def prompt_share(layers: LayerSeries, n: int) -> list[float | None] | None:
    """Per step, attention on prompt keys as a share of the non-sink attention, mean over captured layers."""
    if layers.attn_prompt_mass is None or layers.attn_sink_mass is None:
        return None
    per_step: list[float | None] = []
    for j in range(len(layers.steps)):
        shares = []
        for prompt_row, sink_row in zip(layers.attn_prompt_mass, layers.attn_sink_mass):
            p, s = prompt_row[j], sink_row[j]
            if p is not None and s is not None and s < 0.999:
                shares.append(max(0.0, p - s) / (1.0 - s))
        per_step.append(sum(shares) / len(shares) if shares else None)
    return at_steps(layers, per_step, n)


def temporal_findings(
    timeline: Timeline,
    layers: LayerSeries | None,
    th: DiagnosisThresholds,
    copied: Sequence[bool] | None,
    unavailable: dict[str, str],
) -> tuple[list[compound_mod.CompoundSignal], list[trend.EarlyWarning]]:
    """The compound signals and early warnings of one sequence with logit signals; gaps go into ``unavailable``."""
    entropy, margin, surprisal = timeline.entropy, timeline.margin, timeline.surprisal
    steps = len(entropy)
    found: list[compound_mod.CompoundSignal] = []
    collapsed_share = (
        at_steps(layers, layer_sig.collapsed_share_per_step(layers.attn_collapsed_fraction), steps)
        if layers is not None and layers.attn_collapsed_fraction is not None
        else None
    )
    if copied is not None:
        signal = compound_mod.confident_repetition(
            entropy,
            timeline.top1_prob,
            copied[:steps],
            window=th.window,
            max_entropy_bits=th.confident_repetition_entropy_bits,
            min_copied_share=th.confident_repetition_copied_share,
        )
        if signal is not None:
            found.append(signal)
    share = prompt_share(layers, steps) if layers is not None else None
    if share is not None:
        signal = compound_mod.context_loss(
            share,
            entropy,
            window=th.window,
            min_ratio=th.context_loss_ratio,
            entropy_rise_bits=th.context_loss_entropy_rise_bits,
        )
        if signal is not None:
            found.append(signal)
    else:
        unavailable["context_loss"] = NO_ATTENTION
    signal = compound_mod.degeneration(
        entropy,
        margin,
        surprisal,
        window=th.window,
        entropy_slope=th.degeneration_entropy_slope,
        margin_slope=th.degeneration_margin_slope,
        surprisal_slope=th.degeneration_surprisal_slope,
    )
    if signal is not None:
        found.append(signal)
    if collapsed_share is not None:
        signal = compound_mod.attention_bottleneck(
            collapsed_share,
            entropy,
            window=th.window,
            min_share=th.attention_collapse_share / 2,
            min_entropy_bits=th.high_entropy_bits,
        )
        if signal is not None:
            found.append(signal)
    else:
        unavailable["attention_bottleneck"] = NO_COLLAPSE
    warnings = [
        w
        for w in (
            trend.entropy_acceleration(
                entropy,
                window=th.window,
                slack_bits=th.entropy_cusum_slack_bits,
                threshold_bits=th.entropy_cusum_threshold_bits,
                reference_bits=th.entropy_reference_bits,
            ),
            trend.margin_collapse(
                margin,
                window=th.window,
                slack=th.margin_cusum_slack,
                threshold=th.margin_cusum_threshold,
                reference=th.margin_reference,
            ),
        )
        if w is not None
    ]
    return found, warnings
