"""How good is a score at telling bad generations from good ones, and how to make it a probability.

Pure functions on plain lists, used by ``corevital calibrate`` and the
detection-quality benchmark: AUROC, recall at a false-positive budget,
expected calibration error, and a small L2-regularised logistic regression
(Newton's method) that maps signal values to a calibrated probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count half)."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    positives = sum(1 for _, y in pairs if y)
    negatives = len(pairs) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs at least one positive and one negative label")
    rank_sum = 0.0
    i = 0
    while i < len(pairs):  # average ranks over ties
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        rank_sum += rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def recall_at_fpr(scores: Sequence[float], labels: Sequence[int], max_fpr: float) -> tuple[float, float]:
    """(best recall, its threshold) among thresholds whose false-positive rate is at most ``max_fpr``.

    A sample is flagged when its score is >= the threshold.
    """
    negatives = [s for s, y in zip(scores, labels) if not y]
    positives = [s for s, y in zip(scores, labels) if y]
    if not positives or not negatives:
        raise ValueError("recall at FPR needs both positive and negative labels")
    best = (0.0, math.inf)
    for threshold in sorted(set(scores), reverse=True):
        fpr = sum(1 for s in negatives if s >= threshold) / len(negatives)
        if fpr > max_fpr:
            break
        recall = sum(1 for s in positives if s >= threshold) / len(positives)
        if recall >= best[0]:
            best = (recall, threshold)
    return best


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """ECE with ``bins`` equal-width bins: sum over bins of |accuracy - confidence| weighted by bin size."""
    if not probs:
        raise ValueError("ECE needs at least one prediction")
    totals = [0] * bins
    confidence = [0.0] * bins
    positives = [0] * bins
    for p, y in zip(probs, labels):
        b = min(int(p * bins), bins - 1)
        totals[b] += 1
        confidence[b] += p
        positives[b] += 1 if y else 0
    n = len(probs)
    return sum(
        abs(positives[b] / totals[b] - confidence[b] / totals[b]) * totals[b] / n for b in range(bins) if totals[b]
    )


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for large negative inputs."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def fit_logistic(
    features: Sequence[Sequence[float]], labels: Sequence[int], l2: float = 1e-2, iterations: int = 50
) -> tuple[list[float], float, list[float], list[float]]:
    """L2-regularised logistic regression by Newton's method on standardised features.

    Returns ``(weights, bias, means, scales)``: predict with
    ``sigmoid(bias + sum(w * (x - mean) / scale))``. Features are standardised
    so one regularisation strength suits them all.
    """
    rows = [list(map(float, f)) for f in features]
    if not rows:
        raise ValueError("fitting needs at least one labelled example")
    d = len(rows[0])
    means = [sum(r[j] for r in rows) / len(rows) for j in range(d)]
    scales = [math.sqrt(sum((r[j] - means[j]) ** 2 for r in rows) / len(rows)) or 1.0 for j in range(d)]
    x = [[1.0] + [(r[j] - means[j]) / scales[j] for j in range(d)] for r in rows]
    beta = [0.0] * (d + 1)
    for _ in range(iterations):
        p = [sigmoid(sum(b * v for b, v in zip(beta, xi))) for xi in x]
        gradient = [
            sum((pi - yi) * xi[j] for pi, yi, xi in zip(p, labels, x)) + (l2 * beta[j] if j else 0.0)
            for j in range(d + 1)
        ]
        hessian = [
            [
                sum(pi * (1 - pi) * xi[a] * xi[b] for pi, xi in zip(p, x)) + (l2 if a == b and a else 0.0)
                for b in range(d + 1)
            ]
            for a in range(d + 1)
        ]
        step = _solve(hessian, gradient)
        beta = [b - s for b, s in zip(beta, step)]
        if max(abs(s) for s in step) < 1e-9:
            break
    return beta[1:], beta[0], means, scales


def predict_logistic(
    weights: Sequence[float], bias: float, means: Sequence[float], scales: Sequence[float], values: Sequence[float]
) -> float:
    """P(bad) of one run's feature values under a fitted, standardised logistic model."""
    return sigmoid(bias + sum(w * (v - m) / s for w, v, m, s in zip(weights, values, means, scales)))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (small, dense systems)."""
    n = len(vector)
    a = [row[:] + [vector[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            a[pivot][col] = 1e-12
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][c] * out[c] for c in range(r + 1, n))) / a[r][r]
    return out
