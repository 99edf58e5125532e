"""The Streamlit viewer: a thin page layer over the pure modules of this package.

Run it with ``corevital view [PATH ...]`` (or ``streamlit run`` on this file or
on ``dashboards/corevital_viewer.py``). Paths come from ``main(paths)``, else
the ``COREVITAL_VIEW_PATHS`` environment variable (``os.pathsep``-separated),
else ``./corevital-data``. Everything shown is computed by the pure modules;
this file only lays it out, so it imports them absolutely (Streamlit runs it
as a script, not as part of the package).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

from opentelemetry_instrumentation_corevital.viewer import (
    _charts,
    compare,
    deep,
    diagnosis,
    messages,
    perf,
    runlist,
    series,
    sources,
)
from opentelemetry_instrumentation_corevital.viewer.index import Index, RunDetail, RunSummary, build_index, load_run

ENV_PATHS = "COREVITAL_VIEW_PATHS"
DEFAULT_PATHS = ["corevital-data"]
VIEWS = ("Runs", "Run", "Compare", "Performance")
#: The signals the timeline and compare views chart, in order.
CHARTED = ("entropy", "surprisal", "margin", "topk_mass")
SHOWN_PROBLEMS = 8


def paths_from_env() -> list[str]:
    raw = os.environ.get(ENV_PATHS, "")
    return [p for p in raw.split(os.pathsep) if p] or list(DEFAULT_PATHS)


def _cached_index(paths: list[str]) -> Index:
    files, _ = sources.discover(paths)
    # The signature (size and mtime of every file) is part of the cache key: new lines mean a new index.
    return _index_keyed(tuple(paths), sources.signature(files))


@st.cache_data(show_spinner="Reading files…", max_entries=8)
def _index_keyed(paths: tuple[str, ...], signature: tuple) -> Index:
    return build_index(list(paths))


@st.cache_data(show_spinner="Reading the run…", max_entries=64)
def _detail(summary: RunSummary) -> RunDetail:
    return load_run(summary)


def _num(value: float | None, fmt: str = "{:.3f}", unit: str = "") -> str:
    return "–" if value is None else fmt.format(value) + unit


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def _open_picked() -> None:
    """"Open run": show the run picked beside the button. Reads the pick from the session state, which holds
    what the browser sent with the click, so a click that beats the pick's own rerun still opens that run."""
    st.session_state["run"] = st.session_state["open_pick"]
    st.session_state["view"] = "Run"


def _compare_picked() -> None:
    st.session_state["compare"] = list(st.session_state["compare_pick"])
    st.session_state["view"] = "Compare"


# --- page parts ---------------------------------------------------------------------------------------------------


def show_problems(problems: list[str]) -> None:
    for text in problems[:SHOWN_PROBLEMS]:
        st.warning(text)
    if len(problems) > SHOWN_PROBLEMS:
        with st.expander(f"{len(problems) - SHOWN_PROBLEMS} more problems"):
            for text in problems[SHOWN_PROBLEMS:]:
                st.warning(text)


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
    text = f[0].text_input("Search model, service or id", key="f_text")
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
        column_config={
            "risk": st.column_config.NumberColumn(format="%.3f"),
            "duration (s)": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    timed = [
        {"time": datetime.fromtimestamp(started, tz=timezone.utc), "model": r.model, "risk": r.risk_score,
         "level": r.risk_level, "flags": ", ".join(r.flags) or "none"}
        for r in shown
        if (started := r.started) is not None and r.risk_score is not None
    ]
    if timed:
        st.altair_chart(_charts.risk_over_time(timed), width="stretch")
    if not shown:
        return
    labels = {r.key: r.label for r in shown}
    o = st.columns([4, 1])
    o[0].selectbox("Open a run", list(labels), format_func=labels.__getitem__, key="open_pick")
    o[1].button("Open run", on_click=_open_picked, type="primary", width="stretch")
    k = st.columns([4, 1])
    chosen = k[0].multiselect("Compare runs", list(labels), format_func=labels.__getitem__, key="compare_pick",
                              default=list(labels)[:2] if len(labels) >= 2 else None)
    k[1].button("Compare", on_click=_compare_picked, disabled=len(chosen) < 2,
                width="stretch")


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
    st.title(summary.model or "unknown model")
    st.caption(
        " · ".join(x for x in (
            summary.operation, summary.time_text + " UTC", summary.service,
            f"trace {summary.trace_id}" if summary.trace_id else None,
            f"span {summary.span_id}" if summary.span_id else None,
            f"schema {summary.schema_version}" if summary.schema_version else None,
            _capture_text(detail),
        ) if x)
    )
    show_problems(detail.problems)
    risk = guarded(diagnosis.risk, detail) or diagnosis.Risk(summary.risk_score, summary.risk_level)
    m = st.columns(5)
    m[0].metric("Risk score", _num(risk.score))
    m[1].metric("Risk level", risk.level or "–")
    m[2].metric("Flags", len(summary.flags) if risk.score is not None else "–")
    m[3].metric("Output tokens", "–" if summary.output_tokens is None else summary.output_tokens)
    m[4].metric("Duration", _num(summary.duration_s, "{:.2f}", " s"))
    if summary.flags:
        st.markdown("Flags fired: " + " ".join(f":red-badge[{flag}]" for flag in summary.flags))
    if summary.error:
        st.error(f"The generation failed: {summary.error}")
    story = guarded(diagnosis.narrative, detail)
    if story:
        st.info(story)
    mode = summary.capture_mode or "unknown"
    if detail.report is None and detail.span is not None:
        stride = (detail.span or {}).get("corevital.timeline.stride") or 1
        st.info(messages.NO_REPORT.format(stride=stride))
    tabs = st.tabs(["Risk & flags", "Timeline", "Layers", "Prompt", "Performance", "Details"])
    seqs = guarded(series.sequences, detail) or []
    with tabs[0]:
        guarded(tab_risk, detail, risk, mode)
    with tabs[1]:
        guarded(tab_timeline, detail, seqs, mode)
    with tabs[2]:
        guarded(tab_layers, detail, mode)
    with tabs[3]:
        guarded(tab_prompt, detail, mode)
    with tabs[4]:
        guarded(tab_performance, detail)
    with tabs[5]:
        guarded(tab_details, detail)


def guarded(part: Any, *args: Any) -> Any:
    """Draw one part of a page; data of an unexpected shape costs that part (with a message), not the page."""
    try:
        return part(*args)
    except Exception as exc:  # noqa: BLE001 - files come from anywhere; the viewer must keep going
        st.error(messages.VIEW_FAILED.format(detail=f"{type(exc).__name__}: {exc}"))
        return None


def _capture_text(detail: RunDetail) -> str | None:
    """"capture full", or for on_risk what it became ("capture on_risk → full")."""
    capture = (detail.report or {}).get("capture") or {}
    mode = capture.get("mode") or detail.summary.capture_mode
    if not mode:
        return None
    chosen = capture.get("detail") or (detail.span or {}).get("corevital.capture.detail")
    return f"capture {mode}" + (f" → {chosen}" if chosen and chosen != mode else "")


def tab_risk(detail: RunDetail, risk: diagnosis.Risk, mode: str) -> None:
    if risk.score is None:
        st.info(messages.NO_SIGNALS.format(mode=mode))
        return
    if risk.forced_by:
        st.error(f"Risk forced to {risk.score:.3f} by {risk.forced_by}.")
    if risk.factors:
        cols = ["name", "value", "score", "weight", "contribution", "description"]
        frame = pd.DataFrame([{c: f.get(c) for c in cols if any(c in g for g in risk.factors)} for f in risk.factors])
        st.subheader("Risk factors")
        st.dataframe(frame, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("value", "score", "weight", "contribution")})
        st.altair_chart(_charts.factor_bars(risk.factors), width="stretch")
    st.subheader("Flags")
    st.dataframe(pd.DataFrame(diagnosis.flag_rows(detail)), hide_index=True, width="stretch")
    blamed = diagnosis.blamed_layers(detail)
    if blamed:
        st.subheader("Blamed layers")
        st.dataframe(pd.DataFrame(blamed), hide_index=True, width="stretch")


def _pick_sequence(seqs: list[series.SequenceSeries], key: str) -> series.SequenceSeries:
    if len(seqs) == 1:
        return seqs[0]
    by_index = {s.index: s for s in seqs}
    chosen = st.selectbox("Sequence", list(by_index), key=key, format_func=lambda i: f"sequence {i}")
    return by_index[chosen]


def tab_timeline(detail: RunDetail, seqs: list[series.SequenceSeries], mode: str) -> None:
    if not seqs:
        st.info(messages.NO_SIGNALS.format(mode=mode))
        return
    seq = _pick_sequence(seqs, "timeline_seq")
    rows = seq.rows()
    threshold = ((detail.report or {}).get("thresholds") or {}).get("high_entropy_bits")
    if seq.stride > 1:
        st.caption(f"Every {seq.stride}. step (the span's thinned series).")
    charted = [s for s in CHARTED if s in seq.values]
    grid = st.columns(2)
    for i, name in enumerate(charted):
        with grid[i % 2]:
            st.altair_chart(
                _charts.signal_line(rows, name, series.LABELS[name], threshold if name == "entropy" else None,
                                    token_ids=seq.token_ids is not None),
                width="stretch",
            )
    if seq.output_text is not None:
        st.subheader("Generated text")
        st.code(seq.output_text, language=None, wrap_lines=True)
    if seq.token_ids is None:
        st.caption(messages.NO_TOKENS)
    st.subheader("Steps")
    frame = pd.DataFrame(rows)
    styled = frame.style.format(precision=4, na_rep="–")
    if "entropy" in frame:
        styled = styled.map(_entropy_colour, subset=["entropy"])
    st.dataframe(styled, hide_index=True, width="stretch")


def _entropy_colour(value: Any) -> str:
    """Entropy cells as the original dashboard coloured tokens: > 4 bits red, ≥ 2 yellow, else green."""
    if value is None or pd.isna(value):
        return ""
    colour = "#f8d0d0" if value > 4 else "#fbefc4" if value >= 2 else "#d5f0d5"
    return f"background-color: {colour}"


def _sequence_dicts(detail: RunDetail) -> list[dict[str, Any]]:
    return [s for s in (detail.report or {}).get("sequences") or [] if isinstance(s, dict)]


def tab_layers(detail: RunDetail, mode: str) -> None:
    found = [(s.get("index", i), data) for i, s in enumerate(_sequence_dicts(detail)) if (data := deep.layer_data(s))]
    if not found:
        means = deep.span_layer_means(detail.span or {}, "corevital.layers.", "corevital.layers.indices")
        if means and detail.report is None:
            st.caption(messages.SPAN_LAYERS)
            for name in [k for k in means[0] if k != "layer"][:3]:
                st.altair_chart(_charts.bars([r for r in means if r[name] is not None], "layer", name,
                                             deep.LAYER_LABELS.get(name, name)), width="stretch")
            st.dataframe(pd.DataFrame(means).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")
        if mode != "full":
            st.info(messages.FULL_LAYERS.format(mode=mode))
        return
    by_index = dict(found)
    index = found[0][0] if len(found) == 1 else st.selectbox("Sequence", list(by_index), key="layers_seq",
                                                               format_func=lambda i: f"sequence {i}")
    data = by_index[index]
    blamed = diagnosis.blamed_layer_indices(detail)
    if blamed:
        st.caption("Blamed layers (outlined in red): " + ", ".join(str(b) for b in blamed))
    headline = [name for name in deep.HEADLINE if name in data.matrices]
    others = [name for name in data.names() if name not in headline]
    for name in headline:
        st.altair_chart(_charts.heatmap(data.cells(name), deep.LAYER_LABELS[name], blamed), width="stretch")
    if others:
        extra = st.selectbox("More layer signals", others, key="layer_matrix",
                             format_func=lambda k: deep.LAYER_LABELS.get(k, k))
        st.altair_chart(_charts.heatmap(data.cells(extra), deep.LAYER_LABELS.get(extra, extra), blamed),
                        width="stretch")
    missing = [deep.LAYER_LABELS[k] for k in deep.FULL_ONLY if k not in data.matrices]
    if missing and mode != "full":
        st.info(messages.FULL_LAYERS_PARTIAL.format(
            mode=mode, have=", ".join(deep.LAYER_LABELS.get(k, k) for k in data.names()), missing=", ".join(missing)))
    st.subheader("Per-layer means over the captured steps")
    st.dataframe(pd.DataFrame(data.layer_means()).style.format(precision=4, na_rep="–"), hide_index=True,
                 width="stretch")


def tab_prompt(detail: RunDetail, mode: str) -> None:
    seqs = _sequence_dicts(detail)
    found = [(s.get("index", i), data) for i, s in enumerate(seqs) if (data := deep.prompt_data(s, detail.report or {}))]
    if not found and detail.report is None and (from_span := deep.span_prompt(detail.span or {})) is not None:
        st.caption("From the span: the prompt's last 512 surprisals and the mean basin score per layer.")
        found = [(0, from_span)]
    input_text = next((s.get("input_text") for s in seqs if s.get("input_text")), None)
    if input_text:
        st.subheader("Prompt")
        st.code(input_text, language=None, wrap_lines=True)
    if not found:
        st.info(messages.FULL_PROMPT.format(mode=mode))
        return
    index, data = found[0]
    m = st.columns(2)
    m[0].metric("Prompt perplexity", _num(data.perplexity))
    m[1].metric("Prompt tokens", "–" if data.tokens is None else data.tokens)
    if data.surprisal:
        rows = [r for r in data.surprisal_rows() if r["surprisal"] is not None]
        st.altair_chart(_charts.bars(rows, "position", "surprisal", "Surprisal of each prompt token (bits)"),
                        width="stretch")
    if data.per_layer:
        st.subheader("Per layer")
        layer_rows = data.layer_rows()
        for name in ("basin", "basin_min"):
            if name in data.per_layer:
                st.altair_chart(
                    _charts.bars([r for r in layer_rows if r.get(name) is not None], "layer", name,
                                 deep.PROMPT_LAYER_LABELS[name]),
                    width="stretch",
                )
        st.dataframe(pd.DataFrame(layer_rows).style.format(precision=4, na_rep="–"), hide_index=True,
                     width="stretch")
    encoder = next((rows for s in seqs if (rows := deep.encoder_rows(s))), [])
    if encoder:
        st.subheader("Encoder (per encoder layer)")
        st.dataframe(pd.DataFrame(encoder).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")


def tab_performance(detail: RunDetail) -> None:
    p = perf.perf(detail)
    m = st.columns(5)
    m[0].metric("Time to first token", _ms(p.ttft_s))
    m[1].metric("Per output token", _ms(p.tpot_s))
    m[2].metric("Duration", _num(p.duration_s, "{:.2f}", " s"))
    m[3].metric("Tokens per second", _num(p.tokens_per_s, "{:.1f}"))
    m[4].metric("Step 0 (prefill + first token)", _ms(p.prefill_s))
    if p.ratio is not None:
        st.metric("CoreVital overhead (instrumented / plain generate)", f"{p.ratio:.3f}×")
    if p.step_durations:
        rows = [r for r in p.step_rows() if r["duration (ms)"] is not None]
        st.altair_chart(_charts.bars(rows, "step", "duration (ms)", "Duration of each decoding step", "Q"),
                        width="stretch")
    if p.overhead:
        st.subheader("Overhead")
        st.dataframe(pd.DataFrame([{"figure": k, "value": str(v)} for k, v in p.overhead.items()]), hide_index=True,
                     width="stretch")
    else:
        st.caption("No overhead figures in this run (corevital.perf.* span attributes or a report perf section).")


def tab_details(detail: RunDetail) -> None:
    report = detail.report or {}
    for section in ("model", "request", "capture", "usage", "thresholds"):
        values = report.get(section)
        if isinstance(values, dict) and values:
            st.subheader(section.capitalize())
            st.dataframe(pd.DataFrame([{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)}
                                       for k, v in values.items()]), hide_index=True, width="stretch")
    if detail.span is not None:
        st.subheader(f"Span: {detail.span_name}")
        st.dataframe(pd.DataFrame([{"attribute": k, "value": json.dumps(v) if isinstance(v, list) else str(v)}
                                   for k, v in detail.span.items()]), hide_index=True, width="stretch")
    s = detail.summary
    where = [f"{ref.file} line {ref.line}" for ref in (s.span_ref, s.report_ref) if ref is not None]
    st.caption("Read from: " + "; ".join(where))
    if detail.report is not None:
        text = json.dumps(detail.report, indent=2)
        st.download_button("Download the report (JSON)", text, file_name=f"corevital-report-{s.short_id}.json",
                           mime="application/json")


def view_compare(index: Index) -> None:
    st.title("Compare")
    labels = {r.key: r.label for r in index.runs}
    if len(labels) < 2:
        st.info("Comparing needs at least two runs in the files.")
        return
    current = [k for k in st.session_state.get("compare", []) if k in labels]
    st.session_state["compare"] = current or list(labels)[:2]
    keys = st.multiselect("Runs", list(labels), format_func=labels.__getitem__, key="compare")
    if len(keys) < 2:
        st.info("Pick two or more runs to compare.")
        return
    details = [_detail(index.by_key(k)) for k in keys]  # type: ignore[arg-type]
    rows = compare.table(details)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=36 * (len(rows) + 1) + 2)
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
        st.info(messages.NO_FINGERPRINT.format(runs=", ".join(labels[k].rsplit(" · ", 1)[-1] for k in keys
                                                              if labels[k] in missing)))
    else:
        st.dataframe(pd.DataFrame(matrix).style.format(precision=4, na_rep="–"), hide_index=True,
                     width="stretch")


def view_performance(index: Index) -> None:
    st.title("Performance")
    runs = [r for r in index.runs if r.duration_s is not None]
    if not runs:
        st.info(messages.NO_RUNS)
        return
    ttfts = sorted(r.ttft_s for r in runs if r.ttft_s is not None)
    tpots = sorted(r.tpot_s for r in runs if r.tpot_s is not None)
    m = st.columns(3)
    m[0].metric("Median time to first token", _ms(ttfts[len(ttfts) // 2] if ttfts else None))
    m[1].metric("Median per output token", _ms(tpots[len(tpots) // 2] if tpots else None))
    m[2].metric("Runs timed", len(runs))
    st.dataframe(
        pd.DataFrame([
            {"time (UTC)": r.time_text, "model": r.model, "TTFT (ms)": r.ttft_s * 1000 if r.ttft_s is not None else None,
             "per token (ms)": r.tpot_s * 1000 if r.tpot_s is not None else None, "duration (s)": r.duration_s,
             "output tokens": r.output_tokens,
             "tokens/s": r.output_tokens / r.duration_s if r.output_tokens and r.duration_s else None,
             "id": r.short_id}
            for r in runs
        ]).style.format(precision=2, na_rep="–"),
        hide_index=True,
        width="stretch",
    )
    points = [
        {"time": datetime.fromtimestamp(r.started, tz=timezone.utc), "model": r.model, "figure": figure, "ms": v * 1000}
        for r in runs if r.started is not None
        for figure, v in (("time to first token", r.ttft_s), ("per output token", r.tpot_s)) if v is not None
    ]
    if points:
        st.altair_chart(_charts.timing_over_time(points), width="stretch")
    st.caption("Overhead figures of a run, when its files carry them, are on the run page's Performance tab.")


def main(paths: list[str] | None = None) -> None:
    st.set_page_config(page_title="CoreVital viewer", layout="wide")
    initial = paths or paths_from_env()
    st.sidebar.title("CoreVital viewer")
    text = st.sidebar.text_area("Files or folders, one per line", "\n".join(initial), key="paths")
    chosen = [line.strip() for line in text.splitlines() if line.strip()]
    if st.sidebar.button("Reload files"):
        st.cache_data.clear()
    view = st.sidebar.radio("View", VIEWS, key="view")
    index = _cached_index(chosen)
    st.sidebar.caption(
        f"{len(index.runs)} runs from {index.counts['files']} files · {index.counts['spans']} spans, "
        f"{index.counts['reports']} reports, {index.counts['metric_lines']} metric lines"
    )
    if view == "Runs":
        show_problems(index.problems)
    elif index.problems:
        st.caption(f"{len(index.problems)} problems reading the files: the Runs view lists them.")
    guarded({"Runs": view_runs, "Run": view_run, "Compare": view_compare, "Performance": view_performance}[view],
            index)


if __name__ == "__main__":
    main()
