"""The facts a sequence's narrative is written from, and the sentences of its compound signals and warnings.

Split from the diagnosis by idea: the diagnosis decides, this module only gathers what it decided into
:class:`signals.narrative.NarrativeFacts` (the narrative itself is a pure function in ``signals``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..signals import blame as blame_mod
from ..signals import layers as layer_sig
from ..signals.narrative import FactorFact, Finding, NarrativeFacts
from ..signals.profiles import DiagnosisThresholds
from ._findings import CompoundSignalInfo, Diagnosis, EarlyWarningInfo
from ._model import Flags, SequenceReport


def narrative_facts(
    seq: SequenceReport,
    flags: Flags,
    diag: Diagnosis,
    tokens: Sequence[int] | None,
    decode: Callable[[list[int]], str] | None,
    th: DiagnosisThresholds,
    blamed: list[blame_mod.LayerBlame],
    mid: layer_sig.MidLayerResult | None,
) -> NarrativeFacts:
    """What the narrative needs from one diagnosed sequence: peaks, loops, layers, findings, in plain facts."""
    entropy = seq.timeline.entropy
    finite = [(v, i) for i, v in enumerate(entropy) if v is not None]
    peak_value, peak_step = max(finite) if finite else (None, None)
    if finite:  # the first step among equal maxima
        peak_step = min(i for v, i in finite if v == peak_value)
    peak_token = None
    if peak_step is not None and tokens is not None and decode is not None and peak_step < len(tokens):
        try:
            peak_token = str(decode([tokens[peak_step]]))
        except Exception:  # a tokenizer failure must not cost the report
            peak_token = None
    risk = seq.risk
    mid_step = mid_ratio = mid_kind = None
    mid_fell = False
    mid_layers: list[int] = []
    if mid is not None and mid.anomalies:
        worst = max(mid.anomalies, key=lambda a: (abs(a.log_ratio), -a.step))
        mid_step, mid_ratio, mid_kind, mid_fell = worst.step, worst.ratio, worst.kind, worst.log_ratio < 0
        by_layer = {a.layer: max(abs(b.log_ratio) for b in mid.anomalies if b.layer == a.layer) for a in mid.anomalies}
        mid_layers = sorted(by_layer, key=lambda layer: (-by_layer[layer], layer))
    nonfinite_layer = next((b.layer for b in blamed if b.reasons[0].code == "nonfinite"), None)
    findings = [Finding(c.name, _compound_sentence(c), 4) for c in diag.compound]
    findings += [Finding(w.name, _warning_sentence(w), 5) for w in diag.warnings]
    full = seq.layers is not None and seq.layers.attn_entropy is not None
    return NarrativeFacts(
        steps=len(entropy) or seq.output_tokens,
        risk=risk.score if risk else None,
        level=risk.level if risk else None,
        forced_by=risk.forced_by if risk else None,
        uncertainty=seq.uncertainty.score if seq.uncertainty else None,
        calibrated=bool(risk and risk.calibrated),
        uncalibrated=risk.uncalibrated_score if risk else None,
        divergent=tuple(risk.divergent_features) if risk else (),
        factors=[FactorFact(f.name, f.value, f.score, f.contribution) for f in (risk.factors if risk else [])],
        peak_entropy=peak_value,
        peak_step=peak_step,
        peak_token=peak_token,
        high_entropy_steps=flags.high_entropy_steps,
        high_entropy_bits=th.high_entropy_bits,
        nonfinite_steps=flags.nan_or_inf_steps,
        nonfinite_first_step=flags.nan_or_inf_first_step,
        nonfinite_layer=nonfinite_layer,
        loop_onset=flags.repetition_onset_step if flags.repetition_loop else None,
        loop_period=flags.repetition_period if flags.repetition_loop else None,
        loop_share=flags.repetition_share if flags.repetition_loop else None,
        loop_hidden=flags.repetition_hidden_recurrence if "hidden" in flags.repetition_evidence else None,
        loop_tokens="tokens" in flags.repetition_evidence,
        ngram_n=th.ngram_n,
        mid_layers=mid_layers,
        mid_step=mid_step,
        mid_ratio=mid_ratio,
        mid_kind=mid_kind,
        mid_fell=mid_fell,
        collapse_onset=flags.attention_collapse_onset_step if flags.attention_collapse else None,
        collapse_share=flags.attention_collapse_share if flags.attention_collapse else None,
        findings=findings,
        fired=flags.fired(),
        high_entropy_longest_run=flags.high_entropy_longest_run,
        blamed=[(b.layer, b.reasons[0].detail) for b in blamed],
        full_capture=full,
        stopped_step=seq.intervention.step if seq.intervention else None,
        stopped_by=seq.intervention.condition if seq.intervention else None,
    )


def _compound_sentence(c: CompoundSignalInfo) -> str:
    e = c.evidence
    if c.name == "confident_repetition":
        return (
            f"From step {c.onset_step} the model copies its own output with confidence "
            f"(mean top-1 probability {e.get('top1_mean', 0):.0%}, entropy {e.get('entropy_mean', 0):.2f} bits)."
        )
    if c.name == "context_loss":
        return (
            f"From step {c.onset_step} attention to the prompt fell to "
            f"{e['prompt_share'] / e['opening_prompt_share']:.0%} of its opening level while entropy rose from "
            f"{e['opening_entropy_mean']:.2f} to {e['entropy_mean']:.2f} bits."
        )
    if c.name == "degeneration":
        return (
            f"From step {c.onset_step} entropy rose ({e['entropy_slope']:+.3f} bits/step), the margin fell "
            f"({e['margin_slope']:+.3f}/step) and surprisal rose ({e['surprisal_slope']:+.3f} bits/step) together."
        )
    if c.name == "attention_bottleneck":
        return (
            f"From step {c.onset_step}, {e['collapsed_share']:.0%} of attention heads were collapsed while "
            f"entropy averaged {e['entropy_mean']:.2f} bits."
        )
    return f"{c.name} from step {c.onset_step} (severity {c.severity:.2f})."


def _warning_sentence(w: EarlyWarningInfo) -> str:
    if w.name == "entropy_acceleration":
        return (
            f"Entropy climbed {w.value:.2f} bits above its opening level from step {w.onset_step}; a streaming "
            f"detector would have warned at step {w.detected_step}."
        )
    return (
        f"The margin fell {w.value:.2f} below its opening level from step {w.onset_step}; a streaming detector "
        f"would have warned at step {w.detected_step}."
    )
