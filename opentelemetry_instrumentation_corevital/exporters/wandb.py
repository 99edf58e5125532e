"""Weights & Biases: each generation's summary, risk and per-step timeline logged to a run.

For experiment tracking: one W&B step per generation, so the run's charts
show risk, entropy, surprisal, margin and latency across a sweep or an
evaluation. Every generation also logs its per-step timeline as a
``wandb.Table`` (``corevital/timeline``: one row per generated token), and the
run summary keeps the latest generation's values. Works the same in offline
mode (``WANDB_MODE=offline``; sync later with ``wandb sync``). The exporter
finishes a run it started itself when it shuts down, and leaves a run you
passed in open.
"""

from __future__ import annotations

import os
from typing import Any

from ..report import TIMELINE_SERIES, Report
from ..signals import finite_or_none

TIMELINE_KEY = "corevital/timeline"
TIMELINE_COLUMNS = ["sequence", "step", "token_id", *TIMELINE_SERIES]


def summary_values(report: Report) -> dict[str, Any]:
    """The scalar values logged for one generation (keys under ``corevital/``)."""
    summary, agg = report.summary, report.summary.aggregates
    values: dict[str, Any] = {
        "corevital/risk_score": summary.risk_score,
        "corevital/risk_level": summary.risk_level,
        "corevital/flags": ",".join(summary.flags),
        "corevital/input_tokens": report.usage.input_tokens,
        "corevital/output_tokens": report.usage.output_tokens,
        "corevital/duration_s": report.timings.duration_s,
        "corevital/time_to_first_token_s": report.timings.time_to_first_token_s,
        "corevital/time_per_output_token_s": report.timings.time_per_output_token_s,
        "corevital/entropy_mean": agg.entropy_mean,
        "corevital/entropy_max": agg.entropy_max,
        "corevital/surprisal_mean": agg.surprisal_mean,
        "corevital/margin_mean": agg.margin_mean,
        "corevital/top1_prob_mean": agg.top1_prob_mean,
        "corevital/model": report.model.name,
        "corevital/report_id": report.report_id,
        "corevital/trace_id": report.trace_id,
    }
    return {k: v for k, v in values.items() if v is not None}


def timeline_rows(report: Report) -> list[list[Any]]:
    """One row per sequence and step, in the order of ``TIMELINE_COLUMNS``, for a W&B table."""
    rows = []
    for sequence in report.sequences:
        timeline = sequence.timeline
        for step in range(len(timeline.entropy)):
            token = sequence.token_ids[step] if sequence.token_ids and step < len(sequence.token_ids) else None
            row: list[Any] = [sequence.index, step, token]
            for column in TIMELINE_COLUMNS[3:]:
                series = getattr(timeline, column)
                row.append(finite_or_none(series[step]) if step < len(series) else None)
            rows.append(row)
    return rows


class WandbReportExporter:
    """Logs reports to ``run``, or to a run it starts in ``project`` (``wandb.init`` settings from WANDB_* vars).

    A run it starts records neither the console nor the command line (``WANDB_CONSOLE`` turns the console back on;
    a ``settings=`` keyword replaces both choices).
    """

    name = "wandb"

    def __init__(self, project: str = "corevital", run: Any = None, **init_kwargs: Any) -> None:
        import wandb

        self._wandb = wandb
        self._owns_run = run is None
        if run is None and "settings" not in init_kwargs:
            # The run is for reports: the process's console (the CLI prints the answer) and its command line
            # (the CLI's --prompt), which wandb records by default, would send content too.
            settings = wandb.Settings(x_disable_meta=True)
            if "WANDB_CONSOLE" not in os.environ:
                settings.console = "off"
            init_kwargs["settings"] = settings
        self.run = run if run is not None else wandb.init(project=project, job_type="corevital", **init_kwargs)
        self.generations = 0

    def export(self, report: Report) -> None:
        """Log the report's summary values and its timeline table as one W&B step."""
        values = summary_values(report)
        columns: list[str | int] = [*TIMELINE_COLUMNS]  # wandb's hint is an invariant list
        table = self._wandb.Table(columns=columns, data=timeline_rows(report))
        self.run.log({**values, TIMELINE_KEY: table})
        self.generations += 1

    def shutdown(self) -> None:
        """Finish the run if we started it; a run the caller gave stays open."""
        if self._owns_run:
            self.run.finish()
