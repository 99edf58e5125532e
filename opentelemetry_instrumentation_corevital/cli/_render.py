"""Terminal rendering of a report: short, aligned, readable without colour."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from ..report import LayerSeries, Report, SequenceReport

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], low: float, high: float, width: int = 64) -> str:
    """One block character per value (or per bucket of values when longer than ``width``)."""
    if not values:
        return ""
    step = max(1, math.ceil(len(values) / width))
    chars = []
    for i in range(0, len(values), step):
        bucket = [v for v in values[i : i + step] if v is not None and math.isfinite(v)]
        if not bucket:
            chars.append("·")
            continue
        value = max(bucket)
        frac = 0.0 if high <= low else min(max((value - low) / (high - low), 0.0), 1.0)
        chars.append(BLOCKS[min(int(frac * len(BLOCKS)), len(BLOCKS) - 1)])
    return "".join(chars)


def _layer_view(layers: LayerSeries) -> str:
    """One line per captured layer (up to 32): mean hidden norm and, in full capture, attention entropy."""
    out = [
        "layers    mean over steps: hidden-state norm"
        + ("; attention entropy (0-1), collapsed heads" if layers.attn_entropy is not None else "")
    ]
    shown = list(zip(layers.indices, range(len(layers.indices))))
    if len(shown) > 32:
        step = math.ceil(len(shown) / 32)
        shown = shown[::step]

    def mean(matrix: list | None, i: int) -> float | None:
        if matrix is None:
            return None
        values = [v for v in matrix[i] if v is not None]
        return sum(values) / len(values) if values else None

    for index, i in shown:
        line = f"  L{index:<3} norm {_fmt(mean(layers.hidden_norm, i), 2):>9}"
        if layers.attn_entropy is not None:
            line += (
                f"   attn entropy {_fmt(mean(layers.attn_entropy, i), 3)}"
                f"   collapsed {_fmt(mean(layers.attn_collapsed_fraction, i), 2)}"
                f"   sink {_fmt(mean(layers.attn_sink_mass, i), 2)}"
            )
        out.append(line)
    return "\n".join(out)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _factor_lines(seq: SequenceReport) -> list[str]:
    """One line per risk factor, largest contribution first: value, calibrated score, weight, contribution."""
    assert seq.risk is not None
    out = ["          factor                      value   score  weight  contribution"]
    for f in sorted(seq.risk.factors, key=lambda f: f.contribution, reverse=True):
        out.append(
            f"          {f.name:<26} {f.value:>7.3f}  {f.score:>6.3f}  {f.weight:>6.2f}  {f.contribution:>12.3f}"
        )
    return out


def _flag_detail(flag: str, seq: SequenceReport, report: Report) -> str:
    flags = seq.flags
    if flag == "high_entropy":
        return (
            f"high_entropy ({flags.high_entropy_steps} steps > {report.thresholds.high_entropy_bits:g} bits, "
            f"longest run {flags.high_entropy_longest_run}, first at step {flags.high_entropy_first_step})"
        )
    if flag == "repetition_loop":
        return (
            f"repetition_loop (from step {flags.repetition_onset_step}, period {flags.repetition_period}, "
            f"{flags.repetition_share or 0:.0%} of the output; seen in {' and '.join(flags.repetition_evidence)})"
        )
    if flag == "nan_or_inf":
        return f"nan_or_inf ({flags.nan_or_inf_steps} steps, first {flags.nan_or_inf_first_step})"
    if flag == "mid_layer_anomaly":
        layers = ", ".join(f"L{i}" for i in flags.mid_layer_anomaly_layers)
        return (
            f"mid_layer_anomaly ({layers}, norm {flags.mid_layer_anomaly_ratio or 0:.1f}x off its neighbours, "
            f"first at step {flags.mid_layer_anomaly_first_step})"
        )
    if flag == "attention_collapse":
        return (
            f"attention_collapse (from step {flags.attention_collapse_onset_step}, "
            f"{flags.attention_collapse_share or 0:.0%} of heads)"
        )
    return flag


def _missing_lines(unavailable: dict[str, str], width: int) -> list[str]:
    """What the capture could not see, one wrapped entry per reason (signals sharing a reason share its entry)."""
    by_reason: dict[str, list[str]] = {}
    for signal, reason in unavailable.items():
        by_reason.setdefault(reason, []).append(signal)
    out: list[str] = []
    for reason, signals in by_reason.items():
        first, *rest = textwrap.wrap(f"{', '.join(signals)}: {reason}", width - 12) or [""]
        out.append(("missing   " if not out else " " * 10) + first)
        out.extend(" " * 12 + line for line in rest)
    return out


def render(
    report: Report, text: str | None, files: Sequence[str], width: int = 88, served_by: str | None = None
) -> str:
    """The report as the text ``corevital run`` prints: header, risk, signals, timings and files.

    The header ends with the device and dtype the model ran on when the report knows them, and with
    ``served by URL`` for a request to a server (``served_by``).
    """
    req, model = report.request, report.model
    mode = req.generation_mode or ("sample" if req.do_sample else "greedy")
    where = [" ".join(str(x) for x in (model.device, model.dtype) if x)]
    if served_by:
        where.append(f"served by {served_by}")
    lines = [
        " · ".join(
            [f"corevital · {model.name} · {req.operation} · {mode} · {report.usage.output_tokens} new tokens"]
            + [w for w in where if w]
        ),
        "",
    ]
    if text is not None:
        for paragraph in text.strip().splitlines() or [""]:
            lines.extend(textwrap.wrap(paragraph, width) or [""])
        lines.append("")
    summary = report.summary
    seq = report.sequences[summary.riskiest_sequence or 0] if report.sequences else None
    profile = f"   profile {report.thresholds.profile}" if report.thresholds.profile else ""
    if summary.risk_score is not None and seq is not None and seq.risk is not None:
        lines.append(
            f"risk      {summary.risk_score:.2f} ({summary.risk_level})"
            + (f", forced by {seq.risk.forced_by}" if seq.risk.forced_by else "")
            + profile
        )
        lines.extend(_factor_lines(seq))
    else:
        lines.append(f"risk      not computed (capture {report.capture.mode})")
    if summary.uncertainty is not None:  # capture "full": a second score, about the answer, never the risk
        lines.append(f"answer    uncertainty {summary.uncertainty:.2f} (label-free: how likely the answer is wrong)")
    if summary.flags and seq is not None:
        lines.append("flags     " + "; ".join(_flag_detail(flag, seq, report) for flag in seq.flags.fired()))
    else:
        lines.append("flags     none")
    diagnosis = seq.diagnosis if seq is not None else None
    if diagnosis is not None:
        if diagnosis.blame:
            lines.append(
                "blame     "
                + "; ".join(f"L{b.layer} {b.severity:.2f} ({b.reasons[0].detail})" for b in diagnosis.blame)
            )
        elif seq is not None and seq.layers is not None:
            lines.append("blame     no layer stands out")
        signals = [f"{c.name} from step {c.onset_step}" for c in diagnosis.compound]
        signals += [f"{w.name} from step {w.onset_step} (detected {w.detected_step})" for w in diagnosis.warnings]
        if signals:
            lines.append("signals   " + "; ".join(signals))
        if diagnosis.narrative:
            wrapped = textwrap.wrap(diagnosis.narrative, width - 10)
            lines.append("summary   " + (wrapped[0] if wrapped else ""))
            lines.extend("          " + line for line in wrapped[1:])
    if seq is not None and seq.timeline.entropy:
        agg = seq.aggregates
        entropy = seq.timeline.entropy
        scores = [e if e is not None else -1.0 for e in entropy]
        peak = max(range(len(scores)), key=scores.__getitem__)
        high = max(8.0, agg.entropy_max or 0.0)
        lines.append(f"entropy   {sparkline(entropy, 0.0, high, 64)}")
        lines.append(
            f"          bits per step (0–{high:g}); mean {_fmt(agg.entropy_mean)}, max {_fmt(agg.entropy_max)} "
            f"at step {peak}; surprisal mean {_fmt(agg.surprisal_mean)}; margin mean {_fmt(agg.margin_mean)}"
        )
    timings = report.timings
    ttft = f"{timings.time_to_first_token_s * 1000:.0f} ms" if timings.time_to_first_token_s is not None else "n/a"
    tpot = f"{timings.time_per_output_token_s * 1000:.1f} ms/token" if timings.time_per_output_token_s else "n/a"
    lines.append(f"timing    first token {ttft} · {tpot} · total {timings.duration_s:.2f} s")
    layers = seq.layers if seq is not None else None
    if layers is not None and layers.hidden_norm:
        lines.append(_layer_view(layers))
    if seq is not None and seq.prompt is not None and seq.prompt.perplexity is not None:
        lines.append(f"prompt    {seq.prompt.tokens} tokens, perplexity {seq.prompt.perplexity:.1f}")
    if report.perf is not None:
        perf = report.perf
        lines.append(
            f"overhead  {perf.ratio:.3f}x plain generate ({perf.instrumented_s:.2f} s vs {perf.plain_s:.2f} s, "
            f"median of {perf.runs}, --perf {perf.method})"
        )
    if report.capture.unavailable:
        lines.extend(_missing_lines(report.capture.unavailable, width))
    if files:
        lines.append("")
        lines.append("wrote")
        lines.extend(f"  {f}" for f in files)
    return "\n".join(lines)
