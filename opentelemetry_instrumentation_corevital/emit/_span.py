"""Span attributes of a finished generation, from its report.

The SDK keeps at most 128 attributes per span (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``) and evicts the *oldest* first,
so we stay far below that (about 20 GenAI and at most about 50 ``corevital.*`` keys in ``summary``, about 65 with
full detail) and write them in the order we can best lose them (:func:`eviction_order`): the per-step and per-layer
arrays first, then the other scalars, then the risk score, level, flags and narrative, the GenAI keys last. Per-step
series become numeric array attributes, thinned to at most ``max_span_steps`` values in total with an even stride.
The SDK cuts strings at ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``; JSON text that would be cut is left off instead
(:func:`fit_json`), named in ``corevital.dropped_attributes``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .. import names as n
from ..report import Report

#: The verdict, written last of ours (risk score newest): the SDK evicts them after every other ``corevital.*`` key.
KEY_ATTRIBUTES = (n.NARRATIVE, n.FLAGS, n.RISK_LEVEL, n.RISK_SCORE)
#: GenAI attributes holding JSON text: cut by a length limit, they would no longer parse.
JSON_ATTRIBUTES = (n.INPUT_MESSAGES, n.OUTPUT_MESSAGES, n.SYSTEM_INSTRUCTIONS)


def eviction_order(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with arrays first, then scalars, then :data:`KEY_ATTRIBUTES`: oldest-first eviction takes the bulk."""
    rest = {k: v for k, v in attrs.items() if k not in KEY_ATTRIBUTES}
    arrays = {k: v for k, v in rest.items() if isinstance(v, (list, tuple))}
    scalars = {k: v for k, v in rest.items() if k not in arrays}
    return arrays | scalars | {k: attrs[k] for k in KEY_ATTRIBUTES if k in attrs}


def flattens_sequences(span: object) -> bool:
    """Whether ``span`` makes each element of a sequence attribute a tag of its own (``key.0``, ...): ddtrace's do."""
    return type(span).__module__.startswith("ddtrace.")


def value_length_limit(span: object) -> int | None:
    """The SDK span's attribute value-length limit (``None``: unlimited, or not an SDK span)."""
    return getattr(getattr(span, "_limits", None), "max_span_attribute_length", None)


def fit_json(attrs: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """``attrs`` without the JSON text longer than ``limit``, which the SDK would cut into invalid JSON; says which."""
    if limit is None:
        return attrs
    dropped = [k for k in JSON_ATTRIBUTES if isinstance(attrs.get(k), str) and len(attrs[k]) > limit]
    if not dropped:
        return attrs
    return {k: v for k, v in attrs.items() if k not in dropped} | {n.DROPPED_ATTRIBUTES: dropped}


def _num(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _stride(lengths: list[int], budget: int) -> int:
    total = sum(lengths)
    return max(1, math.ceil(total / budget)) if total else 1


def layer_means(report: Report, name: str) -> list[float] | None:
    """Per captured layer, the mean of ``name`` over every step of every sequence (NaN where none)."""
    rows: list[list[float]] = []
    for seq in report.sequences:
        matrix = getattr(seq.layers, name, None) if seq.layers is not None else None
        if matrix is None:
            continue
        for layer, values in enumerate(matrix):
            while len(rows) <= layer:
                rows.append([])
            rows[layer].extend(v for v in values if v is not None)  # report values are finite or None
    if not rows:
        return None
    return [sum(v) / len(v) if v else math.nan for v in rows]


def layer_attributes(report: Report, full: bool) -> dict[str, Any]:
    """Per-layer means of the first sequence with layer data; with ``full``, more series and the prompt's."""
    attrs: dict[str, Any] = {}
    first = next((s.layers for s in report.sequences if s.layers is not None), None)
    if first is None:
        return attrs
    attrs[n.LAYERS_INDICES] = list(first.indices)
    for name in n.FULL_LAYER_SERIES if full else n.SUMMARY_LAYER_SERIES:
        means = layer_means(report, name)
        if means is not None:
            attrs[n.LAYERS_PREFIX + name] = means
    if full:
        prompt = next((s.prompt for s in report.sequences if s.prompt is not None), None)
        if prompt is not None:
            attrs[n.PROMPT_TOKENS] = int(prompt.tokens)
            if prompt.perplexity is not None:
                attrs[n.PROMPT_PERPLEXITY] = float(prompt.perplexity)
            if prompt.surprisal:
                attrs[n.PROMPT_SURPRISAL] = [_num(v) for v in prompt.surprisal[-512:]]
            if prompt.basin:
                attrs[n.PROMPT_BASIN] = [_num(v) for v in prompt.basin]
    return attrs


def diagnosis_attributes(report: Report) -> dict[str, Any]:
    """Narrative, blamed layers, compound signals, warnings and fingerprint of the riskiest sequence.

    Blame, compound and warning keys appear only when there is something to say; one reason per blamed layer
    (its worst), as ``"L12: norm 5.1x above its neighbours at step 30"``.
    """
    attrs: dict[str, Any] = {}
    summary = report.summary
    if not report.sequences:
        return attrs
    seq = report.sequences[summary.riskiest_sequence or 0]
    diagnosis = seq.diagnosis
    if diagnosis is None:
        return attrs
    if summary.narrative:
        attrs[n.NARRATIVE] = summary.narrative
    if diagnosis.blame:
        attrs[n.BLAME_LAYERS] = [int(b.layer) for b in diagnosis.blame]
        attrs[n.BLAME_SEVERITIES] = [float(b.severity) for b in diagnosis.blame]
        attrs[n.BLAME_REASONS] = [f"L{b.layer}: {b.reasons[0].detail}" for b in diagnosis.blame]
    if diagnosis.compound:
        attrs[n.COMPOUND] = [c.name for c in diagnosis.compound]
        attrs[n.COMPOUND_ONSET_STEPS] = [int(c.onset_step) for c in diagnosis.compound]
    if diagnosis.warnings:
        attrs[n.WARNINGS] = [w.name for w in diagnosis.warnings]
        attrs[n.WARNING_ONSET_STEPS] = [int(w.onset_step) for w in diagnosis.warnings]
    if diagnosis.fingerprint is not None:
        attrs[n.FINGERPRINT] = [_num(v) for v in diagnosis.fingerprint.vector]
        attrs[n.FINGERPRINT_VERSION] = int(diagnosis.fingerprint.version)
    flags = seq.flags
    if flags.mid_layer_anomaly:
        attrs[n.MID_LAYER_ANOMALY_LAYERS] = list(flags.mid_layer_anomaly_layers)
    if flags.attention_collapse and flags.attention_collapse_onset_step is not None:
        attrs[n.ATTENTION_COLLAPSE_ONSET_STEP] = int(flags.attention_collapse_onset_step)
    return attrs


def report_detail(report: Report) -> str:
    """The detail a report is emitted at: ``full`` for a full capture (or ``on_risk`` above its threshold)."""
    full = report.capture.mode in ("full", "on_risk") and report.capture.detail != "summary"
    return "full" if full else "summary"


def corevital_attributes(report: Report, max_span_steps: int, detail: str) -> dict[str, Any]:
    """The ``corevital.*`` span attributes; ``detail`` (``full`` or ``summary``) picks the per-layer series."""
    attrs: dict[str, Any] = {
        n.SCHEMA_VERSION: report.schema_version,
        n.CAPTURE_MODE: report.capture.mode,
    }
    if report.request.generation_mode:
        attrs[n.GENERATION_MODE] = report.request.generation_mode
    if report.capture.unavailable:
        attrs[n.CAPTURE_UNAVAILABLE] = [f"{k}: {v}" for k, v in sorted(report.capture.unavailable.items())]
    if report.capture.error:
        attrs[n.CAPTURE_ERROR] = report.capture.error
    if report.capture.detail:
        attrs[n.CAPTURE_DETAIL] = report.capture.detail
    if any(seq.intervention is not None for seq in report.sequences):
        attrs[n.INTERVENTION_CONDITIONS] = [
            s.intervention.condition if s.intervention else "" for s in report.sequences
        ]
        attrs[n.INTERVENTION_STEPS] = [s.intervention.step if s.intervention else -1 for s in report.sequences]
    timings = report.timings
    if timings.time_to_first_token_s is not None:
        attrs[n.TIME_TO_FIRST_TOKEN] = float(timings.time_to_first_token_s)
    if timings.time_per_output_token_s is not None:
        attrs[n.TIME_PER_OUTPUT_TOKEN] = float(timings.time_per_output_token_s)
    if "logits" not in report.capture.signals:
        return attrs

    summary = report.summary
    agg = summary.aggregates
    if summary.risk_score is not None:
        attrs[n.RISK_SCORE] = float(summary.risk_score)
        attrs[n.RISK_LEVEL] = str(summary.risk_level)
        riskiest = report.sequences[summary.riskiest_sequence or 0].risk
        if riskiest is not None and riskiest.factors:
            ranked = sorted(riskiest.factors, key=lambda f: f.contribution, reverse=True)
            attrs[n.RISK_FACTORS] = [f.name for f in ranked]
            attrs[n.RISK_FACTOR_CONTRIBUTIONS] = [float(f.contribution) for f in ranked]
            attrs[n.RISK_FACTOR_VALUES] = [float(f.value) for f in ranked]
            attrs[n.RISK_FACTOR_WEIGHTS] = [float(f.weight) for f in ranked]
        if riskiest is not None and riskiest.calibrated:
            attrs[n.RISK_CALIBRATED] = True
            if riskiest.uncalibrated_score is not None:  # always set on a calibrated risk
                attrs[n.RISK_UNCALIBRATED_SCORE] = float(riskiest.uncalibrated_score)
        if riskiest is not None and riskiest.divergence is not None:
            attrs[n.RISK_DIVERGENCE] = float(riskiest.divergence)
            if riskiest.divergent_features:
                attrs[n.RISK_DIVERGENT_FEATURES] = list(riskiest.divergent_features)
    if summary.uncertainty is not None:
        attrs[n.UNCERTAINTY_SCORE] = float(summary.uncertainty)
    if summary.uncertain_sequence is not None:  # the summary's choice (a report read back from before 1.5 has none)
        uncertain = report.sequences[summary.uncertain_sequence].uncertainty
        if uncertain is not None:
            attrs[n.UNCERTAINTY_LAYER] = uncertain.layer
    if report.thresholds.profile:
        attrs[n.PROFILE] = report.thresholds.profile
    attrs.update(diagnosis_attributes(report))
    attrs[n.FLAGS] = list(summary.flags)
    for flag in n.FLAG_NAMES:
        attrs[n.FLAG_PREFIX + flag] = flag in summary.flags
    attrs[n.HIGH_ENTROPY_STEPS] = sum(s.flags.high_entropy_steps for s in report.sequences)
    onsets = [s.flags.repetition_onset_step for s in report.sequences if s.flags.repetition_onset_step is not None]
    if onsets:
        attrs[n.REPETITION_ONSET_STEP] = min(onsets)
    for key, value in (
        (n.ENTROPY_MEAN, agg.entropy_mean),
        (n.ENTROPY_MAX, agg.entropy_max),
        (n.ENTROPY_P95, agg.entropy_p95),
        (n.PERPLEXITY_MEAN, agg.perplexity_mean),
        (n.SURPRISAL_MEAN, agg.surprisal_mean),
        (n.SURPRISAL_MAX, agg.surprisal_max),
        (n.MARGIN_MEAN, agg.margin_mean),
        (n.MARGIN_MIN, agg.margin_min),
        (n.TOP1_PROB_MEAN, agg.top1_prob_mean),
        (n.TOPK_MASS_MEAN, agg.topk_mass_mean),
    ):
        if value is not None:
            attrs[key] = float(value)

    lengths = [len(s.timeline.entropy) for s in report.sequences]
    stride = _stride(lengths, max_span_steps)
    attrs[n.TIMELINE_STRIDE] = stride
    attrs[n.TIMELINE_LENGTHS] = [len(range(0, length, stride)) for length in lengths]
    for series in n.STEP_SERIES:
        attrs[n.STEP_PREFIX + series] = [
            _num(v) for s in report.sequences for v in getattr(s.timeline, series)[::stride]
        ]
    step_ends = timings.step_end_s
    if step_ends:
        durations = [step_ends[0]] + [b - a for a, b in zip(step_ends, step_ends[1:])]
        attrs[n.STEP_DURATION] = [float(d) for d in durations[:: _stride([len(durations)], max_span_steps)]]
    if len(report.sequences) > 1:
        attrs[n.SEQUENCE_RISK_SCORES] = [_num(s.risk.score if s.risk else None) for s in report.sequences]
        if report.summary.uncertainty is not None:
            attrs[n.SEQUENCE_UNCERTAINTY_SCORES] = [
                _num(s.uncertainty.score if s.uncertainty else None) for s in report.sequences
            ]
    attrs.update(layer_attributes(report, full=detail == "full"))
    return attrs


def genai_attributes(
    report: Report, content_on_span: bool, provider: str = n.PROVIDER, response_id: str | None = None
) -> dict[str, Any]:
    """The GenAI semantic-convention attributes of the span, content only when asked for.

    ``gen_ai.response.id`` is the engine's response id where it names one, else the report's id (the key of the
    report in the SQLite history and W&B).
    """
    req = report.request
    attrs: dict[str, Any] = {
        n.OPERATION_NAME: req.operation,
        n.PROVIDER_NAME: provider,
        n.REQUEST_MODEL: report.model.name,
        n.RESPONSE_MODEL: report.model.name,
        n.RESPONSE_ID: response_id or report.report_id,
        n.OUTPUT_TYPE: "text",
        n.USAGE_INPUT_TOKENS: int(report.usage.input_tokens),
        n.USAGE_OUTPUT_TOKENS: int(report.usage.output_tokens),
        n.RESPONSE_FINISH_REASONS: [s.finish_reason for s in report.sequences],
    }
    if req.max_new_tokens is not None:
        attrs[n.REQUEST_MAX_TOKENS] = int(req.max_new_tokens)
    if req.temperature is not None:
        attrs[n.REQUEST_TEMPERATURE] = float(req.temperature)
    if req.top_p is not None:
        attrs[n.REQUEST_TOP_P] = float(req.top_p)
    if req.top_k is not None:
        attrs[n.REQUEST_TOP_K] = int(req.top_k)
    if req.num_return_sequences != 1:
        attrs[n.REQUEST_CHOICE_COUNT] = int(req.num_return_sequences)
    if req.seed is not None:
        attrs[n.REQUEST_SEED] = int(req.seed)
    if req.stop_strings:
        attrs[n.REQUEST_STOP_SEQUENCES] = list(req.stop_strings)
    if req.stream:
        attrs[n.REQUEST_STREAM] = True
    if content_on_span:
        # JSON text on spans, as contrib writes it (backends show only strings); structured on events.
        attrs.update({key: json.dumps(value, separators=(",", ":")) for key, value in messages(report).items()})
    return attrs


def messages(report: Report) -> dict[str, Any]:
    """The GenAI content attributes the report holds, as structured values: input, output, system instructions."""
    found = {
        n.INPUT_MESSAGES: report.input_messages,
        n.OUTPUT_MESSAGES: output_messages(report),
        n.SYSTEM_INSTRUCTIONS: report.system_instructions,
    }
    return {key: value for key, value in found.items() if value}


def output_messages(report: Report) -> list[dict[str, Any]]:
    """The generated texts in the GenAI message format; empty without content capture."""
    return [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": s.output_text}],
            "finish_reason": s.finish_reason,
        }
        for s in report.sequences
        if s.output_text is not None
    ]


def span_name(operation: str, model: str) -> str:
    """The GenAI span name: ``{operation} {model}``."""
    return f"{operation} {model}"
