"""Risk, flags and the diagnosis fields of a run, read without inventing anything.

Risk factor details (value, score, weight, description) are only in the
report; a span alone gives factor names and contributions. Narrative,
blamed layers and fingerprint (``summary.narrative``, ``summary.blamed_layers``,
``summary.fingerprint``) are shown when a report has them, in whatever of
the plausible shapes they come (text or list; layer numbers or records;
a vector or a record holding one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import names as n
from . import otlp
from .index import RunDetail


@dataclass
class Risk:
    """The run's risk as the viewer shows it, from the report or else the span."""

    score: float | None
    level: str | None
    forced_by: str | None = None
    factors: list[dict[str, Any]] = field(default_factory=list)  # largest contribution first


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _summary(detail: RunDetail) -> dict[str, Any]:
    return _dict((detail.report or {}).get("summary"))


def _riskiest(report: dict[str, Any]) -> dict[str, Any] | None:
    sequences = _dicts(report.get("sequences"))
    if not sequences:
        return None
    index = _dict(report.get("summary")).get("riskiest_sequence")
    chosen = next((s for s in sequences if s.get("index") == index), sequences[0])
    return chosen


def risk(detail: RunDetail) -> Risk:
    """The riskiest sequence's risk and factors, or the span's score when there is no report."""
    if detail.report is not None:
        summary = _summary(detail)
        seq = _riskiest(detail.report) or {}
        info = _dict(seq.get("risk"))
        factors = [dict(f) for f in _dicts(info.get("factors")) if isinstance(f.get("name"), str)]
        factors.sort(key=lambda f: -(otlp.finite(f.get("contribution")) or 0.0))
        level = otlp.typed(summary, "risk_level", str, None)
        return Risk(otlp.finite(summary.get("risk_score")), level, info.get("forced_by"), factors)
    attrs = detail.span or {}
    names = attrs.get(n.RISK_FACTORS) or []
    contributions = attrs.get(n.RISK_FACTOR_CONTRIBUTIONS) or []
    factors = [{"name": name, "contribution": otlp.finite(c)} for name, c in zip(names, contributions)]
    return Risk(otlp.finite(attrs.get(n.RISK_SCORE)), attrs.get(n.RISK_LEVEL), None, factors)


def flag_rows(detail: RunDetail) -> list[dict[str, Any]]:
    """One row per flag and sequence (the report), or per flag (the span): fired, and what it saw."""
    if detail.report is not None:
        rows = []
        thresholds = _dict(detail.report.get("thresholds"))
        for seq in _dicts(detail.report.get("sequences")):
            f = seq.get("flags")
            if not isinstance(f, dict) or not f:
                continue
            for name in n.FLAG_NAMES:
                rows.append(
                    {
                        "sequence": seq.get("index"),
                        "flag": name,
                        "fired": bool(f.get(name)),
                        "detail": _flag_detail(name, f, thresholds),
                    }
                )
        return rows
    attrs = detail.span or {}
    rows = []
    for name in n.FLAG_NAMES:
        fired = attrs.get(n.FLAG_PREFIX + name)
        if fired is None:
            continue
        text = ""
        if name == "high_entropy" and attrs.get(n.HIGH_ENTROPY_STEPS) is not None:
            text = f"{attrs[n.HIGH_ENTROPY_STEPS]} steps above the threshold"
        if name == "repetition_loop" and attrs.get(n.REPETITION_ONSET_STEP) is not None:
            text = f"from step {attrs[n.REPETITION_ONSET_STEP]}"
        rows.append({"sequence": None, "flag": name, "fired": bool(fired), "detail": text})
    return rows


def _flag_detail(name: str, f: dict[str, Any], thresholds: dict[str, Any]) -> str:
    if name == "high_entropy":
        bits = thresholds.get("high_entropy_bits")
        over = f"> {bits:g} bits" if isinstance(bits, (int, float)) else "above the threshold"
        text = f"{f.get('high_entropy_steps', 0)} steps {over}, longest run {f.get('high_entropy_longest_run', 0)}"
        if f.get("high_entropy_first_step") is not None:
            text += f", first at step {f['high_entropy_first_step']}"
        return text
    if not f.get(name):  # the other flags describe only what fired
        return ""
    if name == "repetition_loop":
        share = otlp.finite(f.get("repetition_share"))
        return f"from step {f.get('repetition_onset_step')}, period {f.get('repetition_period')}" + (
            f", {share:.0%} of the output" if share is not None else ""
        )
    if name == "nan_or_inf":
        return f"{f.get('nan_or_inf_steps', 0)} steps, first at step {f.get('nan_or_inf_first_step')}"
    if name == "mid_layer_anomaly":
        layers = ", ".join(f"L{i}" for i in f.get("mid_layer_anomaly_layers") or [])
        ratio = otlp.finite(f.get("mid_layer_anomaly_ratio"))
        return f"layers {layers or '?'}, first at step {f.get('mid_layer_anomaly_first_step')}" + (
            f", norm {ratio:.1f}x off" if ratio is not None else ""
        )
    if name == "attention_collapse":
        share = otlp.finite(f.get("attention_collapse_share"))
        return f"from step {f.get('attention_collapse_onset_step')}" + (
            f", {share:.0%} of heads collapsed" if share is not None else ""
        )
    return ""


@dataclass
class Intervention:
    """A sequence that ``stop_on`` ended: at which step, on which condition."""

    sequence: int
    condition: str
    step: int


def interventions(detail: RunDetail) -> list[Intervention]:
    """Every sequence ``stop_on`` stopped: ``sequences[].intervention`` in the report, else the span's lists."""
    if detail.report is not None:
        out = []
        for position, seq in enumerate(_dicts(detail.report.get("sequences"))):
            info = _dict(seq.get("intervention"))
            condition, step = info.get("condition"), info.get("step")
            if isinstance(condition, str) and isinstance(step, int):
                out.append(Intervention(otlp.typed(seq, "index", int, position), condition, step))
        return out
    attrs = detail.span or {}
    conditions = otlp.typed(attrs, n.INTERVENTION_CONDITIONS, list, [])
    steps = otlp.typed(attrs, n.INTERVENTION_STEPS, list, [])
    return [
        Intervention(i, c, s)
        for i, (c, s) in enumerate(zip(conditions, steps))
        if isinstance(c, str) and c and isinstance(s, int) and s >= 0
    ]


def finish_reasons(detail: RunDetail) -> list[str]:
    """How the sequences ended (``length``, ``stop``, ``intervention``...), each once, in sequence order."""
    if detail.report is not None:
        found = [seq.get("finish_reason") for seq in _dicts(detail.report.get("sequences"))]
    else:
        found = otlp.typed(detail.span or {}, n.RESPONSE_FINISH_REASONS, list, [])
    return list(dict.fromkeys(r for r in found if isinstance(r, str) and r))


def narrative(detail: RunDetail) -> str | None:
    """The report's narrative as one text, whatever shape it was written in, else the span's, or None."""
    value = _summary(detail).get("narrative") if detail.report is not None else (detail.span or {}).get(n.NARRATIVE)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list):
        parts = [str(p).strip() for p in value if isinstance(p, (str, int, float)) and str(p).strip()]
        return " ".join(parts) or None
    if isinstance(value, dict):
        text = value.get("text") or value.get("summary")
        return text.strip() if isinstance(text, str) and text.strip() else None
    return None


def blamed_layers(detail: RunDetail) -> list[dict[str, Any]]:
    """``summary.blamed_layers`` as records with a ``layer`` key (numbers become ``{"layer": n}``)."""
    value = _summary(detail).get("blamed_layers")
    out = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append({"layer": item})
        elif isinstance(item, dict):
            layer = item.get("layer", item.get("index"))
            if isinstance(layer, int) and not isinstance(layer, bool):
                out.append({"layer": layer, **{k: v for k, v in item.items() if k not in ("layer", "index")}})
    return out


def blamed_layer_indices(detail: RunDetail) -> list[int]:
    """The layers the diagnosis blames, ascending and without repeats."""
    return sorted({b["layer"] for b in blamed_layers(detail)})


def fingerprint(detail: RunDetail) -> list[float] | None:
    """``summary.fingerprint`` as a vector of numbers, or None."""
    value = _summary(detail).get("fingerprint")
    if isinstance(value, dict):
        value = value.get("vector", value.get("values"))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        if all(math.isfinite(v) for v in value):
            return [float(v) for v in value]
    return None


def fingerprint_distance(a: list[float], b: list[float]) -> float | None:
    """Euclidean distance; None when the vectors have different lengths (different fingerprint versions)."""
    if len(a) != len(b):
        return None
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
