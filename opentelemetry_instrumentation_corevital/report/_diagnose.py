"""Diagnosis of one sequence: flags, risk, compound signals, early warnings, layer blame, fingerprint, narrative.

A pure function of what the report already holds (timeline, per-layer
matrices, token ids) and a model profile, so it runs the same way inside
``build_report``, on a report converted by ``corevital migrate``, or again on
a stored report with other thresholds (:func:`diagnose_report`). Each part
uses whatever the capture has; what it could not check is named in
``flags.unavailable`` / ``diagnosis.unavailable`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .. import signals as sig
from ..signals import blame as blame_mod
from ..signals import layers as layer_sig
from ..signals.calibration import divergence, sequence_features
from ..signals.fingerprint import FINGERPRINT_VERSION, fingerprint
from ..signals.narrative import narrative
from ..signals.profiles import Profile, resolve_profile
from ..signals.repetition import copied_steps, find_loop, ngram_repeat_rate
from ..signals.uncertainty import answer_uncertainty
from ._findings import BlameReasonInfo, CompoundSignalInfo, Diagnosis, EarlyWarningInfo, Fingerprint, LayerBlameInfo
from ._model import (
    Flags,
    LayerSeries,
    Report,
    RiskFactor,
    RiskInfo,
    SequenceReport,
    Thresholds,
    Timeline,
    UncertaintyInfo,
    field_names,
)
from ._narrate import narrative_facts
from ._summary import finish_summary
from ._temporal import NO_COLLAPSE, at_steps, temporal_findings

NO_LAYERS = "no per-layer data in this report (capture='summary' and 'full' have it)"
NO_PREV_TOKEN = "needs the attention statistics (capture='full', attention captured)"
NO_TOKENS = "token ids are not in the report (content capture was off when it was built)"
#: What the token-based repetition check writes into ``Flags``: kept from the stored report when ids are absent.
REPETITION_FLAG_FIELDS = tuple(name for name in field_names(Flags) if name.startswith("repetition"))


def _repetition(flags: Flags, tokens: Sequence[int], layers: LayerSeries | None, th: Any) -> None:
    """Token loop (periodic ids or an n-gram near-loop) and hidden-state loop (the last layer's state repeating)."""
    n = len(tokens)
    loop = find_loop(
        tokens,
        min_cycles=th.repetition_min_cycles,
        min_tokens=th.repetition_min_tokens,
        max_period=th.repetition_max_period,
    )
    state = None
    if layers is None or not layers.hidden_norm:
        flags.unavailable["repetition_loop.hidden"] = NO_LAYERS
    elif any(b - a != 1 for a, b in zip(layers.steps, layers.steps[1:])):
        flags.unavailable["repetition_loop.hidden"] = "needs layer data at consecutive steps (step_stride 1)"
    else:
        cos = at_steps(layers, layers.hidden_cos_prev[-1], n) if layers.hidden_cos_prev else None
        flags.repetition_hidden_signal = "hidden_norm+hidden_cos_prev" if cos is not None else "hidden_norm"
        state = layer_sig.hidden_loop(
            at_steps(layers, layers.hidden_norm[-1], n),
            cos,
            window=th.repetition_hidden_window,
            max_period=th.repetition_max_period,
            norm_tolerance=th.repetition_hidden_norm_tolerance,
            cos_tolerance=th.repetition_hidden_cos_tolerance,
        )
    if loop is None and state is None:
        return
    flags.repetition_loop = True
    flags.repetition_evidence = (["tokens"] if loop else []) + (["hidden"] if state else [])
    if state is not None:
        flags.repetition_hidden_recurrence = state.recurrence
    if loop is not None:
        flags.repetition_onset_step, flags.repetition_period, flags.repetition_share = (
            loop.onset_step,
            loop.period,
            loop.share,
        )
        if state is not None:
            flags.repetition_onset_step = min(loop.onset_step, state.onset_step)
    else:
        assert state is not None
        flags.repetition_onset_step, flags.repetition_period = state.onset_step, state.period
        flags.repetition_share = (state.end_step + 1 - state.onset_step) / n if n else None


def _nonfinite(flags: Flags, timeline: Timeline, layers: LayerSeries | None) -> None:
    # No entropy at any step but a known surprisal: a client given log-probabilities without alternatives did not
    # measure the distribution (a non-finite one would make the surprisal non-finite too).
    unmeasured = all(v is None for v in timeline.entropy) and any(v is not None for v in timeline.surprisal)
    bad = sig.nan_or_inf(timeline.surprisal) if unmeasured else sig.nan_or_inf(timeline.entropy, timeline.top1_prob)
    flags.nan_or_inf, flags.nan_or_inf_steps, flags.nan_or_inf_first_step = bad.fired, bad.count, bad.first_step
    if layers is not None and layers.hidden_norm:
        # A layer whose new-token state is NaN/inf at a step is non-finite too (its norm is).
        layer_bad = sorted({layers.steps[j] for row in layers.hidden_norm for j, v in enumerate(row) if v is None})
        if layer_bad:
            steps = set(layer_bad)
            if bad.first_step is not None:
                steps.update(s for s, v in enumerate(timeline.entropy) if v is None)
            flags.nan_or_inf = True
            flags.nan_or_inf_steps = len(steps)
            flags.nan_or_inf_first_step = min(steps)


def _uncertainty(seq: SequenceReport, unavailable: dict[str, str]) -> UncertaintyInfo | None:
    """The answer's RAUQ uncertainty from the report's own series, or None with the reason in ``unavailable``."""
    layers, n = seq.layers, min(seq.output_tokens, len(seq.timeline.surprisal))
    if layers is None or layers.attn_prev_token is None:
        if seq.uncertainty is None:  # a stored report trimmed to summary detail keeps the score it was built with
            unavailable["uncertainty"] = NO_PREV_TOKEN
        return seq.uncertainty
    if layers.steps[:n] != list(range(n)):
        unavailable["uncertainty"] = "needs the attention of every step (layer_stride 1)"
        return None
    found = answer_uncertainty(seq.timeline.surprisal[:n], layers.attn_prev_token, layers.indices)
    if found is None:
        unavailable["uncertainty"] = "a token probability or attention weight is missing or not finite"
        return None
    return UncertaintyInfo(score=found.score, layer=found.layer, tokens=found.tokens)


def _calibrated_risk(risk: RiskInfo, seq: SequenceReport, profile: Profile) -> None:
    """Divergence from the profile's healthy baseline and, with a fitted map, the risk as a probability."""
    features = sequence_features(seq)
    if profile.baseline is not None:
        found = divergence(features, profile.baseline)
        if found is not None:
            risk.divergence = found.score
            risk.divergent_features = list(found.outliers)
    if profile.probability is not None and risk.forced_by is None:
        probability = profile.probability.probability(features)
        if probability is not None:  # a map whose features this capture lacks leaves the risk uncalibrated
            risk.uncalibrated_score, risk.score = risk.score, probability
            risk.level, risk.calibrated = sig.risk_level(probability), True


def diagnose_sequence(
    seq: SequenceReport,
    profile: Profile,
    *,
    tokens: Sequence[int] | None,
    signals: bool,
    decode: Callable[[list[int]], str] | None = None,
) -> None:
    """Fill ``seq.flags``, ``seq.risk`` and ``seq.diagnosis`` in place.

    ``tokens`` are the generated ids (the builder always has them; a stored report only with content capture —
    without them the token-based results already in the report are kept). ``signals``: the logit signals were
    captured (no risk otherwise).
    """
    th = profile.thresholds
    timeline, layers = seq.timeline, seq.layers
    previous_flags, previous = seq.flags, seq.diagnosis
    flags = Flags()
    diag = Diagnosis()

    # --- token-based: repetition, n-gram rate -----------------------------------------------------------
    if tokens is not None:
        _repetition(flags, tokens, layers, th)
        diag.ngram_repeat_rate = ngram_repeat_rate(tokens, th.ngram_n)
        diag.distinct_token_ratio = len(set(tokens)) / len(tokens) if tokens else None
        copied = copied_steps(tokens, th.ngram_n)
    else:
        for name in REPETITION_FLAG_FIELDS:
            setattr(flags, name, getattr(previous_flags, name))
        if previous is not None:
            diag.ngram_repeat_rate, diag.distinct_token_ratio = (
                previous.ngram_repeat_rate,
                previous.distinct_token_ratio,
            )
        if not flags.repetition_loop and (previous is None or previous.ngram_repeat_rate is None):
            flags.unavailable["repetition_loop"] = NO_TOKENS
        copied = None
        diag.unavailable["confident_repetition"] = NO_TOKENS

    # --- logit-based flags ------------------------------------------------------------------------------
    if signals:
        _nonfinite(flags, timeline, layers)
        high = sig.high_entropy_steps(timeline.entropy, th.high_entropy_bits)
        flags.high_entropy = high.longest_run >= th.high_entropy_min_run
        flags.high_entropy_steps = high.count
        flags.high_entropy_longest_run = high.longest_run
        flags.high_entropy_first_step = high.first_step

    # --- layer-based flags ------------------------------------------------------------------------------
    mid = None
    collapse = None
    if layers is not None and len(layers.hidden_norm) >= 3:
        mid = layer_sig.mid_layer_anomalies(layers.hidden_norm, layers.indices, layers.steps, th.mid_layer_norm_ratio)
        flags.mid_layer_anomaly = mid.fired
        flags.mid_layer_anomaly_layers = mid.layers
        flags.mid_layer_anomaly_first_step = mid.first_step
        flags.mid_layer_anomaly_ratio = math.exp(mid.max_log_ratio)
    else:
        flags.unavailable["mid_layer_anomaly"] = (
            NO_LAYERS
            if layers is None or not layers.hidden_norm
            else "needs hidden-state norms of at least 3 captured layers"
        )
    if layers is not None and layers.attn_collapsed_fraction is not None:
        collapse = layer_sig.attention_collapse(
            layers.attn_collapsed_fraction,
            layers.indices,
            layers.steps,
            th.attention_collapse_share,
            th.attention_collapse_min_steps,
        )
        flags.attention_collapse = collapse.fired
        flags.attention_collapse_onset_step = collapse.onset_step
        flags.attention_collapse_share = collapse.sustained_share
        flags.attention_collapse_peak_share = collapse.peak_share
    else:
        flags.unavailable["attention_collapse"] = NO_COLLAPSE
    seq.flags = flags

    # --- answer uncertainty (before the risk: a calibrated map may use it) ---------------------------------
    seq.uncertainty = _uncertainty(seq, diag.unavailable) if signals else None

    # --- risk -------------------------------------------------------------------------------------------
    agg = seq.aggregates
    if signals:
        values = {
            "entropy_mean": agg.entropy_mean,
            "margin_mean": agg.margin_mean,
            "surprisal_mean": agg.surprisal_mean,
            "ngram_repeat_rate": diag.ngram_repeat_rate,
            "repetition_share": (flags.repetition_share or 0.0)
            if flags.repetition_loop
            else (0.0 if tokens is not None or "repetition_loop" not in flags.unavailable else None),
            "mid_layer_norm_ratio": flags.mid_layer_anomaly_ratio
            if mid is not None and math.isfinite(mid.max_log_ratio)
            else None,
            "attention_collapse_share": flags.attention_collapse_share,
        }
        risk = sig.risk_score(values, nonfinite=flags.nan_or_inf, specs=profile.factors)
        seq.risk = RiskInfo(
            score=risk.score,
            level=risk.level,
            forced_by=risk.forced_by,
            factors=[
                RiskFactor(
                    f.name,
                    f.value,
                    f.score,
                    f.weight,
                    f.contribution,
                    f.description,
                    profile.factors[f.name].midpoint,
                    profile.factors[f.name].scale,
                )
                for f in risk.factors
            ],
        )
        if profile.baseline is not None or profile.probability is not None:
            _calibrated_risk(seq.risk, seq, profile)
    else:
        seq.risk = None

    # --- compound signals and early warnings --------------------------------------------------------------
    entropy, margin, surprisal = timeline.entropy, timeline.margin, timeline.surprisal
    found, warnings = temporal_findings(timeline, layers, th, copied, diag.unavailable) if signals else ([], [])
    diag.compound = [
        CompoundSignalInfo(c.name, c.onset_step, c.severity, dict(c.evidence))
        for c in sorted(found, key=lambda c: c.onset_step)
    ]
    diag.warnings = [EarlyWarningInfo(w.name, w.onset_step, w.detected_step, w.value, w.severity) for w in warnings]

    # --- layer blame ------------------------------------------------------------------------------------
    blamed: list[blame_mod.LayerBlame] = []
    if layers is not None and layers.hidden_norm:
        blamed = blame_mod.blame_layers(
            indices=layers.indices,
            steps=layers.steps,
            hidden_norm=layers.hidden_norm,
            anomalies=mid.anomalies if mid is not None else (),
            norm_ratio=th.mid_layer_norm_ratio,
            hidden_nonfinite=layers.hidden_nonfinite,
            collapsed=layers.attn_collapsed_fraction,
            collapse_share=th.blame_collapse_share,
            min_severity=th.blame_min_severity,
            max_layers=th.blame_max_layers,
        )
    else:
        diag.unavailable["blame"] = NO_LAYERS
    diag.blame = [
        LayerBlameInfo(
            b.layer,
            b.severity,
            [
                BlameReasonInfo(r.code, r.severity, r.value if math.isfinite(r.value) else None, r.detail, r.step)
                for r in b.reasons
            ],
        )
        for b in blamed
    ]

    # --- fingerprint ------------------------------------------------------------------------------------
    if signals:
        norms = layers.hidden_norm if layers is not None and layers.hidden_norm else None
        vector = fingerprint(
            entropy=entropy,
            margin=margin,
            surprisal=surprisal,
            topk_mass=timeline.topk_mass,
            high_entropy_bits=th.high_entropy_bits,
            ngram_repeat_rate=diag.ngram_repeat_rate,
            distinct_token_ratio=diag.distinct_token_ratio,
            loop_share=(flags.repetition_share or 0.0) if flags.repetition_loop else 0.0,
            last_layer_norms=norms[-1] if norms else None,
            first_layer_norms=norms[0] if norms and len(norms) > 1 else None,
        )
        diag.fingerprint = Fingerprint(FINGERPRINT_VERSION, vector) if vector is not None else None

    # --- narrative --------------------------------------------------------------------------------------
    if signals:
        diag.narrative = narrative(narrative_facts(seq, flags, diag, tokens, decode, th, blamed, mid))
    seq.diagnosis = diag


def thresholds_of(profile: Profile) -> Thresholds:
    """The report's ``thresholds`` section for a profile."""
    th = profile.thresholds
    values = {name: getattr(th, name) for name in Thresholds.__dataclass_fields__ if hasattr(th, name)}
    return Thresholds(**values, profile=profile.name, overridden=list(profile.overridden))


def diagnose_report(
    report: Report,
    profile: str | Profile | None = None,
    thresholds: dict[str, float] | None = None,
    factors: dict[str, Any] | None = None,
    decode: Callable[[list[int]], str] | None = None,
) -> Report:
    """Diagnose every sequence of an existing report again, in place (other thresholds, a migrated report).

    Token-based results need ``sequences[].token_ids`` (content capture); without them the stored ones are kept.
    """
    chosen = resolve_profile(report.model.model_type, profile, thresholds, factors, model_name=report.model.name)
    signals = "logits" in report.capture.signals
    for seq in report.sequences:
        diagnose_sequence(seq, chosen, tokens=seq.token_ids, signals=signals, decode=decode)
    report.thresholds = thresholds_of(chosen)
    report.summary = finish_summary(report.sequences)
    return report
