"""Filtering, sorting and tabulating the run list, as plain functions the app and the tests share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .index import RunSummary
from .text import preview

#: Sort choices offered by the run list, first one the default.
SORTS = {
    "newest first": lambda r: (r.started is None, -(r.started or 0.0)),
    "highest risk first": lambda r: (r.risk_score is None, -(r.risk_score or 0.0)),
    "longest first": lambda r: (r.duration_s is None, -(r.duration_s or 0.0)),
    "most output tokens first": lambda r: (r.output_tokens is None, -(r.output_tokens or 0)),
    "model": lambda r: (r.model or "", -(r.started or 0.0)),
}
LEVELS = ("low", "medium", "high")


def filter_runs(
    runs: Iterable[RunSummary],
    text: str = "",
    levels: Iterable[str] = (),
    flags: Iterable[str] = (),
    min_risk: float = 0.0,
) -> list[RunSummary]:
    """Runs whose model, provider, service, id, prompt or output contains ``text`` (any case), at one of
    ``levels`` (all when empty), with every flag in ``flags``, and risk at least ``min_risk`` (runs without a
    score pass only at 0)."""
    needle = text.strip().lower()
    levels, flags = set(levels), set(flags)
    out = []
    for r in runs:
        found = (r.model, r.provider, r.service, r.trace_id, r.span_id, r.report_id, r.prompt, r.output)
        haystack = " ".join(str(x) for x in found if x).lower()
        if needle and needle not in haystack:
            continue
        if levels and r.risk_level not in levels:
            continue
        if not flags <= set(r.flags):
            continue
        if min_risk > 0 and (r.risk_score is None or r.risk_score < min_risk):
            continue
        out.append(r)
    return out


def sort_runs(runs: Iterable[RunSummary], by: str) -> list[RunSummary]:
    """Runs in the order named by ``by`` (a key of :data:`SORTS`); runs missing the figure go last."""
    return sorted(runs, key=SORTS[by])


def rows(runs: Iterable[RunSummary]) -> list[dict[str, Any]]:
    """The run list table: one row per run, the columns the issue asks for and a few to find it again; the output's
    first words when content capture kept them."""
    return [
        {
            "time (UTC)": r.time_text,
            "output": preview(r.output) or "–",
            "model": r.model,
            "provider": r.provider,
            "risk": r.risk_score,
            "level": r.risk_level,
            "flags": ", ".join(r.flags) if r.flags else ("none" if r.risk_score is not None else "–"),
            "input tokens": r.input_tokens,
            "output tokens": r.output_tokens,
            "duration (s)": r.duration_s,
            "capture": r.capture_mode,
            "service": r.service,
            "id": r.short_id,
        }
        for r in runs
    ]


def flag_names(runs: Iterable[RunSummary]) -> list[str]:
    """Every flag that fired in any of ``runs``, sorted, for the filter."""
    return sorted({f for r in runs for f in r.flags})
