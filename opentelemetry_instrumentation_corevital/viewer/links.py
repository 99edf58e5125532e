"""Links into the viewer: ``?run=<trace_id>[:<span_id>]&seq=N&tab=NAME&view=...`` opens a run (that sequence, that
tab), so a trace id from Jaeger, Grafana or Datadog (or a colleague's link) leads to it, and a reload keeps the view."""

from __future__ import annotations

from .index import RunSummary

RUN = "run"
VIEW = "view"
SEQ = "seq"
TAB = "tab"
#: The run page's tabs: the name a link gives each (``tab=``) and its label; the first is the one a run opens on.
TABS = {
    "risk": "Risk & flags",
    "timeline": "Timeline",
    "layers": "Layers",
    "prompt": "Prompt",
    "performance": "Performance",
    "details": "Details",
}


def _ids(run: RunSummary) -> list[str]:
    return [i for i in (run.key, run.trace_id, run.span_id, run.report_id) if i]


def _decimal(hex_id: str | None) -> str | None:
    """The id as Datadog shows it: the decimal of its low 64 bits (a 128-bit OTel trace id keeps its high half in
    ``otel.trace_id``)."""
    try:
        return str(int(hex_id[-16:], 16)) if hex_id else None
    except ValueError:
        return None


def matching(runs: list[RunSummary], wanted: str) -> list[RunSummary]:
    """The runs an id names exactly (key, trace, span or report id, or a Datadog decimal trace or span id), else
    those whose id starts with it."""
    wanted = wanted.strip().lower()
    if not wanted:
        return []
    exact = [r for r in runs if wanted in (i.lower() for i in _ids(r))]
    exact = exact or [r for r in runs if wanted in (_decimal(r.trace_id), _decimal(r.span_id))]
    return exact or [r for r in runs if any(i.lower().startswith(wanted) for i in _ids(r))]


def linked(runs: list[RunSummary], wanted: str) -> RunSummary | None:
    """The run a link opens: of those it names (a trace id can name several), the riskiest."""
    found = matching(runs, wanted)
    return max(found, key=lambda r: r.risk_score if r.risk_score is not None else -1.0) if found else None


def run_param(run: RunSummary) -> str:
    """The ``run`` value that links to this run: ``trace_id:span_id`` (its key)."""
    return run.key


def tab_label(name: str | None) -> str:
    """The tab a link's ``tab=`` names (any case), else the first tab."""
    return TABS.get((name or "").strip().lower(), next(iter(TABS.values())))


def tab_name(label: str | None) -> str | None:
    """The ``tab=`` value of a tab label; None for the first tab (a run opens on it, the link need not say so)."""
    names = [k for k, v in TABS.items() if v == label]
    return names[0] if names and names[0] != next(iter(TABS)) else None


def seq_number(value: str | None) -> int | None:
    """A link's ``seq=`` as a sequence index, or None when it is not a whole number >= 0."""
    text = (value or "").strip()
    return int(text) if text.isdigit() else None
