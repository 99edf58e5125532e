"""Altair charts of the viewer (Streamlit renders them with Vega-Lite, offline)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from . import text

_RISK_COLOURS = alt.Scale(domain=["low", "medium", "high"], range=["#2ca02c", "#ff7f0e", "#d62728"])

#: Fit the width only: a chart's height is its plot area's, and a legend adds its own height below it. Streamlit's
#: default ("fit" both ways) squeezes the plot into what the legend leaves (a flat line with five runs).
PLOT_HEIGHT_KEPT = alt.AutoSizeParams(type="fit-x", contains="padding")


#: Marks of the diagnosis (loop onsets, compound signals, warnings, a stop): one colour that reads on white and on
#: viridis; labels take turns on three lanes so that close steps do not write over each other.
MARK_COLOUR = "#e4007c"
MARK_LANES = 3


def _marked(chart: Any, marks: list[dict[str, Any]] | None, x: str) -> Any:
    """``chart`` with a dashed rule and a label at each mark's step."""
    if not marks:
        return chart
    frame = pd.DataFrame([{**m, "lane": 2 + 13 * (i % MARK_LANES)} for i, m in enumerate(marks)])
    rule = (
        alt.Chart(frame)
        .mark_rule(color=MARK_COLOUR, strokeDash=[3, 2], strokeWidth=2)
        .encode(x=x, tooltip=["label:N", "step:Q"])
    )
    label = (
        alt.Chart(frame)
        .mark_text(color=MARK_COLOUR, align="left", baseline="top", dx=3, fontSize=11)
        .encode(x=x, y=alt.Y("lane:Q", scale=None), text="label:N")
    )
    return chart + rule + label


def token_axis(tokens: list[str] | None) -> Any:
    """An x axis of steps labelled by each step's token text (when content capture kept them)."""
    expr = text.axis_labels(tokens)
    if tokens is None or expr is None:
        return alt.Undefined
    return alt.Axis(values=list(range(len(tokens))), labelExpr=expr, labelAngle=-45, labelOverlap=True)


def signal_line(
    rows: list[dict[str, Any]],
    signal: str,
    title: str,
    threshold: float | None = None,
    token_ids: bool = False,
    marks: list[dict[str, Any]] | None = None,
    tokens: list[str] | None = None,
) -> alt.Chart:
    """One per-step signal as a line with points; an optional horizontal threshold line; the diagnosis's marks;
    x labelled by ``tokens``."""
    frame = pd.DataFrame(rows)
    tooltip = ["step:Q", alt.Tooltip(f"{signal}:Q", format=".4f")]
    tooltip += (["token:N"] if tokens else []) + (["token id:Q"] if token_ids else [])
    base = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="step", axis=token_axis(tokens)),
            y=alt.Y(f"{signal}:Q", title=title),
            tooltip=tooltip,
        )
    )
    chart = base
    if threshold is not None:
        rule = (
            alt.Chart(pd.DataFrame({"threshold": [threshold]}))
            .mark_rule(color="#d62728", strokeDash=[4, 4])
            .encode(y="threshold:Q")
        )
        chart = base + rule
    return _marked(chart, marks, "step:Q").properties(title=title, height=220, autosize=PLOT_HEIGHT_KEPT)


def overlay(rows: list[dict[str, Any]], title: str) -> alt.Chart:
    """One signal of several runs, coloured by run."""
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q"),
            y=alt.Y("value:Q", title=title),
            color=alt.Color("run:N", legend=alt.Legend(orient="bottom", title=None, labelLimit=400, columns=1)),
            tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(title=title, height=300, autosize=PLOT_HEIGHT_KEPT)
    )


def heatmap(
    cells: list[dict[str, Any]],
    title: str,
    blamed: list[int],
    marks: list[dict[str, Any]] | None = None,
    tokens: list[str] | None = None,
) -> alt.Chart:
    """Layer × step heatmap; blamed layers get a red outline across their row; the diagnosis's marks at their steps;
    steps labelled by ``tokens``. Cells with ``scaled`` (scales.per_layer_scaled) are coloured by it, the tooltip
    keeps the value itself."""
    frame = pd.DataFrame(cells)
    scaled = "scaled" in frame
    colour = "scaled:Q" if scaled else "value:Q"
    tooltip = ["layer:O", "step:O", alt.Tooltip("value:Q", format=".4f")]
    axis: Any = alt.Undefined
    expr = text.axis_labels(tokens)
    if tokens and expr is not None:
        frame["token"] = [text.label(tokens[s]) if 0 <= s < len(tokens) else None for s in frame["step"]]
        tooltip.insert(2, "token:N")
        axis = alt.Axis(labelExpr=expr, labelAngle=-45, labelOverlap=True)
    base = (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("step:O", title="step", axis=axis),
            y=alt.Y("layer:O", title="layer", sort="descending"),
            color=alt.Color(
                colour,
                title="within layer" if scaled else None,
                scale=alt.Scale(scheme="viridis", domain=[0, 1]) if scaled else alt.Scale(scheme="viridis"),
            ),
            tooltip=tooltip,
        )
    )
    chart = base
    if blamed:
        marked = frame[frame["layer"].isin(blamed)]
        chart = base + alt.Chart(marked).mark_rect(filled=False, stroke="#d62728", strokeWidth=2).encode(
            x="step:O", y=alt.Y("layer:O", sort="descending")
        )
    shown = set(frame["step"]) if "step" in frame else set()
    chart = _marked(chart, [m for m in marks or [] if m["step"] in shown], "step:O")  # an ordinal axis: its steps only
    return chart.properties(title=title, height=max(220, 26 * frame["layer"].nunique()), autosize=PLOT_HEIGHT_KEPT)


def bars(rows: list[dict[str, Any]], x: str, y: str, title: str, x_type: str = "O") -> alt.Chart:
    """A bar chart of ``y`` over ``x`` with four-decimal tooltips."""
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X(f"{x}:{x_type}", title=x),
            y=alt.Y(f"{y}:Q", title=y),
            tooltip=[f"{x}:{x_type}", alt.Tooltip(f"{y}:Q", format=".4f")],
        )
        .properties(title=title, height=220, autosize=PLOT_HEIGHT_KEPT)
    )


def factor_bars(factors: list[dict[str, Any]]) -> alt.Chart:
    """The risk factors as horizontal bars, largest contribution on top."""
    frame = pd.DataFrame([{"factor": f["name"], "contribution": f.get("contribution")} for f in factors])
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            # A fixed 0..1 scale: a contribution of 0.07 looks short next to 0.9, and short when it is the largest.
            x=alt.X("contribution:Q", scale=alt.Scale(domain=[0, 1], clamp=True)),
            y=alt.Y("factor:N", sort="-x", title=None),
            tooltip=["factor:N", alt.Tooltip("contribution:Q", format=".4f")],
        )
        .properties(title="Risk factor contributions", height=80 + 40 * len(frame), autosize=PLOT_HEIGHT_KEPT)
    )


def risk_over_time(rows: list[dict[str, Any]]) -> alt.Chart:
    """Each run's risk score at its start time."""
    frame = pd.DataFrame(rows)
    return (
        alt.Chart(frame)
        .mark_circle(size=80)
        .encode(
            x=alt.X("time:T", title="time (UTC)"),
            y=alt.Y("risk:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("level:N", scale=_RISK_COLOURS),
            tooltip=["time:T", "model:N", alt.Tooltip("risk:Q", format=".3f"), "level:N", "flags:N"],
        )
        .properties(title="Risk of each run", height=220, autosize=PLOT_HEIGHT_KEPT)
    )


def timing_over_time(rows: list[dict[str, Any]]) -> alt.Chart:
    """Each run's timings (milliseconds) at its start time, one line per measure."""
    frame = pd.DataFrame(rows)
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("time:T", title="time (UTC)"),
            y=alt.Y("ms:Q", title="milliseconds"),
            color=alt.Color("figure:N", legend=alt.Legend(orient="bottom")),
            tooltip=["time:T", "model:N", "figure:N", alt.Tooltip("ms:Q", format=".1f")],
        )
        .properties(title="Time to first token and per-token time", height=240, autosize=PLOT_HEIGHT_KEPT)
    )
