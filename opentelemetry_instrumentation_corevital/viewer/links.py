"""Links into the viewer: ``?run=<trace_id>[:<span_id>]&view=...`` opens a run, so a trace id from Jaeger,
Grafana or Datadog (or a colleague's link) leads to it, and a reload keeps the view."""

from __future__ import annotations

from .index import RunSummary

RUN = "run"
VIEW = "view"


def _ids(run: RunSummary) -> list[str]:
    return [i for i in (run.key, run.trace_id, run.span_id, run.report_id) if i]


def matching(runs: list[RunSummary], wanted: str) -> list[RunSummary]:
    """The runs an id names exactly (key, trace, span or report id), else those whose id starts with it."""
    wanted = wanted.strip().lower()
    if not wanted:
        return []
    exact = [r for r in runs if wanted in (i.lower() for i in _ids(r))]
    return exact or [r for r in runs if any(i.lower().startswith(wanted) for i in _ids(r))]


def linked(runs: list[RunSummary], wanted: str) -> RunSummary | None:
    """The run a link opens: of those it names (a trace id can name several), the riskiest."""
    found = matching(runs, wanted)
    return max(found, key=lambda r: r.risk_score if r.risk_score is not None else -1.0) if found else None


def run_param(run: RunSummary) -> str:
    """The ``run`` value that links to this run: ``trace_id:span_id`` (its key)."""
    return run.key
