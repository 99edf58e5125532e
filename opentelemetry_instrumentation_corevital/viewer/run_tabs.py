"""The tabs of one run's page (risk, timeline, layers, prompt, performance, details) and their small helpers.

Split from ``app.py`` by idea: the app lays out the views, these draw one run. Imported absolutely, like the
app, because Streamlit runs the app as a script.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pandas as pd
import streamlit as st

from opentelemetry_instrumentation_corevital.viewer import (
    _charts,
    deep,
    diagnosis,
    marks,
    messages,
    perf,
    scales,
    series,
)
from opentelemetry_instrumentation_corevital.viewer.index import RunDetail
from opentelemetry_instrumentation_corevital.viewer.plain import plain

P = ParamSpec("P")
T = TypeVar("T")

#: The signals the timeline and compare views chart, in order.
CHARTED = ("entropy", "surprisal", "margin", "topk_mass")


def num(value: float | None, fmt: str = "{:.3f}", unit: str = "") -> str:
    """A metric's text; a dash where the files did not say."""
    return "–" if value is None else fmt.format(value) + unit


def ms(seconds: float | None) -> str:
    """Seconds shown as milliseconds; a dash where unknown."""
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def guarded(part: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """Draw one part of a page; data of an unexpected shape costs that part (with a message), not the page."""
    try:
        return part(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - files come from anywhere; the viewer must keep going
        st.error(messages.VIEW_FAILED.format(detail=plain(f"{type(exc).__name__}: {exc}")))
        return None


def capture_text(detail: RunDetail) -> str | None:
    """ "capture full", or for on_risk what it became ("capture on_risk → full")."""
    capture = (detail.report or {}).get("capture") or {}
    mode = capture.get("mode") or detail.summary.capture_mode
    if not mode:
        return None
    chosen = capture.get("detail") or (detail.span or {}).get("corevital.capture.detail")
    return f"capture {mode}" + (f" → {chosen}" if chosen and chosen != mode else "")


def tab_risk(detail: RunDetail, risk: diagnosis.Risk, mode: str) -> None:
    if risk.score is None:
        st.info(messages.NO_SIGNALS.format(mode=plain(mode)))
        return
    if risk.forced_by:
        st.error(f"Risk forced to {risk.score:.3f} by {plain(risk.forced_by)}.")
    if risk.factors:
        cols = ["name", "value", "score", "weight", "contribution", "description"]
        frame = pd.DataFrame([{c: f.get(c) for c in cols if any(c in g for g in risk.factors)} for f in risk.factors])
        st.subheader("Risk factors")
        st.dataframe(
            frame,
            hide_index=True,
            width="stretch",
            column_config={
                c: st.column_config.NumberColumn(format="%.4f") for c in ("value", "score", "weight", "contribution")
            },
        )
        st.altair_chart(_charts.factor_bars(risk.factors), width="stretch")
    st.subheader("Flags")
    rows = diagnosis.flag_rows(detail)
    fired = [{k: v for k, v in r.items() if k != "fired"} for r in rows if r["fired"]]
    quiet = [{k: v for k, v in r.items() if k != "fired"} for r in rows if not r["fired"]]
    if fired:
        st.dataframe(pd.DataFrame(fired), hide_index=True, width="stretch")
    else:
        st.caption("No flag fired.")
    if quiet:  # what each flag saw without firing, out of the way
        with st.expander(f"{len(quiet)} flags not fired"):
            st.dataframe(pd.DataFrame(quiet), hide_index=True, width="stretch")
    blamed = diagnosis.blamed_layers(detail)
    if blamed:
        st.subheader("Blamed layers")
        st.dataframe(pd.DataFrame(blamed), hide_index=True, width="stretch")


#: The sequence pickers of a run page (Timeline, Layers): they move together, and the URL's ``seq=`` follows them.
SEQUENCE_PICKERS = ("timeline_seq", "layers_seq")


def sequence_key(picker: str, run_key: str) -> str:
    """A picker's widget key, per run: another run opens on its own riskiest sequence."""
    return f"{picker}:{run_key}"


def _sequence_picked(picker: str, run_key: str) -> None:
    """A sequence picked in one tab is the one the other tab shows too."""
    value = st.session_state[sequence_key(picker, run_key)]
    for other in SEQUENCE_PICKERS:
        st.session_state[sequence_key(other, run_key)] = value


def pick_sequence(detail: RunDetail, seqs: list[series.SequenceSeries], indices: list[int], picker: str) -> int:
    """One of ``indices`` (sequences of this run), opening on the riskiest (or the one a link named), each labelled
    by its risk and flags."""
    if len(indices) == 1:
        return indices[0]
    labels = {s.index: s.label() for s in seqs}
    first = series.riskiest([s for s in seqs if s.index in indices], detail).index if labels else indices[0]
    key = sequence_key(picker, detail.summary.key)
    if key in st.session_state and st.session_state[key] not in indices:  # a link's seq= this run does not have
        del st.session_state[key]
    return st.selectbox(
        "Sequence",
        indices,
        # A value already set (a pick, a link) wins; a non-zero default beside it would only raise a warning.
        index=0 if key in st.session_state else indices.index(first) if first in indices else 0,
        key=key,
        format_func=lambda i: labels.get(i, f"sequence {i}"),
        on_change=_sequence_picked,
        args=(picker, detail.summary.key),
    )


def tab_timeline(detail: RunDetail, seqs: list[series.SequenceSeries], mode: str) -> None:
    if not seqs:
        st.info(messages.NO_SIGNALS.format(mode=plain(mode)))
        return
    by_index = {s.index: s for s in seqs}
    seq = by_index[pick_sequence(detail, seqs, list(by_index), SEQUENCE_PICKERS[0])]
    rows = seq.rows()
    threshold = scales.high_entropy_bits(detail)
    found = sequence_marks(detail, seqs, seq.index)
    if seq.stride > 1:
        st.caption(f"Every {plain(seq.stride)}. step (the span's thinned series).")
    charted = [s for s in CHARTED if s in seq.values]
    grid = st.columns(2)
    for i, name in enumerate(charted):
        with grid[i % 2]:
            st.altair_chart(
                _charts.signal_line(
                    rows,
                    name,
                    series.LABELS[name],
                    threshold if name == "entropy" else None,
                    token_ids=seq.token_ids is not None,
                    marks=marks.rows(found),
                    tokens=seq.token_texts,
                ),
                width="stretch",
            )
    if seq.output_text is not None:
        st.subheader("Generated text")
        st.code(seq.output_text, language=None, wrap_lines=True)
    if seq.token_ids is None:  # a span never carries them: no word about content capture then
        st.caption(messages.NO_TOKENS if seq.source == "report" else messages.SPAN_TOKENS)
    st.subheader("Steps")
    frame = pd.DataFrame(rows)
    styled = frame.style.format(precision=4, na_rep="–")
    if "entropy" in frame and threshold is not None:
        styled = styled.map(scales.entropy_colour, subset=["entropy"], threshold=threshold)
        st.caption(messages.ENTROPY_COLOURS.format(bits=f"{threshold:g}", half=f"{threshold / 2:g}"))
    st.dataframe(styled, hide_index=True, width="stretch")


def sequence_marks(detail: RunDetail, seqs: list[series.SequenceSeries], index: int) -> list[marks.Mark]:
    """The diagnosis's marks of one sequence, listed above the charts that draw them."""
    found = marks.marks(detail, index, riskiest=series.riskiest(seqs, detail).index == index if seqs else True)
    if found:
        st.caption("Marked: " + plain("; ".join(f"{m.label} at step {m.step}" for m in found)))
    return found


def _sequence_dicts(detail: RunDetail) -> list[dict[str, Any]]:
    return [s for s in (detail.report or {}).get("sequences") or [] if isinstance(s, dict)]


def tab_layers(detail: RunDetail, seqs: list[series.SequenceSeries], mode: str) -> None:
    found = [(s.get("index", i), data) for i, s in enumerate(_sequence_dicts(detail)) if (data := deep.layer_data(s))]
    if not found:
        means = deep.span_layer_means(detail.span or {}, "corevital.layers.", "corevital.layers.indices")
        if means and detail.report is None:
            st.caption(messages.SPAN_LAYERS)
            for name in [k for k in means[0] if k != "layer"][:3]:
                st.altair_chart(
                    _charts.bars(
                        [r for r in means if r[name] is not None], "layer", name, deep.LAYER_LABELS.get(name, name)
                    ),
                    width="stretch",
                )
            st.dataframe(pd.DataFrame(means).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")
        if mode != "full":
            st.info(messages.FULL_LAYERS.format(mode=plain(mode)))
        return
    by_index = dict(found)
    index = pick_sequence(detail, seqs, list(by_index), SEQUENCE_PICKERS[1])
    data = by_index[index]
    tokens = next((s.token_texts for s in seqs if s.index == index), None)
    blamed = diagnosis.blamed_layer_indices(detail)
    if blamed:
        st.caption("Blamed layers (outlined in red): " + plain(", ".join(str(b) for b in blamed)))
    shown = marks.rows(sequence_marks(detail, seqs, index))
    headline = [name for name in deep.HEADLINE if name in data.matrices]
    others = [name for name in data.names() if name not in headline]
    for name in headline:
        st.altair_chart(_layer_heatmap(data, name, blamed, shown, tokens), width="stretch")
    if others:
        extra = st.selectbox(
            "More layer signals", others, key="layer_matrix", format_func=lambda k: deep.LAYER_LABELS.get(k, k)
        )
        st.altair_chart(_layer_heatmap(data, extra, blamed, shown, tokens), width="stretch")
    missing = [deep.LAYER_LABELS[k] for k in deep.FULL_ONLY if k not in data.matrices]
    if missing and mode != "full":
        st.info(
            messages.FULL_LAYERS_PARTIAL.format(
                mode=plain(mode),
                have=plain(", ".join(deep.LAYER_LABELS.get(k, k) for k in data.names())),
                missing=", ".join(missing),
            )
        )
    st.subheader("Per-layer means over the captured steps")
    st.dataframe(
        pd.DataFrame(data.layer_means()).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch"
    )


def _layer_heatmap(
    data: deep.LayerData, name: str, blamed: list[int], shown: list[dict[str, Any]], tokens: list[str] | None
) -> Any:
    """One layer matrix; those that grow with depth scaled per layer, as their title says."""
    title = deep.LAYER_LABELS.get(name, name)
    if name in scales.PER_LAYER:
        cells, title = scales.per_layer_scaled(data.cells(name)), title + scales.PER_LAYER_NOTE
    else:
        cells = data.cells(name)
    return _charts.heatmap(cells, title, blamed, shown, tokens)


def tab_prompt(detail: RunDetail, mode: str) -> None:
    seqs = _sequence_dicts(detail)
    found = [
        (s.get("index", i), data) for i, s in enumerate(seqs) if (data := deep.prompt_data(s, detail.report or {}))
    ]
    if not found and detail.report is None and (from_span := deep.span_prompt(detail.span or {})) is not None:
        st.caption("From the span: the prompt's last 512 surprisals and the mean basin score per layer.")
        found = [(0, from_span)]
    input_text = next((s.get("input_text") for s in seqs if s.get("input_text")), None)
    if input_text:
        st.subheader("Prompt")
        st.code(input_text, language=None, wrap_lines=True)
    if not found:
        st.info(messages.FULL_PROMPT.format(mode=plain(mode)))
        return
    index, data = found[0]
    m = st.columns(2)
    m[0].metric("Prompt perplexity", num(data.perplexity))
    m[1].metric("Prompt tokens", "–" if data.tokens is None else data.tokens)
    if data.surprisal:
        rows = [r for r in data.surprisal_rows() if r["surprisal"] is not None]
        st.altair_chart(
            _charts.bars(rows, "position", "surprisal", "Surprisal of each prompt token (bits)"), width="stretch"
        )
    if data.per_layer:
        st.subheader("Per layer")
        layer_rows = data.layer_rows()
        for name in ("basin", "basin_min"):
            if name in data.per_layer:
                st.altair_chart(
                    _charts.bars(
                        [r for r in layer_rows if r.get(name) is not None],
                        "layer",
                        name,
                        deep.PROMPT_LAYER_LABELS[name],
                    ),
                    width="stretch",
                )
        st.dataframe(pd.DataFrame(layer_rows).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")
    encoder = next((rows for s in seqs if (rows := deep.encoder_rows(s))), [])
    if encoder:
        st.subheader("Encoder (per encoder layer)")
        st.dataframe(pd.DataFrame(encoder).style.format(precision=4, na_rep="–"), hide_index=True, width="stretch")


def tab_performance(detail: RunDetail) -> None:
    p = perf.perf(detail)
    m = st.columns(5)
    m[0].metric("Time to first token", ms(p.ttft_s))
    m[1].metric("Per output token", ms(p.tpot_s))
    m[2].metric("Duration", num(p.duration_s, "{:.2f}", " s"))
    m[3].metric("Tokens per second", num(p.tokens_per_s, "{:.1f}"))
    m[4].metric("Step 0 (prefill + first token)", ms(p.prefill_s))
    if p.ratio is not None:
        st.metric("CoreVital overhead (instrumented / plain generate)", f"{p.ratio:.3f}×")
    if p.step_durations:
        rows = [r for r in p.step_rows() if r["duration (ms)"] is not None]
        st.altair_chart(
            _charts.bars(rows, "step", "duration (ms)", "Duration of each decoding step", "Q"), width="stretch"
        )
    if p.overhead:
        st.subheader("Overhead")
        st.dataframe(
            pd.DataFrame([{"figure": k, "value": str(v)} for k, v in p.overhead.items()]),
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No overhead figures in this run (corevital.perf.* span attributes or a report perf section).")


def tab_details(detail: RunDetail) -> None:
    report = detail.report or {}
    for section in ("model", "request", "capture", "usage", "thresholds"):
        values = report.get(section)
        if isinstance(values, dict) and values:
            st.subheader(section.capitalize())
            st.dataframe(
                pd.DataFrame(
                    [
                        {"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)}
                        for k, v in values.items()
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
    if detail.span is not None:
        st.subheader(f"Span: {plain(detail.span_name)}")
        st.dataframe(
            pd.DataFrame(
                [
                    {"attribute": k, "value": json.dumps(v) if isinstance(v, list) else str(v)}
                    for k, v in detail.span.items()
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    s = detail.summary
    where = [f"{ref.file} line {ref.line}" for ref in (s.span_ref, s.report_ref) if ref is not None]
    st.caption("Read from: " + plain("; ".join(where)))
    if detail.report is not None:
        text = json.dumps(detail.report, indent=2)
        st.download_button(
            "Download the report (JSON)", text, file_name=f"corevital-report-{s.short_id}.json", mime="application/json"
        )
