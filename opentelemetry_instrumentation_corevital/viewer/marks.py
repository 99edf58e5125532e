"""Where the diagnosis saw something start, as marks on a sequence's timeline and heatmaps.

A loop's onset, an attention collapse's onset, each compound signal's and early warning's onset, and the step
``stop_on`` ended the sequence at: from ``sequences[]`` of the report, else from the span (which keeps the riskiest
sequence's compound signals and warnings and the earliest loop onset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import names as n
from . import otlp
from .index import RunDetail


@dataclass(frozen=True)
class Mark:
    """One labelled step of a sequence."""

    step: int
    label: str
    kind: str  # loop, collapse, compound, warning, stop


def _step(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _from_sequence(seq: dict[str, Any]) -> list[Mark]:
    found: list[Mark] = []
    flags = otlp.typed(seq, "flags", dict, {})
    if flags.get("repetition_loop") is True and (step := _step(flags.get("repetition_onset_step"))) is not None:
        period = flags.get("repetition_period")
        found.append(Mark(step, f"loop onset (period {period})" if _step(period) else "loop onset", "loop"))
    if (
        flags.get("attention_collapse") is True
        and (step := _step(flags.get("attention_collapse_onset_step"))) is not None
    ):
        found.append(Mark(step, "attention collapse onset", "collapse"))
    diagnosis = otlp.typed(seq, "diagnosis", dict, {})
    for kind, key in (("compound", "compound"), ("warning", "warnings")):
        for item in _dicts(diagnosis.get(key)):
            if isinstance(item.get("name"), str) and (step := _step(item.get("onset_step"))) is not None:
                found.append(Mark(step, item["name"], kind))
    intervention = otlp.typed(seq, "intervention", dict, {})
    if (step := _step(intervention.get("step"))) is not None:
        found.append(Mark(step, f"stopped by stop_on ({intervention.get('condition')})", "stop"))
    return found


def _from_span(attrs: dict[str, Any]) -> list[Mark]:
    found: list[Mark] = []
    if attrs.get(n.FLAG_PREFIX + "repetition_loop") is True:
        if (step := _step(attrs.get(n.REPETITION_ONSET_STEP))) is not None:
            found.append(Mark(step, "loop onset", "loop"))
    if (step := _step(attrs.get(n.ATTENTION_COLLAPSE_ONSET_STEP))) is not None:
        found.append(Mark(step, "attention collapse onset", "collapse"))
    for kind, names_key, steps_key in (
        ("compound", n.COMPOUND, n.COMPOUND_ONSET_STEPS),
        ("warning", n.WARNINGS, n.WARNING_ONSET_STEPS),
    ):
        names = otlp.typed(attrs, names_key, list, [])
        steps = otlp.typed(attrs, steps_key, list, [])
        found += [Mark(s, m, kind) for m, s in zip(names, steps) if isinstance(m, str) and _step(s) is not None]
    return found


def marks(detail: RunDetail, index: int, riskiest: bool) -> list[Mark]:
    """The marks of sequence ``index``, by step; ``riskiest`` says whether it is the run's riskiest sequence (a span
    describes only that one)."""
    if detail.report is not None:
        seqs = _dicts(detail.report.get("sequences"))
        seq = next((s for p, s in enumerate(seqs) if otlp.typed(s, "index", int, p) == index), {})
        found = _from_sequence(seq)
    else:
        found = _from_span(detail.span or {}) if riskiest else []
    return sorted(found, key=lambda m: (m.step, m.kind, m.label))


def rows(found: list[Mark]) -> list[dict[str, Any]]:
    """The marks as chart rows (step, label, kind)."""
    return [{"step": m.step, "label": m.label, "kind": m.kind} for m in found]
