"""Turn a capture's host-side numbers into a :class:`Report`.

Pure Python on plain lists: it runs after ``generate`` returned its tensors,
on data already transferred, and every branch is unit-testable without a model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from collections.abc import Callable, Sequence

from ..signals import finite_or_none
from ..signals.profiles import Profile
from ..version import __version__
from ._diagnose import diagnose_sequence, thresholds_of
from ._gil import pause
from ._input import CaptureResult, ContentInput, GenerationRequest
from ._model import (
    ATTENTION_MATRICES,
    HIDDEN_MATRICES,
    MOE_MATRICES,
    SCHEMA_VERSION,
    TIMELINE_SERIES,
    CaptureInfo,
    EncoderSummary,
    Intervention,
    LayerSeries,
    ModelInfo,
    Producer,
    PromptTelemetry,
    Report,
    SequenceReport,
    Timeline,
    Timings,
    Usage,
)
from ._summary import aggregates, finish_summary

PRODUCER = "opentelemetry-instrumentation-corevital"
#: Signal groups in the order ``capture.signals`` lists them.
LAYER_GROUPS = ("hidden", "hidden_full", "attention", "moe", "prompt", "encoder")
#: Timeline series the capture measures (perplexity is derived from entropy).
TIMELINE_CAPTURED = tuple(name for name in TIMELINE_SERIES if name != "perplexity")
#: What only a full capture has: every layer matrix but the hidden-state norm.
FULL_ONLY_MATRICES = (*HIDDEN_MATRICES[1:], *ATTENTION_MATRICES, *MOE_MATRICES)


def sequence_length(
    tokens: Sequence[int],
    eos_ids: Sequence[int],
    pad_id: int | None,
    max_new: int | None,
    steps: int,
    nonfinite: Sequence[bool] = (),
) -> tuple[int, str]:
    """(generated tokens, finish reason) for one returned row.

    A row stops at its first end-of-sequence token (counted). A row that ended
    by a stop string is padded afterwards, so trailing padding is removed when
    the pad token is not also the EOS token — but never a step whose logits
    were non-finite (``nonfinite[step]``): greedy decoding picks token 0 from
    NaN logits, which is the pad token of many models (T5), and those steps
    are the fault, not padding. If the whole batch ended before
    ``max_new_tokens``, every row stopped; otherwise a row without EOS hit the
    length limit.
    """
    eos = set(eos_ids)
    for i, token in enumerate(tokens):
        if token in eos:
            return i + 1, "stop"
    n = len(tokens)
    if pad_id is not None and pad_id not in eos:
        while n > 0 and tokens[n - 1] == pad_id and not (n - 1 < len(nonfinite) and nonfinite[n - 1]):
            n -= 1
        if n < len(tokens):
            return n, "stop"
    if max_new is not None and steps < max_new:
        return n, "stop"
    return n, "length"


def _nonfinite_steps(series: dict[str, list[float | None]]) -> list[bool]:
    """Per step, whether the logits were NaN or infinite (every statistic of such a step is None)."""
    return [e is None and p is None for e, p in zip(series["entropy"], series["top1_prob"])]


def _layer_series(capture: CaptureResult, row_at: Callable[[int], int | None], n: int) -> LayerSeries | None:
    """The [layer][step] matrices of one sequence; ``row_at(step)`` is its row at that step."""
    if (capture.hidden is None and capture.matrices is None) or not capture.layers:
        return None
    picks = [(i, t) for i, t in enumerate(capture.layer_steps) if t < n and row_at(t) is not None]
    series = LayerSeries(indices=list(capture.layers), steps=[t for _, t in picks])
    if capture.matrices is not None:  # one row per sequence, already [layer][step] and cleaned
        row, kept = row_at(0), len(picks)
        for name, per_row in capture.matrices.items():
            if row is not None and row < len(per_row):
                setattr(series, name, [values[:kept] for values in per_row[row]])
        return series
    count = len(capture.layers)

    rows = [(i, row_at(t)) for i, t in picks]

    def matrix(source: list, column: int | None) -> list[list[float | None]]:
        # (v - v == 0 is True exactly for finite floats: NaN and inf become None)
        if column is None:
            return [[v if (v := source[i][r][layer]) - v == 0 else None for i, r in rows] for layer in range(count)]
        return [[v if (v := source[i][r][layer][column]) - v == 0 else None for i, r in rows] for layer in range(count)]

    assert capture.hidden is not None  # (no matrices: beam search, hidden states always captured)
    if capture.hidden_full:
        for column, name in enumerate(HIDDEN_MATRICES):
            setattr(series, name, matrix(capture.hidden, column))
    else:
        series.hidden_norm = matrix(capture.hidden, None)
    for source, names in ((capture.attention, ATTENTION_MATRICES), (capture.moe, MOE_MATRICES)):
        if source is not None:
            for column, name in enumerate(names):
                setattr(series, name, matrix(source, column))
    return series


def _per_layer(table: list, column: int) -> list[float | None]:
    return [finite_or_none(r[column]) for r in table]


def _prompt_telemetry(capture: CaptureResult, mask: list[int] | None, prefill_row: int) -> PromptTelemetry | None:
    if capture.prompt_surprisal is None and capture.prompt_layers is None:
        return None
    telemetry = PromptTelemetry(tokens=sum(mask) if mask is not None else 0)
    if capture.prompt_surprisal is not None and prefill_row < len(capture.prompt_surprisal):
        values = capture.prompt_surprisal[prefill_row]
        if mask is None:
            kept = values
            telemetry.tokens = len(values) + 1
        else:
            kept = [v for i, v in enumerate(values) if mask[i] and i + 1 < len(mask) and mask[i + 1]]
        telemetry.surprisal = [finite_or_none(v) for v in kept]
        finite = [v for v in telemetry.surprisal if v is not None]
        telemetry.perplexity = 2.0 ** (sum(finite) / len(finite)) if finite else None
    if capture.prompt_layers is not None and prefill_row < len(capture.prompt_layers):
        table = capture.prompt_layers[prefill_row]
        telemetry.layers = list(capture.layers)
        telemetry.hidden_norm, telemetry.attn_sparsity = _per_layer(table, 0), _per_layer(table, 1)
        telemetry.basin, telemetry.basin_min = _per_layer(table, 2), _per_layer(table, 3)
    return telemetry


def _encoder_summary(capture: CaptureResult, input_row: int) -> EncoderSummary | None:
    if capture.encoder_layers is None or input_row >= len(capture.encoder_layers):
        return None
    table = capture.encoder_layers[input_row]
    return EncoderSummary(
        indices=list(capture.encoder_indices),
        hidden_norm=_per_layer(table, 0),
        attn_sparsity=_per_layer(table, 1),
        basin=_per_layer(table, 2),
        basin_min=_per_layer(table, 3),
    )


def _timeline(series: dict[str, list[float | None]], n: int) -> Timeline:
    entropy = series["entropy"][:n]
    timeline = Timeline(perplexity=[None if h is None else 2.0**h for h in entropy])
    for name in TIMELINE_CAPTURED:
        setattr(timeline, name, series[name][:n])
    return timeline


def _row_path(capture: CaptureResult, row: int) -> tuple[Callable[[int], int | None], int]:
    """(row at each step, prefill row) of one returned sequence: itself, or its beam's path."""
    if capture.row_of is None:
        return (lambda t: row), row
    path = capture.row_of[row] if row < len(capture.row_of) else []
    return (lambda t: path[t] if t < len(path) else None), (path[0] if path else row)


def _signal_groups(capture: CaptureResult, sequences: list[SequenceReport]) -> list[str]:
    groups = ["logits"] if capture.signals else []
    if capture.signals or capture.sequences:
        groups.append("tokens")
    seen = {
        name
        for s in sequences
        for name, present in (
            ("hidden", s.layers is not None and bool(s.layers.hidden_norm)),
            ("hidden_full", s.layers is not None and s.layers.hidden_mean is not None),
            ("attention", s.layers is not None and s.layers.attn_entropy is not None),
            ("moe", s.layers is not None and s.layers.router_entropy is not None),
            ("prompt", s.prompt is not None),
            ("encoder", s.encoder is not None),
        )
        if present
    }
    return groups + [g for g in LAYER_GROUPS if g in seen]


def build_report(
    capture: CaptureResult, model: ModelInfo, request: GenerationRequest, profile: Profile, content: ContentInput | None
) -> Report:
    """The diagnosed report of one generation, from its capture and what the call knew (content: None when off)."""
    params = request.params
    lengths = request.input_lengths
    rows = len(capture.sequences)
    per_input = max(1, rows // max(1, len(lengths))) if lengths else 1
    decode = content.decode if content is not None else None
    has_layers = bool(capture.layers) or capture.encoder_layers is not None

    sequences: list[SequenceReport] = []
    for row, full in enumerate(capture.sequences):
        generated = full[capture.prefix_len :]
        if capture.steps:
            generated = generated[: capture.steps]
        n, reason = sequence_length(
            generated,
            request.eos_token_ids,
            request.pad_token_id,
            params.max_new_tokens,
            capture.steps or len(generated),
            _nonfinite_steps(capture.series[row]) if capture.signals and row < len(capture.series) else (),
        )
        intervention = None
        if capture.stopped_at is not None and row < len(capture.stopped_at) and capture.stopped_at[row] >= 0:
            stop_step = capture.stopped_at[row]
            condition = (capture.stop_reason or [None] * (row + 1))[row] or "stop_on"
            if stop_step < n:  # the step that made the condition hold is the sequence's last token
                n, reason = stop_step + 1, "intervention"
                intervention = Intervention(condition, stop_step)
        tokens = generated[:n]
        input_row = row // per_input
        prompt_tokens = lengths[min(input_row, len(lengths) - 1)] if lengths else capture.prefix_len
        signals = capture.signals and row < len(capture.series)
        timeline = _timeline(capture.series[row], n) if signals else Timeline()
        seq = SequenceReport(
            index=row,
            prompt_tokens=prompt_tokens,
            output_tokens=n,
            finish_reason=reason,
            timeline=timeline,
            aggregates=aggregates(timeline),
            intervention=intervention,
        )
        if has_layers:
            row_at, prefill_row = _row_path(capture, row)
            masks = request.input_masks
            seq.layers = _layer_series(capture, row_at, n)
            seq.prompt = _prompt_telemetry(
                capture, masks[input_row] if masks and input_row < len(masks) else None, prefill_row
            )
            seq.encoder = _encoder_summary(capture, input_row)
        quote = decode if content is not None and content.quote_tokens else None
        pause()  # on the emission thread, a caller waiting for the GIL has it now (see _gil)
        diagnose_sequence(seq, profile, tokens=tokens, signals=signals, decode=quote)
        if content is not None:
            seq.token_ids = list(tokens)
            if decode is not None:
                seq.output_text = _safe_decode(decode, tokens)
            if content.decode_each is not None:
                seq.token_texts = _safe_decode_each(content.decode_each, tokens)
            if content.input_texts and input_row < len(content.input_texts):
                seq.input_text = content.input_texts[input_row]
        sequences.append(seq)

    step_ends = list(capture.step_ends)
    return Report(
        schema_version=SCHEMA_VERSION,
        report_id=uuid.uuid4().hex,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        producer=Producer(PRODUCER, __version__),
        model=model,
        request=params,
        capture=CaptureInfo(
            mode=request.capture_mode,
            signals=_signal_groups(capture, sequences),
            # capture off: nothing was asked for, so nothing is missing
            unavailable=dict(capture.unavailable) if request.capture_mode != "off" else {},
            error=capture.error,
            layers=list(capture.layers) if has_layers else [],
            step_stride=request.step_stride if has_layers else 1,
            attention_source=capture.attention_source if has_layers else None,
        ),
        usage=Usage(
            input_tokens=sum(lengths) if lengths else capture.prefix_len * rows,
            output_tokens=sum(s.output_tokens for s in sequences),
        ),
        timings=Timings(
            duration_s=request.duration_s,
            time_to_first_token_s=step_ends[0] if step_ends else None,
            time_per_output_token_s=(
                (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else None
            ),
            step_end_s=step_ends,
        ),
        thresholds=thresholds_of(profile),
        summary=finish_summary(sequences),
        sequences=sequences,
        trace_id=request.trace_id,
        span_id=request.span_id,
        input_messages=content.input_messages if content is not None else None,
        system_instructions=content.system_instructions if content is not None else None,
    )


def _safe_decode(decode: Callable[[list[int]], str], tokens: Sequence[int]) -> str | None:
    try:
        return str(decode(list(tokens)))
    except Exception:
        return None


def _safe_decode_each(decode_each: Callable[[list[int]], list[str]], tokens: Sequence[int]) -> list[str] | None:
    """Each token's text, or None when the tokenizer fails or answers with another count (a telemetry loss only)."""
    try:
        texts = [str(t) for t in decode_each(list(tokens))]
    except Exception:
        return None
    return texts if len(texts) == len(tokens) else None


def trim_to_summary(report: Report) -> Report:
    """The report at ``summary`` detail (``on_risk`` below its threshold): a copy, the given report is unchanged.

    Keeps logit signals, flags, risk and the per-layer hidden-state norms;
    removes the other layer matrices and prompt and encoder telemetry.
    """
    sequences = [
        dataclasses.replace(seq, prompt=None, encoder=None, layers=_hidden_norms_only(seq.layers))
        for seq in report.sequences
    ]
    capture = dataclasses.replace(
        report.capture,
        detail="summary",
        signals=[g for g in report.capture.signals if g in ("logits", "tokens", "hidden")],
    )
    return dataclasses.replace(report, capture=capture, sequences=sequences)


def _hidden_norms_only(layers: LayerSeries | None) -> LayerSeries | None:
    """A copy of ``layers`` without the matrices only ``full`` detail keeps."""
    if layers is None:
        return None
    kept = dataclasses.replace(layers)
    for name in FULL_ONLY_MATRICES:
        setattr(kept, name, None)
    return kept
