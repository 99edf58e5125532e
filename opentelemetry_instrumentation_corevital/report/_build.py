"""Turn a capture's host-side numbers into a :class:`Report`.

Pure Python on plain lists: it runs after ``generate`` returned its tensors,
on data already transferred, and every branch is unit-testable without a model.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import signals as sig
from ..signals.repetition import DEFAULT_MAX_PERIOD, DEFAULT_MIN_CYCLES, DEFAULT_MIN_TOKENS
from ..version import __version__
from ._model import (
    SCHEMA_VERSION,
    Aggregates,
    CaptureInfo,
    Flags,
    ModelInfo,
    Producer,
    Report,
    RequestInfo,
    RiskFactor,
    RiskInfo,
    SequenceReport,
    Summary,
    Thresholds,
    Timeline,
    Timings,
    Usage,
)

PRODUCER = "opentelemetry-instrumentation-corevital"


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
    high_entropy_bits: float = 4.0
    trace_id: str | None = None
    span_id: str | None = None
    content: bool = False
    decode: Any = None  # callable(list[int]) -> str, when content capture has a tokenizer
    input_texts: list[str] | None = None
    input_messages: Any = None


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


def _flags(timeline: Timeline, tokens: Sequence[int], high_entropy_bits: float, signals: bool) -> Flags:
    flags = Flags()
    loop = sig.find_repetition_loop(tokens)
    if loop is not None:
        flags.repetition_loop = True
        flags.repetition_onset_step = loop.onset_step
        flags.repetition_period = loop.period
        flags.repetition_share = loop.share
    if signals:
        bad = sig.nan_or_inf(timeline.entropy, timeline.top1_prob)
        flags.nan_or_inf, flags.nan_or_inf_steps, flags.nan_or_inf_first_step = bad.fired, bad.count, bad.first_step
        high = sig.high_entropy_steps(timeline.entropy, high_entropy_bits)
        flags.high_entropy = high.fired
        flags.high_entropy_steps = high.count
        flags.high_entropy_longest_run = high.longest_run
        flags.high_entropy_first_step = high.first_step
    return flags


def _risk(timeline: Timeline, aggregates: Aggregates, flags: Flags, n: int) -> RiskInfo:
    signals = {
        "entropy_mean": aggregates.entropy_mean,
        "high_entropy_fraction": (flags.high_entropy_steps / n) if n else None,
        "margin_mean": aggregates.margin_mean,
        "surprisal_mean": aggregates.surprisal_mean,
        "repetition_share": flags.repetition_share if flags.repetition_loop else 0.0,
    }
    risk = sig.risk_score(signals, nonfinite=flags.nan_or_inf)
    return RiskInfo(
        score=risk.score,
        level=risk.level,
        forced_by=risk.forced_by,
        factors=[
            RiskFactor(f.name, f.value, f.score, f.weight, f.contribution, f.description) for f in risk.factors
        ],
    )


def build_report(data: BuildInput) -> Report:
    req = data.request
    eos_ids = req.get("eos_token_ids") or []
    pad_id = req.get("pad_token_id")
    max_new = req.get("max_new_tokens")
    rows = len(data.sequences)
    per_input = max(1, rows // max(1, len(data.input_lengths))) if data.input_lengths else 1

    sequences: list[SequenceReport] = []
    for row, full in enumerate(data.sequences):
        generated = full[data.prefix_len:]
        if data.steps:
            generated = generated[: data.steps]
        n, reason = sequence_length(generated, eos_ids, pad_id, max_new, data.steps or len(generated))
        tokens = generated[:n]
        if data.input_lengths:
            prompt_tokens = data.input_lengths[min(row // per_input, len(data.input_lengths) - 1)]
        else:
            prompt_tokens = data.prefix_len
        signals = data.signals_captured and row < len(data.series)
        timeline = _timeline(data.series[row], n) if signals else Timeline()
        aggregates = _aggregates(timeline)
        flags = _flags(timeline, tokens, data.high_entropy_bits, signals)
        seq = SequenceReport(
            index=row,
            prompt_tokens=prompt_tokens,
            output_tokens=n,
            finish_reason=reason,
            timeline=timeline,
            aggregates=aggregates,
            flags=flags,
            risk=_risk(timeline, aggregates, flags, n) if signals else None,
        )
        if data.content:
            seq.token_ids = list(tokens)
            if data.decode is not None:
                seq.output_text = _safe_decode(data.decode, tokens)
            if data.input_texts and row // per_input < len(data.input_texts):
                seq.input_text = data.input_texts[row // per_input]
        sequences.append(seq)

    summary = _summary(sequences)
    step_ends = list(data.step_end_s)
    ttft = step_ends[0] if step_ends else None
    tpot = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else None

    signal_groups = ["logits"] if data.signals_captured else []
    if data.signals_captured or data.sequences:
        signal_groups.append("tokens")
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
        thresholds=Thresholds(
            high_entropy_bits=data.high_entropy_bits,
            repetition_min_cycles=DEFAULT_MIN_CYCLES,
            repetition_min_tokens=DEFAULT_MIN_TOKENS,
            repetition_max_period=DEFAULT_MAX_PERIOD,
        ),
        summary=summary,
        sequences=sequences,
        trace_id=data.trace_id,
        span_id=data.span_id,
        input_messages=data.input_messages if data.content else None,
    )


def _summary(sequences: list[SequenceReport]) -> Summary:
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
    return summary


def _safe_decode(decode: Any, tokens: Sequence[int]) -> str | None:
    try:
        return str(decode(list(tokens)))
    except Exception:
        return None
