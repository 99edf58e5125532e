"""Per-step series of each sequence, from the report when there is one, else from the span.

The report keeps every step; the span keeps the series thinned to
``corevital.timeline.stride`` and concatenated over sequences
(``corevital.timeline.lengths`` says where each one ends). Both become the
same :class:`SequenceSeries`, with the real step numbers, so charts and
tables need not care which carrier they came from. Non-finite values are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import names as n
from . import otlp, text
from .index import RunDetail

#: Signals in the order the views show them; ``perplexity`` is only in reports.
SIGNALS = ("entropy", "surprisal", "margin", "topk_mass", "top1_prob", "perplexity")
LABELS = {
    "entropy": "entropy (bits)",
    "surprisal": "surprisal (bits)",
    "margin": "top-1 − top-2 margin",
    "topk_mass": "top-10 mass",
    "top1_prob": "top-1 probability",
    "perplexity": "perplexity",
}
#: Characters of a token's text a step table cell keeps.
TABLE_CHARS = 40


@dataclass
class SequenceSeries:
    """One sequence's per-step signals, from the report or else the span."""

    index: int
    steps: list[int]
    values: dict[str, list[float | None]]  # signal -> one value per entry of ``steps``
    source: str  # "report" or "span"
    stride: int = 1
    token_ids: list[int] | None = None  # content capture only, one per step
    token_texts: list[str] | None = None  # content capture only (schema 1.4): each step's token as text
    output_text: str | None = None
    finish_reason: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    risk: float | None = None  # this sequence's risk score

    def fired(self) -> list[str]:
        """The flags that fired for this sequence, in the report's order."""
        return [name for name in n.FLAG_NAMES if self.flags.get(name) is True]

    def label(self) -> str:
        """What the sequence picker says: the index, the risk and the flags fired (a batch's loop stands out)."""
        risk = "risk –" if self.risk is None else f"risk {self.risk:.2f}"
        return " · ".join((f"sequence {self.index}", risk, ", ".join(self.fired()) or "no flags"))

    def rows(self) -> list[dict[str, Any]]:
        """One row per step: step, token text and id (when captured), then each signal."""
        out = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            if self.token_texts is not None:
                row["token"] = text.label(self.token_texts[i], TABLE_CHARS) if i < len(self.token_texts) else None
            if self.token_ids is not None:
                row["token id"] = self.token_ids[i] if i < len(self.token_ids) else None
            for name, values in self.values.items():
                row[name] = values[i] if i < len(values) else None
            out.append(row)
        return out


def sequences(detail: RunDetail) -> list[SequenceSeries]:
    """Every sequence's series, or an empty list when the run has no logit signals."""
    if detail.report is not None:
        return _from_report(detail.report)
    if detail.span is not None:
        return _from_span(detail.span)
    return []


def _from_report(report: dict[str, Any]) -> list[SequenceSeries]:
    out = []
    sequences = otlp.typed(report, "sequences", list, [])
    for position, seq in enumerate(sequences):
        if not isinstance(seq, dict):
            continue
        timeline = otlp.typed(seq, "timeline", dict, {})
        values = {
            name: [otlp.finite(v) for v in timeline[name]]
            for name in SIGNALS
            if isinstance(timeline.get(name), list) and timeline[name]
        }
        length = max((len(v) for v in values.values()), default=0)
        if not length:
            continue
        token_ids = seq.get("token_ids")
        out.append(
            SequenceSeries(
                index=otlp.typed(seq, "index", int, position),
                steps=list(range(length)),
                values=values,
                source="report",
                token_ids=list(token_ids[:length]) if isinstance(token_ids, list) else None,
                token_texts=text.token_texts(seq),
                output_text=otlp.typed(seq, "output_text", str, None),
                finish_reason=seq.get("finish_reason"),
                flags=otlp.typed(seq, "flags", dict, {}),
                risk=otlp.finite(otlp.typed(seq, "risk", dict, {}).get("score")),
            )
        )
    return out


def _from_span(attrs: dict[str, Any]) -> list[SequenceSeries]:
    raw = {name: attrs.get(n.STEP_PREFIX + name) for name in SIGNALS}
    arrays = {
        name: [otlp.finite(v) for v in values] for name, values in raw.items() if isinstance(values, list) and values
    }
    if not arrays:
        return []
    total = max(len(v) for v in arrays.values())
    stride = otlp.typed(attrs, n.TIMELINE_STRIDE, int, 1)
    lengths = attrs.get(n.TIMELINE_LENGTHS)
    if not (isinstance(lengths, list) and all(isinstance(x, int) for x in lengths) and sum(lengths) == total):
        lengths = [total]
    reasons = attrs.get(n.RESPONSE_FINISH_REASONS) or []
    risks = otlp.typed(attrs, n.SEQUENCE_RISK_SCORES, list, [])
    out = []
    start = 0
    for index, length in enumerate(lengths):
        if length:
            out.append(
                SequenceSeries(
                    index=index,
                    steps=[k * stride for k in range(length)],
                    values={name: values[start : start + length] for name, values in arrays.items()},
                    source="span",
                    stride=stride,
                    finish_reason=reasons[index] if index < len(reasons) else None,
                    risk=otlp.finite(risks[index]) if index < len(risks) else None,
                )
            )
        start += length
    return out


def riskiest(seqs: list[SequenceSeries], detail: RunDetail) -> SequenceSeries:
    """The sequence a run page opens on: the report's ``summary.riskiest_sequence``, else the highest risk, else
    the first (a batch's looping sequence, not sequence 0)."""
    named = otlp.typed(otlp.typed(detail.report or {}, "summary", dict, {}), "riskiest_sequence", int, None)
    found = next((s for s in seqs if s.index == named), None)
    return found or max(seqs, key=lambda s: -1.0 if s.risk is None else s.risk)


def long_rows(seq: SequenceSeries, signals: tuple[str, ...] = SIGNALS) -> list[dict[str, Any]]:
    """(step, signal, value) rows for charts that draw several signals, skipping missing values."""
    return [
        {"step": step, "signal": name, "value": value}
        for name in signals
        if name in seq.values
        for step, value in zip(seq.steps, seq.values[name])
        if value is not None
    ]
