"""Calibration: a baseline of healthy runs, divergence from it, and a fitted probability.

``corevital calibrate`` runs a model on prompts the user knows to be fine and
keeps, per sequence-level feature, the distribution it saw (:func:`baseline`).
Later runs report how far they stray from it (:func:`divergence`): the mean
absolute z-score over the features and the ones beyond ``OUTLIER_Z``. With
labelled runs (1 = bad) it also fits a logistic :class:`ProbabilityMap`, so the
risk score becomes a probability whose reliability (ECE) is measured.

Features are per-token means, never counts or lengths, so a long answer is not
riskier for being long (answer length is a known confound in hallucination
benchmarks). Layer features exist only under ``capture="full"``: calibrate with
the capture mode you will run with; a map whose features are missing at run
time leaves the risk uncalibrated rather than guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .aggregate import is_finite, mean
from .evaluation import fit_logistic, predict_logistic

#: Sequence aggregates used as features (report field names).
LOGIT_FEATURES = ("entropy_mean", "surprisal_mean", "margin_mean", "top1_prob_mean", "topk_mass_mean")
#: Per-layer matrices averaged over steps and over all captured layers, and over the last third of them.
LAYER_FEATURES = ("attn_prompt_mass", "attn_entropy", "hidden_cos_prev", "update_ratio", "attn_prev_token")
#: The answer uncertainty (``sequences[].uncertainty.score``, capture "full").
UNCERTAINTY_FEATURE = "uncertainty"
FEATURES = LOGIT_FEATURES + tuple(f"{n}{s}" for n in LAYER_FEATURES for s in ("", "_late")) + (UNCERTAINTY_FEATURE,)
OUTLIER_Z = 3.0


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def sequence_features(sequence: Any) -> dict[str, float]:
    """The calibration features of one sequence (a ``SequenceReport`` or its dict); missing ones are left out."""
    out: dict[str, float] = {}
    aggregates = _get(sequence, "aggregates") or {}
    for name in LOGIT_FEATURES:
        value = _get(aggregates, name)
        if is_finite(value):
            out[name] = float(value)
    layers = _get(sequence, "layers")
    if layers:
        for name in LAYER_FEATURES:
            matrix = _get(layers, name)
            if not matrix:
                continue
            rows = [mean(row) for row in matrix]
            late = rows[len(rows) - max(1, len(rows) // 3) :]
            for suffix, chosen in (("", rows), ("_late", late)):
                value = mean([r for r in chosen if r is not None])
                if value is not None:
                    out[name + suffix] = value
    uncertainty = _get(_get(sequence, "uncertainty") or {}, "score")
    if is_finite(uncertainty):
        out[UNCERTAINTY_FEATURE] = float(uncertainty)
    return out


@dataclass(frozen=True)
class FeatureStats:
    """One feature's distribution over healthy runs: the baseline a run is compared with."""

    mean: float
    std: float
    p10: float
    p50: float
    p90: float
    runs: int

    def to_dict(self) -> dict[str, float]:
        """The profile-file form."""
        return {
            "mean": self.mean,
            "std": self.std,
            "p10": self.p10,
            "p50": self.p50,
            "p90": self.p90,
            "runs": self.runs,
        }


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def baseline(rows: Sequence[Mapping[str, float]]) -> dict[str, FeatureStats]:
    """Per-feature distribution over healthy runs (population standard deviation)."""
    out: dict[str, FeatureStats] = {}
    names = sorted({name for row in rows for name in row})
    for name in names:
        values = sorted(row[name] for row in rows if name in row)
        centre = sum(values) / len(values)
        std = math.sqrt(sum((v - centre) ** 2 for v in values) / len(values))
        out[name] = FeatureStats(
            centre, std, _quantile(values, 0.1), _quantile(values, 0.5), _quantile(values, 0.9), len(values)
        )
    return out


@dataclass(frozen=True)
class Divergence:
    """How far one run sits from the healthy baseline, in standard deviations."""

    score: float  # mean |z| over the features both sides have
    outliers: tuple[str, ...]  # features with |z| > OUTLIER_Z, most extreme first
    z: Mapping[str, float]


def divergence(features: Mapping[str, float], reference: Mapping[str, FeatureStats]) -> Divergence | None:
    """How far one run's features are from the healthy baseline; None when they share no feature."""
    z = {}
    for name, stats in reference.items():
        if name in features and stats.std > 0:
            z[name] = (features[name] - stats.mean) / stats.std
    if not z:
        return None
    outliers = tuple(sorted((n for n, v in z.items() if abs(v) > OUTLIER_Z), key=lambda n: -abs(z[n])))
    return Divergence(sum(abs(v) for v in z.values()) / len(z), outliers, z)


@dataclass(frozen=True)
class ProbabilityMap:
    """Logistic map from features to the probability that a run is bad."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    means: tuple[float, ...]
    scales: tuple[float, ...]

    def probability(self, values: Mapping[str, float]) -> float | None:
        """P(bad) for these feature values, or None when one of the map's features is missing."""
        if any(name not in values for name in self.features):
            return None
        return predict_logistic(self.weights, self.bias, self.means, self.scales, [values[n] for n in self.features])

    def to_dict(self) -> dict[str, Any]:
        """The profile-file form."""
        return {
            "features": list(self.features),
            "weights": list(self.weights),
            "bias": self.bias,
            "means": list(self.means),
            "scales": list(self.scales),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "probability") -> ProbabilityMap:
        """Read the profile-file form, checked; a ``ConfigurationError`` names ``where`` on bad input."""
        from .._errors import ConfigurationError

        try:
            features = tuple(str(f) for f in data["features"])
            arrays = [tuple(float(v) for v in data[key]) for key in ("weights", "means", "scales")]
            bias = float(data["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: needs features, weights, bias, means and scales ({exc})") from None
        if any(len(a) != len(features) for a in arrays):
            raise ConfigurationError(f"{where}: features, weights, means and scales must have the same length")
        if not all(math.isfinite(v) for a in arrays for v in a) or not math.isfinite(bias):
            raise ConfigurationError(f"{where}: every number must be finite")
        if any(s <= 0 for s in arrays[2]):
            raise ConfigurationError(f"{where}: scales must be > 0")
        return cls(features, arrays[0], bias, arrays[1], arrays[2])


def fit_probability(
    rows: Sequence[Mapping[str, float]], labels: Sequence[int], features: Sequence[str] | None = None, l2: float = 1.0
) -> ProbabilityMap:
    """Fit the map on labelled runs, using the features every run has (in ``FEATURES`` order)."""
    if len(rows) != len(labels):
        raise ValueError("one label per run is needed")
    if len(set(labels)) < 2:
        raise ValueError("labels must include both healthy (0) and bad (1) runs")
    names = [n for n in (features or FEATURES) if all(n in row for row in rows)]
    if not names:
        raise ValueError("no feature is present in every run")
    weights, bias, means, scales = fit_logistic([[row[n] for n in names] for row in rows], labels, l2=l2)
    return ProbabilityMap(tuple(names), tuple(weights), bias, tuple(means), tuple(scales))


#: Risk factors recalibrated from healthy runs: factor -> baseline feature, and whether high values are risky.
RECALIBRATED_FACTORS = {
    "entropy_mean": ("entropy_mean", True),
    "surprisal_mean": ("surprisal_mean", True),
    "margin_mean": ("margin_mean", False),
}
#: Fewest healthy runs for a recalibrated factor; fewest runs of each label for a probability map.
MIN_HEALTHY_RUNS = 20
MIN_RUNS_PER_LABEL = 10
LN9 = math.log(9.0)


def recalibrated_factors(reference: Mapping[str, FeatureStats]) -> dict[str, dict[str, float]]:
    """Midpoint and scale of the distributional risk factors from healthy runs.

    midpoint = p90 (p10 where low is risky) and scale = (p90 - p50) / ln 9, so a
    typical healthy run scores 0.1 on each factor and one in ten above 0.5: the
    score then says "unusual for this model", which a fixed default cannot.
    """
    out: dict[str, dict[str, float]] = {}
    for factor, (feature, higher) in RECALIBRATED_FACTORS.items():
        stats = reference.get(feature)
        if stats is None or stats.runs < MIN_HEALTHY_RUNS:
            continue
        spread = (stats.p90 - stats.p50) if higher else (stats.p50 - stats.p10)
        if spread <= 0:
            continue
        out[factor] = {"midpoint": stats.p90 if higher else stats.p10, "scale": spread / LN9}
    return out


@dataclass(frozen=True)
class FitQuality:
    """Reliability of a probability map on runs it was not fitted on (two-fold cross-validation)."""

    ece: float
    auroc: float
    runs: int


def cross_validated(rows: Sequence[Mapping[str, float]], labels: Sequence[int], l2: float = 1.0) -> FitQuality:
    """Fit on one half (alternate runs of each label), predict the other, and the reverse; score every prediction.

    A map's quality measured on the runs it was fitted on flatters it; this is the honest figure to publish.
    """
    from .evaluation import auroc, expected_calibration_error

    folds: list[list[int]] = [[], []]
    seen = {0: 0, 1: 0}
    for i, label in enumerate(labels):
        folds[seen[label] % 2].append(i)
        seen[label] += 1
    probs = [0.0] * len(rows)
    names = [n for n in FEATURES if all(n in row for row in rows)]
    for held, fit in ((0, 1), (1, 0)):
        fitted = fit_probability([rows[i] for i in folds[fit]], [labels[i] for i in folds[fit]], names, l2)
        for i in folds[held]:  # every row has every one of ``names``: no missing feature
            values = [rows[i][n] for n in fitted.features]
            probs[i] = predict_logistic(fitted.weights, fitted.bias, fitted.means, fitted.scales, values)
    return FitQuality(expected_calibration_error(probs, labels), auroc(probs, labels), len(rows))


def calibration_profile(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[int | None],
    *,
    name: str,
    extends: str,
    source: str,
    l2: float = 1.0,
) -> tuple[dict[str, Any], list[str]]:
    """A profile file (format 1) from the features of calibration runs, and notes on what it could not fit.

    ``labels``: 0 healthy, 1 bad, ``None`` unlabelled (taken as healthy). Healthy runs give the baseline and the
    recalibrated factors; with at least ``MIN_RUNS_PER_LABEL`` runs of each label, a probability map is fitted on
    every labelled run and its cross-validated ECE and AUROC are recorded.
    """
    if len(rows) != len(labels):
        raise ValueError("one label (or None) per run is needed")
    healthy = [row for row, label in zip(rows, labels) if label != 1]
    notes: list[str] = []
    if len(healthy) < 2:
        raise ValueError(f"calibration needs at least 2 healthy runs, got {len(healthy)}")
    reference = baseline(healthy)
    factors = recalibrated_factors(reference)
    if len(healthy) < MIN_HEALTHY_RUNS:
        notes.append(f"risk factors not recalibrated: {len(healthy)} healthy runs, {MIN_HEALTHY_RUNS} needed")
    profile: dict[str, Any] = {
        "format": 1,
        "name": name,
        "extends": extends,
        "description": f"Calibrated by corevital calibrate on {len(rows)} runs of {source}.",
        "calibration": (
            f"{len(healthy)} healthy runs give the baseline and the midpoint (p90, p10 for the margin) "
            "and scale ((p90 - p50) / ln 9) of the distributional risk factors"
        ),
        "risk": factors,
        "baseline": {feature: stats.to_dict() for feature, stats in reference.items()},
    }
    labelled = [(row, label) for row, label in zip(rows, labels) if label is not None]
    counts = {0: sum(1 for _, y in labelled if y == 0), 1: sum(1 for _, y in labelled if y == 1)}
    if labelled and min(counts.values()) < MIN_RUNS_PER_LABEL:
        notes.append(
            f"no probability map: {counts[0]} healthy and {counts[1]} bad labelled runs, "
            f"{MIN_RUNS_PER_LABEL} of each needed"
        )
    elif labelled:
        x, y = [row for row, _ in labelled], [int(label) for _, label in labelled]
        fitted = fit_probability(x, y, l2=l2)
        quality = cross_validated(x, y, l2=l2)
        profile["probability"] = {**fitted.to_dict(), "ece": quality.ece, "auroc": quality.auroc, "runs": quality.runs}
        profile["calibration"] += (
            f"; {len(labelled)} labelled runs fit the probability map (two-fold "
            f"cross-validated ECE {quality.ece:.3f}, AUROC {quality.auroc:.3f})"
        )
    return profile, notes
