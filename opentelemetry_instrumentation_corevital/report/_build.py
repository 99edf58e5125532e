"""Turn a capture's host-side numbers into a :class:`Report`.

Pure Python on plain lists: it runs after ``generate`` returned its tensors,
on data already transferred, and every branch is unit-testable without a model.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .. import signals as sig
from ..signals.profiles import Profile, resolve_profile
from ..version import __version__
from ._diagnose import diagnose_sequence, summarize, thresholds_of
from ._model import (
    SCHEMA_VERSION,
    Aggregates,
    CaptureInfo,
    EncoderSummary,
    Intervention,
    LayerSeries,
    PromptTelemetry,
    ModelInfo,
    Producer,
    Report,
    RequestInfo,
    SequenceReport,
    Summary,
    Timeline,
    Timings,
    Usage,
)

PRODUCER = "opentelemetry-instrumentation-corevital"

HIDDEN_FIELDS = ("hidden_norm", "hidden_mean", "hidden_std", "hidden_max_abs", "hidden_nonfinite", "hidden_cos_prev",
                 "update_ratio")
ATTENTION_FIELDS = ("attn_entropy", "attn_entropy_min", "attn_max_weight", "attn_sink_mass", "attn_prompt_mass",
                    "attn_collapsed_fraction")
MOE_FIELDS = ("router_entropy", "expert_load_balance")


@dataclass
class LayerData:
    """Per-layer capture results on the host, as the capture engine hands them over (rows, not sequences)."""

    layers: list[int] = field(default_factory=list)
    layer_steps: list[int] = field(default_factory=list)
    matrices: dict[str, list] | None = None  # greedy/sample: field -> [row][layer][layer step], cleaned
    hidden: list | None = None  # beam search: [captured step][row][layer] norm, or [..][..][..][7] (full)
    hidden_full: bool = False
    attention: list | None = None  # [captured step][row][layer][6]
    moe: list | None = None  # [captured step][row][layer][2]
    row_of: list[list[int]] | None = None  # beam search: [sequence][step] -> row
    prompt_surprisal: list | None = None  # [prefill row][prompt - 1]
    prompt_layers: list | None = None  # [prefill row][layer][4]
    encoder_layers: list | None = None  # [input row][encoder layer][4]
    encoder_indices: list[int] = field(default_factory=list)
    input_masks: list[list[int]] | None = None  # [input row][prompt] attention mask
    step_stride: int = 1
    attention_source: str | None = None


@dataclass
class BuildInput:
    """Everything the builder needs, already on the host."""

    capture_mode: str
    model: dict[str, Any]
    request: dict[str, Any]
    operation: str
    duration_s: float
    sequences: list[list[int]]  # returned sequences (prefix + generated)
    prefix_len: int  # tokens before the first generated one in each returned row
    steps: int  # decoding steps the capture saw (0 if it saw none)
    series: list[dict[str, list[float | None]]] = field(default_factory=list)  # per row, from the capture
    step_end_s: list[float] = field(default_factory=list)
    input_lengths: list[int] = field(default_factory=list)  # non-pad prompt tokens per input row
    signals_captured: bool = False
    unavailable: dict[str, str] = field(default_factory=dict)
    capture_error: str | None = None
    high_entropy_bits: float | None = None  # the user's value; None = the model profile's
    profile: str | Profile | None = None  # a shipped profile name, a profile file path, or None: from model_type
    thresholds: dict[str, float] | None = None  # single thresholds overriding the profile's
    factors: dict[str, Any] | None = None  # risk factors overriding the profile's ({name: {midpoint, scale, weight}})
    trace_id: str | None = None
    span_id: str | None = None
    content: bool = False
    decode: Any = None  # callable(list[int]) -> str, when content capture has a tokenizer
    input_texts: list[str] | None = None
    input_messages: Any = None
    layer_data: LayerData | None = None
    detail: str | None = None
    stopped_at: list[int] | None = None  # stop_on: per row, the stopping step (-1: none)
    stop_reason: list[str | None] | None = None

def sequence_length(tokens: Sequence[int], eos_ids: Sequence[int], pad_id: int | None, max_new: int | None,
                    steps: int) -> tuple[int, str]:
    """(generated tokens, finish reason) for one returned row.

    A row stops at its first end-of-sequence token (counted). A row that ended
    by a stop string is padded afterwards, so trailing padding is removed when
    the pad token is not also the EOS token. If the whole batch ended before
    ``max_new_tokens``, every row stopped; otherwise a row without EOS hit the
    length limit.
    """
    eos = set(eos_ids)
    for i, token in enumerate(tokens):
        if token in eos:
            return i + 1, "stop"
    n = len(tokens)
    if pad_id is not None and pad_id not in eos:
        while n > 0 and tokens[n - 1] == pad_id:
            n -= 1
        if n < len(tokens):
            return n, "stop"
    if max_new is not None and steps < max_new:
        return n, "stop"
    return n, "length"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _layer_series(data: LayerData, row_at: Any, n: int) -> LayerSeries | None:
    """The [layer][step] matrices of one sequence; ``row_at(step)`` is its row at that step."""
    if (data.hidden is None and data.matrices is None) or not data.layers:
        return None
    picks = [(i, t) for i, t in enumerate(data.layer_steps) if t < n and row_at(t) is not None]
    series = LayerSeries(indices=list(data.layers), steps=[t for _, t in picks])
    if data.matrices is not None:  # one row per sequence, already [layer][step] and cleaned
        row, kept = row_at(0), len(picks)
        for name, per_row in data.matrices.items():
            if row is not None and row < len(per_row):
                setattr(series, name, [values[:kept] for values in per_row[row]])
        return series
    count = len(data.layers)

    rows = [(i, row_at(t)) for i, t in picks]

    def matrix(source: list, column: int | None) -> list[list[float | None]]:
        # (v - v == 0 is True exactly for finite floats: NaN and inf become None)
        if column is None:
            return [[v if (v := source[i][r][layer]) - v == 0 else None for i, r in rows] for layer in range(count)]
        return [[v if (v := source[i][r][layer][column]) - v == 0 else None for i, r in rows] for layer in range(count)]

    if data.hidden_full:
        for column, name in enumerate(HIDDEN_FIELDS):
            setattr(series, name, matrix(data.hidden, column))
    else:
        series.hidden_norm = matrix(data.hidden, None)
    if data.attention is not None:
        for column, name in enumerate(ATTENTION_FIELDS):
            setattr(series, name, matrix(data.attention, column))
    if data.moe is not None:
        for column, name in enumerate(MOE_FIELDS):
            setattr(series, name, matrix(data.moe, column))
    return series


def _prompt_telemetry(data: LayerData, prefill_row: int, input_row: int) -> PromptTelemetry | None:
    if data.prompt_surprisal is None and data.prompt_layers is None:
        return None
    mask = data.input_masks[input_row] if data.input_masks and input_row < len(data.input_masks) else None
    telemetry = PromptTelemetry(tokens=sum(mask) if mask is not None else 0)
    if data.prompt_surprisal is not None and prefill_row < len(data.prompt_surprisal):
        values = data.prompt_surprisal[prefill_row]
        if mask is None:
            kept = values
            telemetry.tokens = len(values) + 1
        else:
            kept = [v for i, v in enumerate(values) if mask[i] and i + 1 < len(mask) and mask[i + 1]]
        telemetry.surprisal = [_num(v) for v in kept]
        finite = [v for v in telemetry.surprisal if v is not None]
        telemetry.perplexity = 2.0 ** (sum(finite) / len(finite)) if finite else None
    if data.prompt_layers is not None and prefill_row < len(data.prompt_layers):
        table = data.prompt_layers[prefill_row]
        telemetry.layers = list(data.layers)
        telemetry.hidden_norm = [_num(r[0]) for r in table]
        telemetry.attn_sparsity = [_num(r[1]) for r in table]
        telemetry.basin = [_num(r[2]) for r in table]
        telemetry.basin_min = [_num(r[3]) for r in table]
    return telemetry


def _encoder_summary(data: LayerData, input_row: int) -> EncoderSummary | None:
    if data.encoder_layers is None or input_row >= len(data.encoder_layers):
        return None
    table = data.encoder_layers[input_row]
    return EncoderSummary(
        indices=list(data.encoder_indices),
        hidden_norm=[_num(r[0]) for r in table],
        attn_sparsity=[_num(r[1]) for r in table],
        basin=[_num(r[2]) for r in table],
        basin_min=[_num(r[3]) for r in table],
    )


def _aggregates(timeline: Timeline) -> Aggregates:
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


def _timeline(series: dict[str, list[float | None]], n: int) -> Timeline:
    entropy = series["entropy"][:n]
    return Timeline(
        entropy=entropy,
        perplexity=[None if h is None else 2.0**h for h in entropy],
        surprisal=series["surprisal"][:n],
        top1_prob=series["top1_prob"][:n],
        margin=series["margin"][:n],
        topk_mass=series["topk_mass"][:n],
    )


def effective_profile(model: Mapping[str, Any], profile: str | Profile | None, thresholds: Mapping[str, float] | None,
                      high_entropy_bits: float | None, factors: Mapping[str, Any] | None = None) -> Profile:
    """The profile a generation is diagnosed with: ``profile`` (or the model's own), then ``thresholds``, then the
    ``high_entropy_bits`` option where ``thresholds`` leaves it unset. ``stop_on`` uses the same one."""
    overrides = dict(thresholds or {})
    if high_entropy_bits is not None:
        overrides.setdefault("high_entropy_bits", high_entropy_bits)
    return resolve_profile(model.get("model_type"), profile, overrides, factors, model_name=model.get("name"))


def build_report(data: BuildInput) -> Report:
    req = data.request
    eos_ids = req.get("eos_token_ids") or []
    pad_id = req.get("pad_token_id")
    max_new = req.get("max_new_tokens")
    rows = len(data.sequences)
    per_input = max(1, rows // max(1, len(data.input_lengths))) if data.input_lengths else 1
    profile = effective_profile(data.model, data.profile, data.thresholds, data.high_entropy_bits, data.factors)

    sequences: list[SequenceReport] = []
    for row, full in enumerate(data.sequences):
        generated = full[data.prefix_len:]
        if data.steps:
            generated = generated[: data.steps]
        n, reason = sequence_length(generated, eos_ids, pad_id, max_new, data.steps or len(generated))
        intervention = None
        if data.stopped_at is not None and row < len(data.stopped_at) and data.stopped_at[row] >= 0:
            stop_step = data.stopped_at[row]
            condition = (data.stop_reason or [None] * (row + 1))[row] or "stop_on"
            if stop_step < n:  # the step that made the condition hold is the sequence's last token
                n, reason = stop_step + 1, "intervention"
                intervention = Intervention(condition, stop_step)
        tokens = generated[:n]
        if data.input_lengths:
            prompt_tokens = data.input_lengths[min(row // per_input, len(data.input_lengths) - 1)]
        else:
            prompt_tokens = data.prefix_len
        signals = data.signals_captured and row < len(data.series)
        timeline = _timeline(data.series[row], n) if signals else Timeline()
        aggregates = _aggregates(timeline)
        layer_data = data.layer_data
        layers = prompt = encoder = None
        if layer_data is not None:
            row_of = layer_data.row_of
            if row_of is not None:
                path = row_of[row] if row < len(row_of) else []

                def row_at(t: int, path: list[int] = path) -> int | None:
                    return path[t] if t < len(path) else None

                prefill_row = path[0] if path else row
            else:
                def row_at(t: int, row: int = row) -> int | None:
                    return row

                prefill_row = row
            layers = _layer_series(layer_data, row_at, n)
            input_row = row // per_input
            prompt = _prompt_telemetry(layer_data, prefill_row, input_row)
            encoder = _encoder_summary(layer_data, input_row)
        seq = SequenceReport(
            index=row,
            prompt_tokens=prompt_tokens,
            output_tokens=n,
            finish_reason=reason,
            timeline=timeline,
            aggregates=aggregates,
            layers=layers,
            prompt=prompt,
            encoder=encoder,
            intervention=intervention,
        )
        diagnose_sequence(seq, profile, tokens=tokens, signals=signals,
                          decode=data.decode if data.content else None)
        if data.content:
            seq.token_ids = list(tokens)
            if data.decode is not None:
                seq.output_text = _safe_decode(data.decode, tokens)
            if data.input_texts and row // per_input < len(data.input_texts):
                seq.input_text = data.input_texts[row // per_input]
        sequences.append(seq)

    summary = finish_summary(sequences)
    step_ends = list(data.step_end_s)
    ttft = step_ends[0] if step_ends else None
    tpot = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else None

    signal_groups = ["logits"] if data.signals_captured else []
    if data.signals_captured or data.sequences:
        signal_groups.append("tokens")
    groups_seen = {name for s in sequences for name, present in (
        ("hidden", s.layers is not None and bool(s.layers.hidden_norm)),
        ("hidden_full", s.layers is not None and s.layers.hidden_mean is not None),
        ("attention", s.layers is not None and s.layers.attn_entropy is not None),
        ("moe", s.layers is not None and s.layers.router_entropy is not None),
        ("prompt", s.prompt is not None),
        ("encoder", s.encoder is not None),
    ) if present}
    signal_groups.extend(g for g in ("hidden", "hidden_full", "attention", "moe", "prompt", "encoder") if g in groups_seen)
    layer_data = data.layer_data
    return Report(
        schema_version=SCHEMA_VERSION,
        report_id=uuid.uuid4().hex,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        producer=Producer(PRODUCER, __version__),
        model=ModelInfo(**data.model),
        request=RequestInfo(
            operation=data.operation,
            generation_mode=req.get("generation_mode"),
            do_sample=bool(req.get("do_sample", False)),
            max_new_tokens=max_new,
            temperature=req.get("temperature"),
            top_p=req.get("top_p"),
            top_k=req.get("top_k"),
            num_beams=int(req.get("num_beams", 1)),
            num_return_sequences=int(req.get("num_return_sequences", 1)),
            repetition_penalty=req.get("repetition_penalty"),
            min_new_tokens=req.get("min_new_tokens"),
            stop_strings=list(req.get("stop_strings") or []),
            seed=req.get("seed"),
            stream=bool(req.get("stream", False)),
        ),
        capture=CaptureInfo(
            mode=data.capture_mode,
            signals=signal_groups,
            unavailable=dict(data.unavailable),
            error=data.capture_error,
            layers=list(layer_data.layers) if layer_data is not None else [],
            step_stride=layer_data.step_stride if layer_data is not None else 1,
            attention_source=layer_data.attention_source if layer_data is not None else None,
            detail=data.detail,
        ),
        usage=Usage(
            input_tokens=sum(data.input_lengths) if data.input_lengths else data.prefix_len * rows,
            output_tokens=sum(s.output_tokens for s in sequences),
        ),
        timings=Timings(
            duration_s=data.duration_s,
            time_to_first_token_s=ttft,
            time_per_output_token_s=tpot,
            step_end_s=step_ends,
        ),
        thresholds=thresholds_of(profile),
        summary=summary,
        sequences=sequences,
        trace_id=data.trace_id,
        span_id=data.span_id,
        input_messages=data.input_messages if data.content else None,
    )


def finish_summary(sequences: list[SequenceReport]) -> Summary:
    """The summary of diagnosed sequences: worst risk, union of flags, pooled aggregates, riskiest narrative."""
    summary = Summary()
    fired: list[str] = []
    for seq in sequences:
        for name in seq.flags.fired():
            if name not in fired:
                fired.append(name)
    summary.flags = fired
    scored = [s for s in sequences if s.risk is not None]
    if scored:
        worst = max(scored, key=lambda s: s.risk.score)
        summary.risk_score = worst.risk.score
        summary.risk_level = worst.risk.level
        summary.riskiest_sequence = worst.index
    pooled = Timeline()
    for seq in sequences:
        for name in ("entropy", "perplexity", "surprisal", "top1_prob", "margin", "topk_mass"):
            getattr(pooled, name).extend(getattr(seq.timeline, name))
    summary.aggregates = _aggregates(pooled)
    summarize(sequences, summary)
    return summary


def _safe_decode(decode: Any, tokens: Sequence[int]) -> str | None:
    try:
        return str(decode(list(tokens)))
    except Exception:
        return None


FULL_ONLY_FIELDS = (*HIDDEN_FIELDS[1:], *ATTENTION_FIELDS, *MOE_FIELDS)


def trim_to_summary(report: Report) -> Report:
    """Drop what only a full capture has (for ``on_risk`` below its threshold), in place.

    Keeps logit signals, flags, risk and the per-layer hidden-state norms;
    removes the other layer matrices and prompt and encoder telemetry.
    """
    for seq in report.sequences:
        if seq.layers is not None:
            for name in FULL_ONLY_FIELDS:
                setattr(seq.layers, name, None)
        seq.prompt = None
        seq.encoder = None
    report.capture.signals = [g for g in report.capture.signals if g in ("logits", "tokens", "hidden")]
    report.capture.detail = "summary"
    return report
