"""The generation at a glance: per-sequence aggregates and the summary over diagnosed sequences.

Shared by the builder, re-diagnosis (:func:`diagnose_report`) and ``corevital migrate``.
"""

from __future__ import annotations

from .. import signals as sig
from ._model import TIMELINE_SERIES, Aggregates, SequenceReport, Summary, Timeline


def aggregates(timeline: Timeline) -> Aggregates:
    """Order statistics of one timeline (non-finite steps skipped)."""
    return Aggregates(
        entropy_mean=sig.mean(timeline.entropy),
        entropy_max=sig.maximum(timeline.entropy),
        entropy_p95=sig.percentile(timeline.entropy, 95),
        perplexity_mean=sig.mean(timeline.perplexity),
        surprisal_mean=sig.mean(timeline.surprisal),
        surprisal_max=sig.maximum(timeline.surprisal),
        top1_prob_mean=sig.mean(timeline.top1_prob),
        margin_mean=sig.mean(timeline.margin),
        margin_min=sig.minimum(timeline.margin),
        topk_mass_mean=sig.mean(timeline.topk_mass),
    )


def finish_summary(sequences: list[SequenceReport]) -> Summary:
    """The summary of diagnosed sequences: worst risk and uncertainty, union of flags, pooled aggregates, narrative."""
    summary = Summary()
    fired: list[str] = []
    for seq in sequences:
        for name in seq.flags.fired():
            if name not in fired:
                fired.append(name)
    summary.flags = fired
    scored = [s for s in sequences if s.risk is not None]
    if scored:
        worst = max(scored, key=lambda s: s.risk.score)  # type: ignore[union-attr]
        summary.risk_score = worst.risk.score  # type: ignore[union-attr]
        summary.risk_level = worst.risk.level  # type: ignore[union-attr]
        summary.riskiest_sequence = worst.index
    uncertain = [s for s in sequences if s.uncertainty is not None]
    if uncertain:
        most = max(uncertain, key=lambda s: s.uncertainty.score)  # type: ignore[union-attr]
        summary.uncertainty = most.uncertainty.score  # type: ignore[union-attr]
        summary.uncertain_sequence = most.index
    pooled = Timeline()
    for seq in sequences:
        for name in TIMELINE_SERIES:
            getattr(pooled, name).extend(getattr(seq.timeline, name))
    summary.aggregates = aggregates(pooled)
    _diagnosis_summary(sequences, summary)
    return summary


def _diagnosis_summary(sequences: list[SequenceReport], summary: Summary) -> None:
    """The diagnosis parts of the summary: the riskiest sequence's narrative and blame, union of signals."""
    riskiest = (
        sequences[summary.riskiest_sequence]
        if summary.riskiest_sequence is not None
        else (sequences[0] if sequences else None)
    )
    if riskiest is not None and riskiest.diagnosis is not None:
        summary.narrative = riskiest.diagnosis.narrative or None
        summary.blamed_layers = [b.layer for b in riskiest.diagnosis.blame]
    for seq in sequences:
        if seq.diagnosis is None:
            continue
        for c in seq.diagnosis.compound:
            if c.name not in summary.compound:
                summary.compound.append(c.name)
        for w in seq.diagnosis.warnings:
            if w.name not in summary.warnings:
                summary.warnings.append(w.name)
