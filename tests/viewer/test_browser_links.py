"""A real browser on links into the viewer (issue 16): a Grafana data link and a Datadog trace link with ``seq=`` and
``tab=`` open exactly that run, sequence and tab, and a reload keeps them; Compare with five real runs draws every plot
at a real height, and so does Performance.

Real SmolLM2 runs only: the two of ``real_dir``, the batch and the stopped run of ``batch_dir``, and ``short_dir``'s.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index

from ..conftest import free_port
from .conftest import real_reports
from .served import browser_missing, drive, serve
from .test_link_templates import VIEWER, filled

pytestmark = pytest.mark.slow
MIN_PLOT_PX = 250  # a plot, not a flat line: Streamlit's default "fit" left ~60 px with 2 runs, less with 5


def _address(url: str, report: dict, **more: str) -> str:
    """The address the page writes for this run (the run's key, then seq and tab)."""
    extra = "".join(f"&{k}={v}" for k, v in more.items())
    return f"{url}?view=run&run={report['trace_id']}{quote(':')}{report['span_id']}{extra}"


def test_links_with_sequence_and_tab_and_compare_with_five_runs(tmp_path, real_dir, batch_dir, short_dir):
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    batch, stopped = real_reports(batch_dir)
    riskiest = batch["summary"]["riskiest_sequence"]
    flags = stopped["sequences"][0]["flags"]
    other = next(s for s in batch["sequences"] if s["index"] != riskiest)  # not the sequence the run opens on
    paths = [real_dir, batch_dir, short_dir]
    runs = build_index([str(p) for p in paths]).runs
    assert len(runs) == 5
    with serve(paths, free_port(), tmp_path / "view.log") as url:
        grafana = filled("grafana-viewer-link.json", batch["trace_id"]).replace(VIEWER, url)
        datadog = filled("datadog-viewer-link.json", str(int(stopped["trace_id"][-16:], 16))).replace(VIEWER, url)
        shots = drive(
            url,
            tmp_path,
            run="",
            links=[f"{grafana}&seq={other['index']}&tab=timeline", f"{datadog}&tab=layers"],
            compare=[r.label for r in runs],
            timeout=420,
        )
    by_name = {s["name"]: s for s in shots}
    assert list(by_name) == ["link0", "reload0", "link1", "reload1", "compare", "performance"]
    label = f"sequence {other['index']} · risk {other['risk']['score']:.2f}"
    for name in ("link0", "reload0"):  # the batch, on the sequence and tab the link named, before and after a reload
        shot = by_name[name]
        assert shot["url"] == _address(url, batch, seq=str(other["index"]), tab="timeline"), name
        assert shot["opened"]["tab"] == "Timeline" and shot["opened"]["seq"].startswith(label), shot["opened"]
        assert batch["span_id"] in shot["text"]
        # Its step table is coloured by the profile's own threshold, as the page says.
        assert f"Entropy cells: red above {batch['thresholds']['high_entropy_bits']:g} bits" in shot["text"]
    for name in ("link1", "reload1"):  # Datadog's decimal trace id: the stopped run (one sequence: no seq=)
        shot = by_name[name]
        assert shot["url"] == _address(url, stopped, tab="layers"), name
        assert shot["opened"] == {"tab": "Layers", "seq": None}
        assert stopped["span_id"] in shot["text"]
        # Its heatmap, each layer in its own range, is marked where the loop began and where stop_on ended it.
        text = " ".join(shot["text"].split())
        assert "hidden-state L2 norm (each layer scaled to its own range)" in text
        assert (
            f"Marked: loop onset (period {flags['repetition_period']}) at step {flags['repetition_onset_step']}" in text
        )
        assert f"stopped by stop_on (repetition_loop) at step {stopped['sequences'][0]['intervention']['step']}" in text
    compare = by_name["compare"]
    for run in runs:  # every run is in the comparison (its texts column, or the note that it has none)
        assert run.short_id in compare["text"], run.short_id
    assert len(compare["charts"]) == 4 and min(compare["charts"]) >= MIN_PLOT_PX, compare["charts"]
    performance = by_name["performance"]["charts"]
    assert len(performance) == 1 and performance[0] >= MIN_PLOT_PX, performance
