"""The Streamlit viewer: a thin page layer over the pure modules of this package.

Run it with ``corevital view [PATH ...]`` (or ``streamlit run`` on this file or
on ``dashboards/corevital_viewer.py``). Paths come from ``main(paths)``, else
the ``COREVITAL_VIEW_PATHS`` environment variable (``os.pathsep``-separated),
else ``./corevital-data``. Everything shown is computed by the pure modules;
this file only lays it out, so it imports them absolutely (Streamlit runs it
as a script, not as part of the package).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from opentelemetry_instrumentation_corevital.viewer import (
    _charts,
    compare,
    diagnosis,
    links,
    messages,
    runlist,
    series,
    sources,
    url_state,
)
from opentelemetry_instrumentation_corevital.viewer.index import Index, RunDetail, RunSummary, build_index, load_run
from opentelemetry_instrumentation_corevital.viewer.plain import plain
from opentelemetry_instrumentation_corevital.viewer.run_tabs import (
    CHARTED,
    capture_text,
    guarded,
    ms,
    num,
    tab_details,
    tab_layers,
    tab_performance,
    tab_prompt,
    tab_risk,
    tab_timeline,
)
from opentelemetry_instrumentation_corevital.viewer.run_text import show_text

ENV_PATHS = "COREVITAL_VIEW_PATHS"
DEFAULT_PATHS = ["corevital-data"]
VIEWS = ("Runs", "Run", "Compare", "Performance")
SHOWN_PROBLEMS = 8
RUN_TABLE = "run_table"
DIFFERS_CSS = "background-color: rgba(255, 165, 0, 0.25)"


def paths_from_env() -> list[str]:
    """The files to read: the environment's path list, else the default folder."""
    raw = os.environ.get(ENV_PATHS, "")
    return [p for p in raw.split(os.pathsep) if p] or list(DEFAULT_PATHS)


def _cached_index(paths: list[str], roots: tuple[Path, ...]) -> Index:
    files, _ = sources.discover(paths, roots)
    # The signature (size and mtime of every file) is part of the cache key: new lines mean a new index.
    return _index_keyed(tuple(paths), roots, sources.signature(files))


@st.cache_data(show_spinner="Reading files…", max_entries=8)
def _index_keyed(paths: tuple[str, ...], roots: tuple[Path, ...], signature: tuple) -> Index:
    return build_index(list(paths), roots=roots)


@st.cache_data(show_spinner="Reading the run…", max_entries=64)
def _detail(summary: RunSummary) -> RunDetail:
    return load_run(summary)


def _open_picked() -> None:
    """ "Open run": show the run picked beside the button. Reads the pick from the session state, which holds
    what the browser sent with the click, so a click that beats the pick's own rerun still opens that run."""
    st.session_state["run"] = st.session_state["open_pick"]
    st.session_state["view"] = "Run"


def _open_row(keys: list[str]) -> None:
    """A click on a row of the run list (any cell, or its row marker) opens that run; ``keys`` are the rows'
    runs as the page listed them. The click is then forgotten, so Back to the list and the same row opens it again."""
    picked = st.session_state[RUN_TABLE]["selection"]
    rows = picked["rows"] or [row for row, _ in picked["cells"]]
    if rows and rows[0] < len(keys):
        st.session_state["run"] = keys[rows[0]]
        st.session_state["view"] = "Run"
    st.session_state[RUN_TABLE] = {"selection": {"rows": [], "columns": [], "cells": []}}


def _compare_picked() -> None:
    st.session_state["compare"] = list(st.session_state["compare_pick"])
    st.session_state["view"] = "Compare"


# --- page parts ---------------------------------------------------------------------------------------------------


def show_problems(problems: list[str]) -> None:
    """Warn about unreadable lines, the first few openly and the rest folded away."""
    for text in problems[:SHOWN_PROBLEMS]:
        st.warning(plain(text))
    if len(problems) > SHOWN_PROBLEMS:
        with st.expander(f"{len(problems) - SHOWN_PROBLEMS} more problems"):
            for text in problems[SHOWN_PROBLEMS:]:
                st.warning(plain(text))


def view_runs(index: Index) -> None:
    st.title("Runs")
    runs = index.runs
    c = st.columns(4)
    c[0].metric("Runs", len(runs))
    c[1].metric("High risk", sum(1 for r in runs if r.risk_level == "high"))
    c[2].metric("Flagged", sum(1 for r in runs if r.flags))
    c[3].metric("Files read", index.counts["files"])
    if not runs:
        st.info(messages.NO_RUNS)
        return
    f = st.columns([3, 2, 2, 2, 2])
    text = f[0].text_input("Search model, provider, service or id, prompt and output", key="f_text")
    levels = f[1].multiselect("Risk level", runlist.LEVELS, key="f_levels")
    flags = f[2].multiselect("Has flags", runlist.flag_names(runs), key="f_flags")
    min_risk = f[3].slider("Minimum risk", 0.0, 1.0, 0.0, 0.05, key="f_risk")
    order = f[4].selectbox("Sort", list(runlist.SORTS), key="f_sort")
    shown = runlist.sort_runs(runlist.filter_runs(runs, text, levels, flags, min_risk), order)
    st.caption(f"{len(shown)} of {len(runs)} runs")
    st.dataframe(
        pd.DataFrame(runlist.rows(shown)),
        hide_index=True,
        width="stretch",
        key=RUN_TABLE,
        on_select=partial(_open_row, [r.key for r in shown]),
        selection_mode=["single-cell", "single-row"],
        column_config={
            "risk": st.column_config.NumberColumn(format="%.3f"),
            "duration (s)": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    if shown:  # right under the table it picks from, where it is in view (the chart below is tall)
        pick_runs(shown)
    timed = [
        {
            "time": datetime.fromtimestamp(started, tz=timezone.utc),
            "model": r.model,
            "risk": r.risk_score,
            "level": r.risk_level,
            "flags": ", ".join(r.flags) or "none",
        }
        for r in shown
        if (started := r.started) is not None and r.risk_score is not None
    ]
    if timed:
        st.altair_chart(_charts.risk_over_time(timed), width="stretch")


def pick_runs(shown: list[RunSummary]) -> None:
    """Open one of the listed runs, or compare several."""
    labels = {r.key: r.label for r in shown}
    o = st.columns([4, 1])
    o[0].selectbox("Open a run", list(labels), format_func=labels.__getitem__, key="open_pick")
    o[1].button("Open run", on_click=_open_picked, type="primary", width="stretch")
    k = st.columns([4, 1])
    chosen = k[0].multiselect(
        "Compare runs",
        list(labels),
        format_func=labels.__getitem__,
        key="compare_pick",
        default=list(labels)[:2] if len(labels) >= 2 else None,
    )
    k[1].button("Compare", on_click=_compare_picked, disabled=len(chosen) < 2, width="stretch")


def view_run(index: Index) -> None:
    if not index.runs:
        st.title("Run")
        st.info(messages.NO_RUNS)
        return
    labels = {r.key: r.label for r in index.runs}
    if st.session_state.get("run") not in labels:
        st.session_state["run"] = index.runs[0].key
    key = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key="run")
    summary = index.by_key(key)
    assert summary is not None
    detail = _detail(summary)
    st.title(plain(summary.model or "unknown model"))
    st.caption(
        plain(
            " · ".join(
                x
                for x in (
                    summary.operation,
                    summary.time_text + " UTC",
                    summary.service,
                    f"trace {summary.trace_id}" if summary.trace_id else None,
                    f"span {summary.span_id}" if summary.span_id else None,
                    f"schema {summary.schema_version}" if summary.schema_version else None,
                    capture_text(detail),
                )
                if x
            )
        )
    )
    show_problems(detail.problems)
    risk = guarded(diagnosis.risk, detail) or diagnosis.Risk(summary.risk_score, summary.risk_level)
    m = st.columns(5)
    m[0].metric("Risk score", num(risk.score))
    m[1].metric("Risk level", plain(risk.level or "–"))
    m[2].metric("Flags", len(summary.flags) if risk.score is not None else "–")
    seqs = guarded(series.sequences, detail) or []
    tokens = "–" if summary.output_tokens is None else plain(summary.output_tokens)
    # A batch's total, said as one (the narrative counts the riskiest sequence's tokens).
    m[3].metric("Output tokens", tokens + (f" in {len(seqs)} sequences" if len(seqs) > 1 else ""))
    m[4].metric("Duration", num(summary.duration_s, "{:.2f}", " s"))
    if summary.uncertainty is not None:
        st.caption(plain(messages.UNCERTAINTY.format(score=summary.uncertainty)))
    if summary.flags:
        st.markdown("Flags fired: " + " ".join(f":red-badge[{plain(flag)}]" for flag in summary.flags))
    if summary.error:
        st.error(f"The generation failed: {plain(summary.error)}")
    reasons = guarded(diagnosis.finish_reasons, detail)
    if reasons:
        st.caption("Finish reason: " + plain(", ".join(reasons)))
    for stop in guarded(diagnosis.interventions, detail) or []:
        st.warning(plain(messages.INTERVENED.format(**vars(stop))))
    story = guarded(diagnosis.narrative, detail)
    if story:
        st.info(plain(story))
    guarded(show_text, detail, len(seqs))
    mode = summary.capture_mode or "unknown"
    if detail.report is None and detail.span is not None:
        stride = (detail.span or {}).get("corevital.timeline.stride") or 1
        if summary.problems:  # its report line is there but unreadable: not "pass the logs file"
            st.info(messages.REPORT_UNREADABLE.format(stride=plain(stride)))
        elif summary.span_ref is not None:
            logs = sources.missing_report(summary.span_ref.file, index.files)
            st.info(plain(messages.NO_REPORT.format(stride=stride, logs=logs)))
    tabs = st.tabs(list(links.TABS.values()), key=url_state.TAB, on_change="rerun")  # the URL's tab= follows it
    with tabs[0]:
        guarded(tab_risk, detail, risk, mode)
    with tabs[1]:
        guarded(tab_timeline, detail, seqs, mode)
    with tabs[2]:
        guarded(tab_layers, detail, seqs, mode)
    with tabs[3]:
        guarded(tab_prompt, detail, mode)
    with tabs[4]:
        guarded(tab_performance, detail)
    with tabs[5]:
        guarded(tab_details, detail)


def show_texts(details: list[RunDetail]) -> None:
    """The compared runs' prompts and outputs side by side, when content capture kept them."""
    found = [compare.texts(d) for d in details]
    if not any(t.prompt or t.output for t in found):
        st.caption(messages.NO_COMPARE_TEXT)
        return
    st.subheader("Texts (riskiest sequence of each run)")
    for column, detail, text in zip(st.columns(len(details)), details, found):
        with column:
            st.markdown(f"**{plain(compare.short_label(detail))}**")
            if text.prompt is None and text.output is None:
                st.caption(messages.NO_COMPARE_TEXT)
            for part, value in (("prompt", text.prompt), ("output", text.output)):
                if value is not None:
                    st.caption(part)
                    st.code(value, language=None, wrap_lines=True)


def view_compare(index: Index) -> None:
    st.title("Compare")
    labels = {r.key: r.label for r in index.runs}
    if len(labels) < 2:
        st.info("Comparing needs at least two runs in the files.")
        return
    # The first two runs only on arrival; a picker the user emptied stays empty.
    if "compare" in st.session_state:
        st.session_state["compare"] = [k for k in st.session_state["compare"] if k in labels]
    else:
        st.session_state["compare"] = list(labels)[:2]
    keys = st.multiselect("Runs", list(labels), format_func=labels.__getitem__, key="compare")
    if len(keys) < 2:
        st.info("Pick two or more runs to compare.")
        return
    details = [_detail(index.by_key(k)) for k in keys]  # type: ignore[arg-type]
    rows = compare.table(details)
    marked = compare.differing(rows)
    st.dataframe(
        pd.DataFrame(rows).style.apply(lambda row: [DIFFERS_CSS if marked[row.name] else ""] * len(row), axis=1),
        hide_index=True,
        width="stretch",
        height=36 * (len(rows) + 1) + 2,
    )
    st.caption("Highlighted: figures that differ between the runs.")
    show_texts(details)
    st.subheader("Signals overlaid (riskiest sequence of each run)")
    grid = st.columns(2)
    drawn = 0
    for name in CHARTED:
        rows = compare.overlay(details, name)
        if rows:
            with grid[drawn % 2]:
                st.altair_chart(_charts.overlay(rows, series.LABELS[name]), width="stretch")
            drawn += 1
    if not drawn:
        st.info("None of these runs has per-step signals.")
    st.subheader("Fingerprint distance")
    matrix, missing = compare.fingerprint_distances(details)
    if matrix is None:
        st.info(
            messages.NO_FINGERPRINT.format(
                runs=plain(", ".join(labels[k].rsplit(" · ", 1)[-1] for k in keys if labels[k] in missing))
            )
        )
    else:
        st.dataframe(pd.DataFrame(matrix).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")


def view_performance(index: Index) -> None:
    st.title("Performance")
    runs = [r for r in index.runs if r.duration_s is not None]
    if not runs:
        st.info(messages.NO_RUNS)
        return
    ttfts = sorted(r.ttft_s for r in runs if r.ttft_s is not None)
    tpots = sorted(r.tpot_s for r in runs if r.tpot_s is not None)
    m = st.columns(3)
    m[0].metric("Median time to first token", ms(ttfts[len(ttfts) // 2] if ttfts else None))
    m[1].metric("Median per output token", ms(tpots[len(tpots) // 2] if tpots else None))
    m[2].metric("Runs timed", len(runs))
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "time (UTC)": r.time_text,
                    "model": r.model,
                    "TTFT (ms)": r.ttft_s * 1000 if r.ttft_s is not None else None,
                    "per token (ms)": r.tpot_s * 1000 if r.tpot_s is not None else None,
                    "duration (s)": r.duration_s,
                    "output tokens": r.output_tokens,
                    "tokens/s": r.output_tokens / r.duration_s if r.output_tokens and r.duration_s else None,
                    "id": r.short_id,
                }
                for r in runs
            ]
        ).style.format(precision=2, na_rep="–"),
        hide_index=True,
        width="stretch",
    )
    points = [
        {"time": datetime.fromtimestamp(r.started, tz=timezone.utc), "model": r.model, "figure": figure, "ms": v * 1000}
        for r in runs
        if r.started is not None
        for figure, v in (("time to first token", r.ttft_s), ("per output token", r.tpot_s))
        if v is not None
    ]
    if points:
        st.altair_chart(_charts.timing_over_time(points), width="stretch")
    st.caption("Overhead figures of a run, when its files carry them, are on the run page's Performance tab.")


def main(paths: list[str] | None = None) -> None:
    """The whole viewer page: the file chooser in the sidebar, then the chosen view."""
    st.set_page_config(page_title="CoreVital viewer", layout="wide")
    initial = paths or paths_from_env()
    roots = sources.roots_of(initial)  # the path box reads under these only
    st.sidebar.title("CoreVital viewer")
    text = st.sidebar.text_area("Files or folders, one per line", "\n".join(initial), key="paths")
    chosen = [line.strip() for line in text.splitlines() if line.strip()]
    if st.sidebar.button("Reload files"):
        st.cache_data.clear()
    index = _cached_index(chosen, roots)
    unknown = url_state.follow_link(index, VIEWS)
    view = st.sidebar.radio("View", VIEWS, key="view")
    st.sidebar.caption(
        f"{len(index.runs)} runs from {index.counts['files']} files · {index.counts['spans']} spans, "
        f"{index.counts['reports']} reports, {index.counts['metric_lines']} metric lines"
    )
    if unknown:
        st.warning(messages.UNKNOWN_LINK.format(run=plain(unknown)))
    if view == "Runs":
        show_problems(index.problems)
    elif index.problems:
        st.caption(f"{len(index.problems)} problems reading the files: the Runs view lists them.")
    guarded({"Runs": view_runs, "Run": view_run, "Compare": view_compare, "Performance": view_performance}[view], index)
    url_state.write_link(view, index)


if __name__ == "__main__":
    main()
