"""Flags from per-layer data: mid-layer norm anomalies, attention collapse, hidden-state loops.

Matrices are ``[captured layer][captured step]`` as in the report (``None`` =
not finite or not captured); ``indices`` and ``steps`` name the rows and
columns. Everything is relative to the run itself, so that what is normal
for a model (its norms growing with depth, a layer that always sits above
its neighbours, massive activations carried through a band of early layers)
never reads as an anomaly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Matrix = Sequence[Sequence[float | None]]

#: Steps needed before a layer's own median is trusted as its baseline; with fewer the baseline is 0.
MIN_BASELINE_STEPS = 3
#: A jump counts as carried to the output while every later layer keeps at least this share of ln(ratio)
#: (1.32x for a ratio of 3): deeper layers add large updates of their own, so an injected jump fades with depth.
CARRIED_SHARE = 0.25


@dataclass(frozen=True)
class LayerAnomaly:
    """One layer's hidden-state norm out of line at one step."""

    layer: int  # model layer index
    step: int  # generation step
    log_ratio: float  # ln of how far the norm moved (+ up, - down); inf when non-finite
    kind: str = "spike"  # "spike": against both neighbours; "jump": against its history, carried to the output;
    #                      "nonfinite": the state became NaN/inf here

    @property
    def nonfinite(self) -> bool:
        """Whether the state became NaN or infinite here (rather than an outlying norm)."""
        return self.kind == "nonfinite"

    @property
    def ratio(self) -> float:
        """The factor (>= 1) by which the norm left its usual relation to its neighbours."""
        return math.exp(abs(self.log_ratio)) if math.isfinite(self.log_ratio) else math.inf


@dataclass(frozen=True)
class MidLayerResult:
    """Every mid-layer anomaly of a run, and the largest deviation seen even when none fired."""

    anomalies: tuple[LayerAnomaly, ...]
    max_log_ratio: float  # largest |deviation| seen at any inner layer and step (0 if none), fired or not
    threshold_ratio: float

    @property
    def fired(self) -> bool:
        """Whether any anomaly was found."""
        return bool(self.anomalies)

    @property
    def layers(self) -> list[int]:
        """The anomalous layers, ascending."""
        return sorted({a.layer for a in self.anomalies})

    @property
    def first_step(self) -> int | None:
        """The earliest step of any anomaly."""
        return min((a.step for a in self.anomalies), default=None)


def _log(value: float | None) -> float | None:
    return math.log(value) if value is not None and value > 0 and math.isfinite(value) else None


def _baseline(values: list[float], tolerance: float) -> float:
    """The run's usual level of ``values``: their median, or the opening level when the run left it for good.

    A fault covering more than half the run drags the median to its own level, and the healthy opening would
    then read as the anomaly, in the opposite direction. So when the first :data:`MIN_BASELINE_STEPS` values
    agree within ``tolerance`` and their median is more than ``tolerance`` from the run's, the opening is the
    baseline: a run starts healthy.
    """
    if len(values) < MIN_BASELINE_STEPS:
        return 0.0
    whole = statistics.median(values)
    opening = values[:MIN_BASELINE_STEPS]
    if max(opening) - min(opening) <= tolerance and abs(statistics.median(opening) - whole) > tolerance:
        return statistics.median(opening)
    return whole


def mid_layer_anomalies(norms: Matrix, indices: Sequence[int], steps: Sequence[int], ratio: float) -> MidLayerResult:
    """Inner layers whose hidden-state norm leaves its neighbours or its own history by more than ``ratio``.

    Two tests on ln-norms, each against the run's own history so that what is normal for the model never fires:

    * **spike** — at inner layer i and step t, lo = ln n_i - ln n_(i-1) and up = ln n_i - ln n_(i+1), each minus
      its usual level over the run's steps (:func:`_baseline`: the median, or the opening level when a fault
      covers most of the run); the deviation is the smaller of the two when both point the same way.
      A spike at one layer moves both; a band of layers rising together moves only one side at its edges.
    * **jump carried to the output** — at step t, every captured layer from an inner layer b to the last one sits
      away from its own usual norm (:func:`_baseline`) in the same direction, by at least :data:`CARRIED_SHARE`
      of ln(``ratio``), and somewhere in that band by more than ``ratio``: something entered the residual stream
      at layer b and stayed to the output. Massive activations (healthy, up to 10x the usual norm on some
      tokens) are written by an early layer and cancelled well before the last one, so they never form such a
      band: over 200 SmolLM2 generations, healthy and degenerate, the largest band seen was 1.55x.

    A non-finite norm at an inner layer whose first captured layer is finite is an anomaly too. The result keeps
    the largest deviation seen by either test (fired or not) for the risk factor.
    """
    limit = math.log(ratio)
    found: list[LayerAnomaly] = []
    worst = 0.0
    logs = [[_log(v) for v in row] for row in norms]
    count = len(norms)
    first = norms[0] if norms else []
    for i in range(1, count - 1):
        lo = [a - b if a is not None and b is not None else None for a, b in zip(logs[i], logs[i - 1])]
        up = [a - b if a is not None and b is not None else None for a, b in zip(logs[i], logs[i + 1])]
        base_lo = _baseline([v for v in lo if v is not None], limit)
        base_up = _baseline([v for v in up if v is not None], limit)
        for j, (step, x, y) in enumerate(zip(steps, lo, up)):
            if x is None or y is None:
                if norms[i][j] is None and j < len(first) and first[j] is not None:
                    found.append(LayerAnomaly(indices[i], step, math.inf, "nonfinite"))
                continue
            a, b = x - base_lo, y - base_up
            if a * b <= 0:
                continue
            deviation = min(abs(a), abs(b))
            if deviation > worst:
                worst = deviation
            if deviation > limit:
                found.append(LayerAnomaly(indices[i], step, math.copysign(deviation, a), "spike"))
    if count >= 3:
        history = [[v for v in row if v is not None] for row in logs]
        if all(len(h) >= MIN_BASELINE_STEPS for h in history):
            carried = limit * CARRIED_SHARE
            medians = [_baseline(h, carried) for h in history]
            last_row, last_median = logs[-1], medians[-1]
            for j, step in enumerate(steps):
                cell = last_row[j] if j < len(last_row) else None
                if cell is None:
                    continue
                last = cell - last_median
                if abs(last) < carried:
                    continue  # nothing carried to the output at this step (almost every step)
                entry, size = None, 0.0  # the band: from the last layer down while the deviation holds
                for i in range(count - 2, 0, -1):
                    value = logs[i][j] if j < len(logs[i]) else None
                    if value is None:
                        break
                    d = value - medians[i]
                    if d * last <= 0 or abs(d) < carried:
                        break
                    entry, size = i, max(size, abs(d))
                if entry is None:
                    continue
                worst = max(worst, size)
                if size > limit:
                    found.append(LayerAnomaly(indices[entry], step, math.copysign(size, last), "jump"))
    return MidLayerResult(tuple(found), worst, ratio)


@dataclass(frozen=True)
class CollapseResult:
    """Result of the attention-collapse flag, with the shares behind it."""

    fired: bool
    onset_step: int | None  # first step of the first sustained stretch
    sustained_share: float  # highest share held for min_steps consecutive captured steps (0 if too few steps)
    peak_share: float  # highest share at any one step
    steps_above: int  # captured steps at or above the threshold
    worst_layer: int | None  # layer with the highest mean collapsed share
    worst_layer_share: float
    threshold: float


def collapsed_share_per_step(collapsed: Matrix) -> list[float | None]:
    """Share of collapsed heads over all captured layers at each captured step (layers have equal head counts)."""
    width = max((len(row) for row in collapsed), default=0)
    shares: list[float | None] = []
    for j in range(width):
        cells = [row[j] for row in collapsed if j < len(row)]
        values = [v for v in cells if v is not None]
        shares.append(sum(values) / len(values) if values else None)
    return shares


def attention_collapse(
    collapsed: Matrix, indices: Sequence[int], steps: Sequence[int], share: float, min_steps: int
) -> CollapseResult:
    """Fires when at least ``share`` of all captured heads are collapsed on ``min_steps`` consecutive captured steps.

    ``collapsed`` is ``attn_collapsed_fraction``: per layer and step the share of heads whose attention over the
    non-sink keys has near-zero normalised entropy (the sink itself is healthy and excluded at capture).
    """
    shares = collapsed_share_per_step(collapsed)
    sustained = 0.0
    onset = None
    for j in range(0, len(shares) - min_steps + 1):
        window = [v for v in shares[j : j + min_steps] if v is not None]
        if len(window) < min_steps:
            continue
        held = min(window)
        sustained = max(sustained, held)
        if held >= share and onset is None:
            onset = steps[j]
    finite = [v for v in shares if v is not None]
    layer_means = [
        (sum(v for v in row if v is not None) / max(1, sum(v is not None for v in row)), indices[i])
        for i, row in enumerate(collapsed)
        if any(v is not None for v in row)
    ]
    worst_share, worst_layer = max(layer_means, key=lambda m: (m[0], -m[1]), default=(0.0, None))  # lowest on ties
    return CollapseResult(
        fired=onset is not None,
        onset_step=onset,
        sustained_share=sustained,
        peak_share=max(finite, default=0.0),
        steps_above=sum(v >= share for v in finite),
        worst_layer=worst_layer,
        worst_layer_share=worst_share,
        threshold=share,
    )


def _lag_diffs(values: Sequence[float | None], period: int, log: bool) -> list[float | None]:
    """|x(t) - x(t - period)| per step (``None`` where either value is missing or, for logs, not positive)."""
    out: list[float | None] = [None] * len(values)
    for t in range(period, len(values)):
        a, b = values[t], values[t - period]
        if a is None or b is None:
            continue
        if log:
            if a > 0 and b > 0:
                out[t] = abs(math.log(a) - math.log(b))
        else:
            out[t] = abs(a - b)
    return out


def _window_means(diffs: list[float | None], window: int) -> list[float | None]:
    """Mean of ``diffs`` over the ``window`` steps ending at each step; ``None`` unless all of them are present."""
    out: list[float | None] = [None] * len(diffs)
    total, present = 0.0, 0
    for t, d in enumerate(diffs):
        if d is not None:
            total += d
            present += 1
        if t >= window:
            old = diffs[t - window]
            if old is not None:
                total -= old
                present -= 1
        if t + 1 >= window and present == window:
            out[t] = total / window
    return out


@dataclass(frozen=True)
class HiddenLoop:
    """A stretch where the last layer's hidden state repeats with a fixed period."""

    onset_step: int  # first step of the first repeating cycle (window start minus one period)
    period: int
    end_step: int  # last step of the last qualifying window
    recurrence: float  # the best window's mean |x(t) - x(t - period)|, the larger of the two series with full capture


def hidden_loop(
    norms: Sequence[float | None],
    cos_prev: Sequence[float | None] | None,
    *,
    window: int,
    max_period: int,
    norm_tolerance: float,
    cos_tolerance: float,
) -> HiddenLoop | None:
    """A stretch where the last layer's state repeats with a fixed period: the hidden-state side of a loop.

    Per-step series of one layer (``None`` where not captured). A window of ``window`` consecutive steps
    qualifies for period p when the mean |ln n(t) - ln n(t - p)| is at most ``norm_tolerance`` and, when
    ``cos_prev`` (the cosine to the previous step, full capture) is given, the mean |c(t) - c(t - p)| is at most
    ``cos_tolerance``. Inside a loop the state repeats, so both series do (measured on SmolLM2: 0.002-0.02
    inside loops; at least 0.03 for any period and window of coherent text). Returns the earliest qualifying
    stretch (by its first window; the smallest period on ties, not one of its multiples), or ``None``.
    """
    best: HiddenLoop | None = None
    best_key: tuple[int, int] | None = None
    log_norms = [math.log(v) if v is not None and v > 0 else None for v in norms]
    for period in range(1, max_period + 1):
        if period + window > len(norms):
            break
        norm_means = _window_means(_lag_diffs(log_norms, period, log=False), window)
        cos_means = _window_means(_lag_diffs(cos_prev, period, log=False), window) if cos_prev is not None else None
        first = last = None
        score = math.inf
        for t, nm in enumerate(norm_means):
            if nm is None or nm > norm_tolerance:
                continue
            value = nm
            if cos_means is not None:
                cm = cos_means[t]
                if cm is None or cm > cos_tolerance:
                    continue
                value = max(nm, cm)
            if first is None:
                first = t
            last = t
            score = min(score, value)
        if first is None or last is None:
            continue
        key = (first, period)  # earliest window; on ties the smallest period (not one of its multiples)
        if best_key is None or key < best_key:
            best_key = key
            best = HiddenLoop(max(0, first - window + 1 - period), period, last, score)
    return best


def recurrence(
    values: Mapping[int, float | None], period: int, start: int, end: int, log: bool = False, min_pairs: int = 3
) -> float | None:
    """Mean |x(t) - x(t - period)| over steps t in [start + period, end): how exactly a per-step series repeats.

    ``values`` maps generation steps to one layer's ``hidden_cos_prev`` or (``log=True``) norm. ``None`` with
    fewer than ``min_pairs`` steps where both values were captured.
    """
    diffs = []
    for t in range(start + period, end):
        a, b = values.get(t), values.get(t - period)
        if a is None or b is None:
            continue
        if log:
            if a <= 0 or b <= 0:
                continue
            diffs.append(abs(math.log(a) - math.log(b)))
        else:
            diffs.append(abs(a - b))
    return sum(diffs) / len(diffs) if len(diffs) >= min_pairs else None
