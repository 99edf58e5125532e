"""Compare runs: the same figures side by side, one signal overlaid, fingerprint distances.

For overlays each run contributes its riskiest sequence (the one whose risk
is the run's), so a batch run and a single run compare like for like.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .. import names as n
from . import diagnosis, otlp
from .index import RunDetail
from .series import SequenceSeries, sequences

#: Aggregates shown in the comparison table: report summary key, span attribute.
_AGGREGATES = (
    ("entropy mean", "entropy_mean", n.ENTROPY_MEAN),
    ("entropy max", "entropy_max", n.ENTROPY_MAX),
    ("surprisal mean", "surprisal_mean", n.SURPRISAL_MEAN),
    ("margin mean", "margin_mean", n.MARGIN_MEAN),
    ("top-10 mass mean", "topk_mass_mean", n.TOPK_MASS_MEAN),
)


def fmt(value: Any) -> str:
    """A figure as display text: three decimals, "–" for unknown, a list comma-separated."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _section(data: Any, *path: str) -> dict[str, Any]:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def aggregate(detail: RunDetail, report_key: str, span_key: str) -> float | None:
    """One aggregate of a run, from its report if it has one, else from its span."""
    if detail.report is not None:
        return otlp.finite(_section(detail.report, "summary", "aggregates").get(report_key))
    return otlp.finite((detail.span or {}).get(span_key))


def table(details: list[RunDetail]) -> list[dict[str, str]]:
    """Rows of figures, one column per run (named by its label), every value as display text."""

    def generation_mode(d: RunDetail) -> Any:
        return _section(d.report, "request").get("generation_mode") or (d.span or {}).get(n.GENERATION_MODE)

    fields: list[tuple[str, Any]] = [
        ("model", lambda d: d.summary.model),
        ("operation", lambda d: d.summary.operation),
        ("generation mode", generation_mode),
        ("capture mode", lambda d: d.summary.capture_mode),
        ("risk score", lambda d: d.summary.risk_score),
        ("risk level", lambda d: d.summary.risk_level),
        ("flags", lambda d: d.summary.flags),
        ("input tokens", lambda d: d.summary.input_tokens),
        ("output tokens", lambda d: d.summary.output_tokens),
        ("duration (s)", lambda d: d.summary.duration_s),
        ("time to first token (s)", lambda d: d.summary.ttft_s),
        ("time per output token (s)", lambda d: d.summary.tpot_s),
    ]
    fields += [(label, functools.partial(aggregate, report_key=rk, span_key=sk)) for label, rk, sk in _AGGREGATES]
    return [{"figure": label, **{d.summary.label: fmt(get(d)) for d in details}} for label, get in fields]


def riskiest_series(detail: RunDetail) -> SequenceSeries | None:
    """The series of the sequence the report calls riskiest (else the first one)."""
    found = sequences(detail)
    if not found:
        return None
    index = _section(detail.report, "summary").get("riskiest_sequence")
    return next((s for s in found if s.index == index), found[0])


def short_label(detail: RunDetail) -> str:
    """Legend name of a run: its short id, model and risk (the full label is too long for a legend)."""
    s = detail.summary
    risk = f"{s.risk_score:.2f}" if s.risk_score is not None else "–"
    return f"{s.short_id} · {s.model or 'unknown model'} · risk {risk}"


def overlay(details: list[RunDetail], signal: str) -> list[dict[str, Any]]:
    """(run, step, value) rows of one signal for every run that has it."""
    rows = []
    for d in details:
        seq = riskiest_series(d)
        if seq is None or signal not in seq.values:
            continue
        rows += [
            {"run": short_label(d), "step": step, "value": v}
            for step, v in zip(seq.steps, seq.values[signal])
            if v is not None
        ]
    return rows


def _records(detail: RunDetail) -> list[dict[str, Any]]:
    return [s for s in otlp.typed(detail.report or {}, "sequences", list, []) if isinstance(s, dict)]


def _riskiest_record(detail: RunDetail) -> dict[str, Any]:
    """The report's record of the sequence its summary calls riskiest (else the first one, else empty)."""
    seqs = _records(detail)
    riskiest = _section(detail.report, "summary").get("riskiest_sequence")
    return next((s for s in seqs if s.get("index") == riskiest), seqs[0] if seqs else {})


@dataclass(frozen=True)
class Fingerprint:
    """A run's fingerprint vector (None where an element is not finite) and its version (None when unstated)."""

    version: int | None
    vector: list[float | None]


def _vector(value: Any) -> list[float | None] | None:
    if not isinstance(value, list) or not value:
        return None
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value):
        return None
    return [otlp.finite(v) for v in value]


def fingerprint(detail: RunDetail) -> Fingerprint | None:
    """The fingerprint of the run's riskiest sequence, from where the files keep it.

    The report keeps it in ``sequences[].diagnosis.fingerprint`` (the riskiest
    sequence's is the run's), the span in ``corevital.fingerprint`` and
    ``corevital.fingerprint.version``; a report ``summary.fingerprint`` is read last.
    """
    seq = _riskiest_record(detail)
    kept = _section(seq, "diagnosis", "fingerprint")
    vector = _vector(kept.get("vector"))
    if vector is not None:
        return Fingerprint(otlp.typed(kept, "version", int, None), vector)
    span = detail.span or {}
    vector = _vector(span.get(n.FINGERPRINT))
    if vector is not None:
        return Fingerprint(otlp.typed(span, n.FINGERPRINT_VERSION, int, None), vector)
    legacy = diagnosis.fingerprint(detail)
    return Fingerprint(None, list(legacy)) if legacy is not None else None


def distance(a: Fingerprint, b: Fingerprint) -> float | None:
    """Euclidean distance over the elements both vectors have; None across versions or lengths."""
    if a.version is not None and b.version is not None and a.version != b.version:
        return None
    if len(a.vector) != len(b.vector):
        return None
    pairs = [(x, y) for x, y in zip(a.vector, b.vector) if x is not None and y is not None]
    return diagnosis.fingerprint_distance([x for x, _ in pairs], [y for _, y in pairs])


def fingerprint_distances(details: list[RunDetail]) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """A distance matrix (rows of run → distance to each run) and the runs that lack a fingerprint.

    The matrix is None unless every run has one; a pair of incompatible
    fingerprints (other version or length) has distance None.
    """
    prints = {d.summary.label: fingerprint(d) for d in details}
    missing = [label for label, fp in prints.items() if fp is None]
    if missing:
        return None, missing
    rows = []
    for a, fa in prints.items():
        rows.append({"run": a, **{b: distance(fa, fb) for b, fb in prints.items()}})  # type: ignore[arg-type]
    return rows, []


def differing(rows: list[dict[str, str]]) -> list[bool]:
    """For each table row, whether the runs' values differ (the figure column aside)."""
    return [len({v for k, v in row.items() if k != "figure"}) > 1 for row in rows]


@dataclass(frozen=True)
class Texts:
    """The prompt and output of a run's riskiest sequence, as captured (None when content capture was off)."""

    prompt: str | None
    output: str | None


def texts(detail: RunDetail) -> Texts:
    """The riskiest sequence's texts from the report; only content capture puts them there."""
    seq = _riskiest_record(detail)
    return Texts(otlp.typed(seq, "input_text", str, None), otlp.typed(seq, "output_text", str, None))
