"""Narrative: two to five sentences about one generation, built from its own values.

No fixed text: every sentence carries the run's numbers (risk and its largest
factors, the entropy peak with its step and — with content capture — its token,
the onsets of flags, compound signals and early warnings, the blamed layers)
and the recommendation follows the dominant problem with the numbers that
support it. Sentence budget: the risk sentence, the entropy peak, at most two
findings, the answer uncertainty (capture "full") when there is room, the
blamed layers when any, and the recommendation; findings are dropped first
when the budget of five is reached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_SENTENCES = 5


@dataclass(frozen=True)
class FactorFact:
    """One risk factor as the narrative tells it."""

    name: str
    value: float
    score: float
    contribution: float


@dataclass(frozen=True)
class Finding:
    """One thing that happened, as (kind, sentence, priority): lower priority numbers are told first."""

    kind: str
    sentence: str
    priority: int


@dataclass(frozen=True)
class NarrativeFacts:
    """Everything the narrative may say about one sequence, plain values only."""

    steps: int
    risk: float | None
    level: str | None
    forced_by: str | None = None
    factors: Sequence[FactorFact] = ()
    peak_entropy: float | None = None
    peak_step: int | None = None
    peak_token: str | None = None
    high_entropy_steps: int = 0
    high_entropy_longest_run: int = 0
    high_entropy_bits: float = 4.0
    fired: Sequence[str] = ()  # flags that fired
    nonfinite_steps: int = 0
    nonfinite_first_step: int | None = None
    nonfinite_layer: int | None = None
    loop_onset: int | None = None
    loop_period: int | None = None
    loop_share: float | None = None
    loop_hidden: float | None = None  # recurrence value when the hidden state showed the loop
    loop_tokens: bool = True  # the token ids repeat (False: only the hidden state does)
    ngram_n: int = 4
    calibrated: bool = False  # risk is a calibrated profile's fitted probability
    uncalibrated: float | None = None
    divergent: Sequence[str] = ()  # features beyond 3 standard deviations of the profile's healthy baseline
    mid_layers: Sequence[int] = ()
    mid_step: int | None = None
    mid_ratio: float | None = None
    mid_kind: str | None = None  # spike, jump or nonfinite (of the worst anomaly)
    mid_fell: bool = False  # the worst anomaly's norm went down, not up
    collapse_onset: int | None = None
    collapse_share: float | None = None
    findings: Sequence[Finding] = ()  # compound signals and warnings, already phrased
    blamed: Sequence[tuple[int, str]] = field(default_factory=tuple)  # (layer, detail of its worst reason)
    full_capture: bool = False
    uncertainty: float | None = None  # the answer uncertainty (RAUQ): a separate score from the risk
    stopped_step: int | None = None  # stop_on ended the sequence with this step's token
    stopped_by: str | None = None  # the stop_on condition that held there


def _factor_phrase(f: FactorFact, facts: NarrativeFacts) -> str:
    v = f.value
    phrases = {
        "entropy_mean": f"a mean entropy of {v:.2f} bits",
        "high_entropy_fraction": f"{v:.0%} of steps above {facts.high_entropy_bits:g} bits",
        "margin_mean": f"a mean top-1/top-2 margin of {v:.2f}",
        "surprisal_mean": f"a mean surprisal of {v:.2f} bits per token",
        "ngram_repeat_rate": f"{v:.0%} of its {facts.ngram_n}-grams repeating earlier ones",
        "repetition_share": f"a repetition loop covering {v:.0%} of the output",
        "mid_layer_norm_ratio": f"an inner layer's norm {v:.1f}x off its usual level",
        "attention_collapse_share": f"{v:.0%} of attention heads collapsed",
    }
    return phrases.get(f.name, f"{f.name} = {v:.3g}")


def _risk_sentence(facts: NarrativeFacts) -> str:
    if facts.risk is None:
        return f"No risk score: the {facts.steps} generated tokens had no logit signals."
    if facts.forced_by == "nan_or_inf":
        where = f", first at step {facts.nonfinite_first_step}" if facts.nonfinite_first_step is not None else ""
        return (
            f"Risk {facts.risk:.2f} ({facts.level}): non-finite values appeared at {facts.nonfinite_steps} "
            f"of {facts.steps} steps{where}, so the output cannot be trusted."
        )
    if facts.calibrated:
        text = (
            f"Risk {facts.risk:.2f} ({facts.level}) over {facts.steps} tokens: the calibrated profile's "
            f"probability that this run is bad"
        )
        if facts.uncalibrated is not None:
            text += f" (uncalibrated score {facts.uncalibrated:.2f})"
        if facts.divergent:
            text += f"; outside its healthy baseline: {', '.join(facts.divergent[:3])}"
        return text + "."
    ranked = sorted(facts.factors, key=lambda f: f.contribution, reverse=True)
    if not ranked:
        return f"Risk {facts.risk:.2f} ({facts.level}) over {facts.steps} tokens."
    lead = [ranked[0]] + [f for f in ranked[1:3] if f.contribution >= 0.05]
    if facts.level == "low":
        nonzero = [f for f in ranked if f.value != 0] or ranked
        return (
            f"Risk {facts.risk:.2f} (low) over {facts.steps} tokens; its largest part, "
            f"{_factor_phrase(nonzero[0], facts)}, scores {nonzero[0].score:.2f} of 1."
        )
    parts = [_factor_phrase(f, facts) for f in lead]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Risk {facts.risk:.2f} ({facts.level}) over {facts.steps} tokens, driven by {joined}."


def _peak_sentence(facts: NarrativeFacts) -> str | None:
    if facts.peak_entropy is None or facts.peak_step is None:
        return None
    token = f" (token {facts.peak_token!r})" if facts.peak_token is not None else ""
    sentence = f"Entropy peaked at {facts.peak_entropy:.2f} bits at step {facts.peak_step}{token}"
    if facts.high_entropy_steps:
        verb = "was" if facts.high_entropy_steps == 1 else "were"
        sentence += f"; {facts.high_entropy_steps} of {facts.steps} steps {verb} above {facts.high_entropy_bits:g} bits"
    return sentence + "."


def _flag_findings(facts: NarrativeFacts) -> list[Finding]:
    found = []
    if facts.loop_onset is not None and facts.loop_period is not None:
        if facts.loop_tokens:
            confirm = (
                f"; the last layer's hidden state repeats with it (recurrence {facts.loop_hidden:.3f})"
                if facts.loop_hidden is not None
                else ""
            )
            text = (
                f"From step {facts.loop_onset} the output repeats a {facts.loop_period}-token cycle "
                f"({facts.loop_share or 0:.0%} of the output){confirm}."
            )
        else:
            text = (
                f"From step {facts.loop_onset} the last layer's hidden state repeats every {facts.loop_period} "
                f"steps (recurrence {facts.loop_hidden or 0:.3f}) although the tokens vary."
            )
        found.append(Finding("repetition_loop", text, 1))
    if facts.mid_layers and facts.mid_ratio is not None:
        more = f" (and {len(facts.mid_layers) - 1} more)" if len(facts.mid_layers) > 1 else ""
        layer = f"Layer {facts.mid_layers[0]}{more}"
        if facts.mid_kind == "nonfinite":
            text = f"{layer}'s hidden state became non-finite at step {facts.mid_step}."
        elif facts.mid_kind == "jump":
            moved, side = ("fell", "below") if facts.mid_fell else ("rose", "above")
            text = (
                f"At step {facts.mid_step} the hidden-state norm {moved} {facts.mid_ratio:.1f}x {side} its usual "
                f"level at {layer.lower()} and stayed there to the last layer."
            )
        else:
            text = (
                f"{layer}'s hidden-state norm {'dropped' if facts.mid_fell else 'jumped'} {facts.mid_ratio:.1f}x "
                f"against both neighbours at step {facts.mid_step}."
            )
        found.append(Finding("mid_layer_anomaly", text, 2))
    if facts.collapse_onset is not None:
        found.append(
            Finding(
                "attention_collapse",
                f"From step {facts.collapse_onset}, "
                f"{facts.collapse_share or 0:.0%} of attention heads collapsed onto single keys.",
                3,
            )
        )
    return found


def _recommendation(facts: NarrativeFacts) -> str:
    kinds = {f.kind for f in facts.findings}
    if facts.forced_by == "nan_or_inf":
        where = (
            f" and inspect layer {facts.nonfinite_layer}, where they first appear"
            if facts.nonfinite_layer is not None
            else ""
        )
        return f"Check numerical precision (bfloat16 or float32 rather than float16){where}."
    if facts.stopped_step is not None and facts.loop_onset is not None:  # the loop stop already did its job
        return (
            f"stop_on stopped the loop at step {facts.stopped_step}, {facts.stopped_step - facts.loop_onset} steps "
            f"after its onset; to avoid it altogether, penalise repetition (repetition_penalty of 1.1-1.3 or "
            f"no_repeat_ngram_size={facts.ngram_n})."
        )
    if facts.loop_onset is not None and facts.loop_period is not None:
        stop = facts.loop_onset + 2 * facts.loop_period
        saved = max(0, facts.steps - stop)
        return (
            f"Penalise or stop the loop (repetition_penalty of 1.1-1.3, no_repeat_ngram_size={facts.ngram_n}, "
            f"or stop once a cycle repeats): stopping at step {stop} would have saved {saved} tokens."
        )
    if facts.mid_layers:
        extra = "" if facts.full_capture else "; capture='full' adds its update ratio and attention"
        return (
            f"Inspect layer {facts.mid_layers[0]} (its weights, quantisation and inputs at step {facts.mid_step})"
            f"{extra}."
        )
    if facts.collapse_onset is not None:
        return (
            f"Inspect the prompt and context length that led to the collapse at step {facts.collapse_onset}; "
            f"collapsed heads stop mixing information."
        )
    if "confident_repetition" in kinds:
        return "Add a repetition penalty or no_repeat_ngram_size: the model is copying itself with confidence."
    if "context_loss" in kinds:
        return "Check that the answer stays grounded in the prompt: shorten the output or restate the key context."
    if facts.level in ("medium", "high"):
        ranked = sorted(facts.factors, key=lambda f: f.contribution, reverse=True)
        top = ranked[0] if ranked else None
        if top is not None and top.name in ("entropy_mean", "high_entropy_fraction", "margin_mean", "surprisal_mean"):
            return (
                f"The model was unsure ({_factor_phrase(top, facts)}): lower the temperature, give the prompt "
                f"more context, or route such requests to a larger model."
            )
        if top is not None and top.name == "ngram_repeat_rate":
            return (
                f"Reduce repetition ({_factor_phrase(top, facts)}): add a repetition penalty or no_repeat_ngram_size."
            )
        if facts.stopped_step is not None:
            return (
                f"stop_on stopped it at step {facts.stopped_step} ({facts.stopped_by}): review the output up to there."
            )
        if "entropy_acceleration" in kinds or "margin_collapse" in kinds:
            return "Consider stopping earlier: the trend warnings fired before the end of the output."
        return "Review this output before using it."
    best = max((f.score for f in facts.factors), default=0.0)
    if not facts.fired:
        return (
            f"No action needed: no flag fired and the highest factor score is {best:.2f} "
            f"(0.5 is a factor's calibrated midpoint)."
        )
    if set(facts.fired) == {"high_entropy"}:
        return (
            f"No action needed: the {facts.high_entropy_steps} high-entropy steps (longest run "
            f"{facts.high_entropy_longest_run}) are forks in an otherwise confident answer."
        )
    return f"Review the output: {', '.join(facts.fired)} fired although the overall risk is low."


def narrative(facts: NarrativeFacts) -> str:
    """The narrative text for one generation."""
    first = [_risk_sentence(facts)]
    peak = _peak_sentence(facts)
    if peak:
        first.append(peak)
    findings = sorted([*_flag_findings(facts), *facts.findings], key=lambda f: f.priority)
    blame = None
    if facts.blamed:
        listed = "; ".join(f"L{layer} ({detail})" for layer, detail in facts.blamed)
        blame = f"Layers most implicated: {listed}."
    room = MAX_SENTENCES - len(first) - (1 if blame else 0) - 1
    sentences = first + [f.sentence for f in findings[: max(0, min(2, room))]]
    if facts.uncertainty is not None and len(sentences) + (1 if blame else 0) + 1 < MAX_SENTENCES:
        sentences.append(  # the lowest priority: never in place of a finding
            f"Answer uncertainty {facts.uncertainty:.2f}: a separate, label-free score of how likely the answer "
            "itself is wrong (it ranks one model's answers; its level is not a probability)."
        )
    if blame:
        sentences.append(blame)
    sentences.append(_recommendation(dataclasses.replace(facts, findings=tuple(findings))))
    return " ".join(sentences)
