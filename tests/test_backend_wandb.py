"""W&B: an offline run is written through configure(exporters="wandb"), read back from its .wandb file, and every
logged value equals the report's (summary scalars, risk, and the per-step timeline table)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.exporters.wandb import TIMELINE_COLUMNS, TIMELINE_KEY, summary_values

from ._services import wait_until
from ._wandb_reader import read_run

pytestmark = pytest.mark.slow


def test_offline_run_round_trip(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="wandb", wandb_project="corevital-test") as config:  # leaving finishes the run
        instrumentor.instrument(**config.instrument_kwargs(on_report=reports.append))
        try:
            for tokens in (6, 3):
                prompt = torch.tensor([[1, 17, 42, 99, 7]])
                tiny_llama.generate(
                    prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False
                )
        finally:
            instrumentor.uninstrument()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")

    def history_rows():
        """wandb-core writes the run file on its own; under load it lags finish() by a moment."""
        run = read_run(run_dir)
        rows = [row for row in run["history"] if "corevital/risk_score" in row]
        return (run, rows) if len(rows) >= 2 and "corevital/report_id" in run["summary"] else None

    run, rows = wait_until(history_rows, timeout=60, what="both generations in the offline run file")
    assert len(rows) == 2
    for row, report in zip(rows, reports):
        for key, expected in summary_values(report).items():
            assert row[key] == expected, key
        prefix = TIMELINE_KEY + "/"
        table = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
        assert table["nrows"] == report.usage.output_tokens and table["ncols"] == len(TIMELINE_COLUMNS)
        assert table["_type"] == "table-file"
        data = json.loads((run_dir / "files" / table["path"]).read_text())
        assert data["columns"] == TIMELINE_COLUMNS
        timeline = report.sequences[0].timeline
        assert len(data["data"]) == len(timeline.entropy) == report.usage.output_tokens
        for step, line in enumerate(data["data"]):
            assert line[:3] == [0, step, None]  # no token ids without content capture
            for column, value in zip(TIMELINE_COLUMNS[3:], line[3:]):
                assert math.isclose(value, getattr(timeline, column)[step], rel_tol=0, abs_tol=0), (column, step)
    assert run["summary"]["corevital/risk_score"] == reports[-1].summary.risk_score
    assert run["summary"]["corevital/report_id"] == reports[-1].report_id
    assert os.path.getsize(next(run_dir.glob("run-*.wandb"))) > 0
