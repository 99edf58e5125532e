"""Terminal rendering of a report: short, aligned, readable without colour."""

from __future__ import annotations

import math
import textwrap
from typing import Sequence

from ..report import LayerSeries, Report

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


def _layer_view(layers: "LayerSeries") -> str:
    """One line per captured layer (up to 32): mean hidden norm and, in full capture, attention entropy."""
    out = ["layers    mean over steps: hidden-state norm" + ("; attention entropy (0-1), collapsed heads"
                                                            if layers.attn_entropy is not None else "")]
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
            line += (f"   attn entropy {_fmt(mean(layers.attn_entropy, i), 3)}"
                     f"   collapsed {_fmt(mean(layers.attn_collapsed_fraction, i), 2)}"
                     f"   sink {_fmt(mean(layers.attn_sink_mass, i), 2)}")
        out.append(line)
    return "\n".join(out)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(report: Report, text: str | None, files: Sequence[str], width: int = 88) -> str:
    req, model = report.request, report.model
    mode = req.generation_mode or ("sample" if req.do_sample else "greedy")
    lines = [
        f"corevital · {model.name} · {req.operation} · {mode} · "
        f"{report.usage.output_tokens} new tokens · {model.device} {model.dtype}",
        "",
    ]
    if text is not None:
        for paragraph in text.strip().splitlines() or [""]:
            lines.extend(textwrap.wrap(paragraph, width) or [""])
        lines.append("")
    summary = report.summary
    if summary.risk_score is not None:
        seq = report.sequences[summary.riskiest_sequence or 0]
        factors = ", ".join(f"{f.name} {f.contribution:.2f}" for f in seq.risk.top_factors(3)) if seq.risk else ""
        lines.append(f"risk      {summary.risk_score:.2f} ({summary.risk_level})   top factors: {factors}")
    else:
        lines.append(f"risk      not computed (capture {report.capture.mode})")
    seq = report.sequences[0] if report.sequences else None
    if summary.flags and seq is not None:
        details = []
        for flag in summary.flags:
            if flag == "high_entropy":
                details.append(
                    f"high_entropy ({seq.flags.high_entropy_steps} steps > {report.thresholds.high_entropy_bits:g} bits, "
                    f"longest run {seq.flags.high_entropy_longest_run})"
                )
            elif flag == "repetition_loop":
                details.append(
                    f"repetition_loop (from step {seq.flags.repetition_onset_step}, period {seq.flags.repetition_period})"
                )
            elif flag == "nan_or_inf":
                details.append(f"nan_or_inf ({seq.flags.nan_or_inf_steps} steps)")
        lines.append("flags     " + "; ".join(details))
    else:
        lines.append("flags     none")
    if seq is not None and seq.timeline.entropy:
        agg = seq.aggregates
        entropy = seq.timeline.entropy
        peak = max(range(len(entropy)), key=lambda i: entropy[i] if entropy[i] is not None else -1.0)
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
        lines.append(f"overhead  {perf.ratio:.3f}x plain generate ({perf.instrumented_s:.2f} s vs {perf.plain_s:.2f} s, "
                     f"median of {perf.runs}, --perf {perf.method})")
    if report.capture.unavailable:
        lines.append("missing   " + "; ".join(f"{k}: {v}" for k, v in report.capture.unavailable.items()))
    if files:
        lines.append("")
        lines.append("wrote")
        lines.extend(f"  {f}" for f in files)
    return "\n".join(lines)
