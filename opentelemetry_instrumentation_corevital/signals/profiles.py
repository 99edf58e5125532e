"""Model profiles: per-family thresholds and risk-factor calibration, shipped as JSON data files.

A profile is a JSON file in the package's ``profiles/`` folder (one per model
family, chosen by ``config.model_type``; a profile calibrated for one checkpoint
also lists ``name_patterns`` matched against the model name first) or anywhere
on disk (a user's own).
``default.json`` defines every key; a family file names ``"extends":
"default"`` and overrides only what differs, with a reason. Users override
single values on top (``thresholds=`` and ``factors=`` of
:func:`resolve_profile`). Every bad name or value raises
:class:`~opentelemetry_instrumentation_corevital.ConfigurationError` naming it.

File format (``"format": 1``)::

    {"format": 1, "name": "llama", "extends": "default", "model_types": ["llama"], "name_patterns": [],
     "description": "...", "calibration": "where the numbers come from",
     "thresholds": {"high_entropy_bits": 4.0, ...},
     "risk": {"entropy_mean": {"midpoint": 2.6, "scale": 0.45, "weight": 0.4}, ...},
     "baseline": {"entropy_mean": {"mean": .., "std": .., "p10": .., "p50": .., "p90": .., "runs": 200}, ...},
     "probability": {"features": [...], "weights": [...], "bias": .., "means": [...], "scales": [...],
                     "ece": .., "auroc": .., "runs": ..}}

``baseline`` and ``probability`` are written by ``corevital calibrate`` (see
:mod:`.calibration`): with them, every run reports its divergence from the
healthy runs and its risk score becomes the fitted probability.

Unlike the original CoreVital, whose profiles were read from a path relative
to its source tree (so a regular install silently used defaults), these are
package data read with ``importlib.resources``; a test installs the wheel and
loads every one.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError, shorten
from .calibration import FeatureStats, ProbabilityMap
from .factor import FactorSpec

PROFILE_FORMAT = 1
PACKAGE_FOLDER = "profiles"
#: A profile file larger than this is refused unread (the shipped ones are a few KiB).
MAX_PROFILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DiagnosisThresholds:
    """Every threshold the flags, compound signals, early warnings and layer blame use (see docs/diagnosis.md)."""

    high_entropy_bits: float
    high_entropy_min_run: int
    repetition_min_cycles: int
    repetition_hidden_window: int
    repetition_min_tokens: int
    repetition_max_period: int
    repetition_hidden_cos_tolerance: float
    repetition_hidden_norm_tolerance: float
    ngram_n: int
    mid_layer_norm_ratio: float
    attention_collapse_share: float
    attention_collapse_min_steps: int
    window: int
    confident_repetition_entropy_bits: float
    confident_repetition_copied_share: float
    context_loss_ratio: float
    context_loss_entropy_rise_bits: float
    degeneration_entropy_slope: float
    degeneration_margin_slope: float
    degeneration_surprisal_slope: float
    entropy_reference_bits: float
    entropy_cusum_slack_bits: float
    entropy_cusum_threshold_bits: float
    margin_reference: float
    margin_cusum_slack: float
    margin_cusum_threshold: float
    blame_min_severity: float
    blame_max_layers: int
    blame_collapse_share: float


THRESHOLD_NAMES = tuple(f.name for f in fields(DiagnosisThresholds))
_INT_THRESHOLDS = frozenset(f.name for f in fields(DiagnosisThresholds) if f.type in ("int", int))
_FACTOR_KEYS = frozenset({"midpoint", "scale", "weight", "higher_is_riskier", "description"})


@dataclass(frozen=True)
class Profile:
    """Thresholds, risk factors and calibration of one model family: its profile file plus the user's overrides."""

    name: str
    thresholds: DiagnosisThresholds
    factors: Mapping[str, FactorSpec]
    model_types: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()  # lower-case substrings of the model name that select this profile first
    description: str = ""
    calibration: str = ""
    overridden: tuple[str, ...] = field(default=())  # keys the user changed on top of the file
    baseline: Mapping[str, FeatureStats] | None = None  # healthy runs' feature distributions (corevital calibrate)
    probability: ProbabilityMap | None = None  # fitted P(bad) from labelled runs (corevital calibrate)


def check_threshold(name: str, value: Any, where: str) -> float | int:
    """A threshold value, checked (known name, finite, whole where it counts); else ``ConfigurationError``."""
    if name not in THRESHOLD_NAMES:
        raise ConfigurationError(f"{where}: unknown threshold {name!r}; known: {', '.join(THRESHOLD_NAMES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{where}: threshold {name!r} must be a finite number, got {value!r}")
    if name in _INT_THRESHOLDS:
        if int(value) != value or value < 1:
            raise ConfigurationError(f"{where}: threshold {name!r} must be a whole number >= 1, got {value!r}")
        return int(value)
    return float(value)


def _factor(name: str, spec: Mapping[str, Any], base: FactorSpec | None, where: str) -> FactorSpec:
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: risk factor {name!r} must be an object, got {spec!r}")
    unknown = set(spec) - _FACTOR_KEYS
    if unknown:
        raise ConfigurationError(
            f"{where}: risk factor {name!r} has unknown key(s) {sorted(unknown)}; known: {sorted(_FACTOR_KEYS)}"
        )
    values: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    values.update(spec)
    for key in ("midpoint", "scale", "weight"):
        if key not in values:
            raise ConfigurationError(f"{where}: risk factor {name!r} needs {key!r}")
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigurationError(f"{where}: risk factor {name!r}: {key} must be a finite number, got {v!r}")
    if values["scale"] <= 0:
        raise ConfigurationError(f"{where}: risk factor {name!r}: scale must be > 0, got {values['scale']!r}")
    if not 0 < values["weight"] < 1:
        raise ConfigurationError(
            f"{where}: risk factor {name!r}: weight must be in (0, 1), got {values['weight']!r} "
            "(a weight of 1 would let one factor pin the score at 1.0)"
        )
    return FactorSpec(
        float(values["midpoint"]),
        float(values["scale"]),
        float(values["weight"]),
        bool(values.get("higher_is_riskier", True)),
        str(values.get("description", "")),
    )


def _read_json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigurationError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: a profile must be a JSON object")
    if data.get("format") != PROFILE_FORMAT:
        raise ConfigurationError(f"{where}: format must be {PROFILE_FORMAT}, got {data.get('format')!r}")
    return data


def builtin_names() -> list[str]:
    """Names of the profiles shipped in the package."""
    folder = resources.files(__package__.rsplit(".", 1)[0]).joinpath(PACKAGE_FOLDER)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


@functools.cache
def _builtin_text(name: str) -> str:
    if name not in builtin_names():  # checked by name: any text never reaches the file system
        raise ConfigurationError(
            f"unknown profile {shorten(name)}; shipped profiles: {', '.join(builtin_names())}, "
            "or give the path of a .json profile file"
        )
    folder = resources.files(__package__.rsplit(".", 1)[0]).joinpath(PACKAGE_FOLDER)
    return folder.joinpath(f"{name}.json").read_text(encoding="utf-8")


def _read_file(path: Path, where: str) -> str:
    """A profile file's text, read only when it is a regular file of sane size (never a FIFO or a device)."""
    try:
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file, or not a regular file")
        with path.open("rb") as file:
            data = file.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:
            raise ConfigurationError(f"{where}: larger than {MAX_PROFILE_BYTES} bytes")
        return data.decode("utf-8")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, or not UTF-8
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"{where}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A list-of-strings key of a profile file, lower-cased."""
    value = data.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}: {key!r} must be a list of strings, got {shorten(value)}")
    return tuple(v.lower() for v in value)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    """A string key of a profile file ("" when absent)."""
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: {key!r} must be a string, got {shorten(value)}")
    return value


def _build(data: dict[str, Any], where: str, depth: int = 0) -> Profile:
    if depth > 4:
        raise ConfigurationError(f"{where}: 'extends' chain too deep")
    parent = _text(data, "extends", where)
    base = load_profile(parent, _depth=depth + 1) if parent else None
    raw_thresholds = data.get("thresholds", {})
    if not isinstance(raw_thresholds, Mapping):
        raise ConfigurationError(f"{where}: 'thresholds' must be an object")
    values = dataclasses.asdict(base.thresholds) if base else {}
    for key, value in raw_thresholds.items():
        values[key] = check_threshold(key, value, where)
    missing = [n for n in THRESHOLD_NAMES if n not in values]
    if missing:
        raise ConfigurationError(f"{where}: missing threshold(s) {', '.join(missing)} (or extend 'default')")
    raw_risk = data.get("risk", {})
    if not isinstance(raw_risk, Mapping):
        raise ConfigurationError(f"{where}: 'risk' must be an object of factors")
    factors = dict(base.factors) if base else {}
    for name, spec in raw_risk.items():
        if spec is None:  # a family may drop a factor
            factors.pop(name, None)
            continue
        factors[name] = _factor(name, spec, factors.get(name), where)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}: 'name' must be a non-empty string")
    reference = (
        _baseline(data["baseline"], where) if data.get("baseline") is not None else (base.baseline if base else None)
    )
    probability = (
        ProbabilityMap.from_dict(data["probability"], f"{where}: probability")
        if data.get("probability") is not None
        else (base.probability if base else None)
    )
    return Profile(
        name=name,
        thresholds=DiagnosisThresholds(**values),
        factors=factors,
        model_types=_strings(data, "model_types", where),
        name_patterns=_strings(data, "name_patterns", where),
        description=_text(data, "description", where),
        calibration=_text(data, "calibration", where),
        baseline=reference,
        probability=probability,
    )


def _baseline(raw: Any, where: str) -> dict[str, FeatureStats]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: 'baseline' must be an object of features")
    out: dict[str, FeatureStats] = {}
    for feature, stats in raw.items():
        try:
            values = {key: float(stats[key]) for key in ("mean", "std", "p10", "p50", "p90")}
            runs = int(stats["runs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{where}: baseline {feature!r} needs numbers mean, std, p10, p50, p90 and runs ({exc})"
            ) from None
        if not all(math.isfinite(v) for v in values.values()) or values["std"] < 0 or runs < 1:
            raise ConfigurationError(f"{where}: baseline {feature!r}: finite numbers, std >= 0 and runs >= 1")
        out[str(feature)] = FeatureStats(runs=runs, **values)
    return out


def load_profile(name_or_path: str | Path, *, _depth: int = 0) -> Profile:
    """A shipped profile by name (``"llama"``) or a profile file by path (``"my-model.json"``)."""
    text_name = str(name_or_path)
    if text_name.endswith(".json") or "/" in text_name or "\\" in text_name:
        where = f"profile file {shorten(text_name)}"
        return _build(_read_json(_read_file(Path(text_name), where), where), where, _depth)
    return _builtin(text_name, _depth)


@functools.cache
def _builtin_cached(name: str) -> Profile:
    return _build(_read_json(_builtin_text(name), f"profile {name!r}"), f"profile {name!r}")


def _builtin(name: str, depth: int) -> Profile:
    if depth > 4:
        raise ConfigurationError(f"profile {name!r}: 'extends' chain too deep")
    return _builtin_cached(name)


@functools.cache
def _model_type_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for name in builtin_names():
        for model_type in load_profile(name).model_types:
            index[model_type] = name
    return index


@functools.cache
def _name_patterns() -> tuple[tuple[str, str], ...]:
    return tuple((pattern, name) for name in builtin_names() for pattern in load_profile(name).name_patterns)


def profile_name_for(model_type: str | None, model_name: str | None = None) -> str:
    """The shipped profile for a model: one calibrated for this very checkpoint when its name matches (SmolLM2),
    else the one for its ``config.model_type`` family, else ``"default"``."""
    lowered = (model_name or "").lower()
    for pattern, name in _name_patterns():
        if pattern in lowered:
            return name
    return _model_type_index().get((model_type or "").lower(), "default")


def resolve_profile(
    model_type: str | None = None,
    profile: str | Path | Profile | None = None,
    thresholds: Mapping[str, float] | None = None,
    factors: Mapping[str, Mapping[str, Any] | None] | None = None,
    model_name: str | None = None,
) -> Profile:
    """The profile a generation is diagnosed with.

    ``profile`` (a name, a file path or a :class:`Profile`) wins over the automatic choice from ``model_name`` and
    ``model_type``; ``thresholds`` and ``factors`` then override single values (a factor mapped to ``None`` is
    dropped).
    """
    if isinstance(profile, Profile):
        chosen = profile
    else:
        chosen = load_profile(profile if profile is not None else profile_name_for(model_type, model_name))
    if not thresholds and not factors:
        return chosen
    values = dataclasses.asdict(chosen.thresholds)
    changed: list[str] = []
    for key, value in (thresholds or {}).items():
        values[key] = check_threshold(key, value, "thresholds")
        changed.append(key)
    new_factors = dict(chosen.factors)
    for name, spec in (factors or {}).items():
        changed.append(f"risk.{name}")
        if spec is None:
            new_factors.pop(name, None)
        else:
            new_factors[name] = _factor(name, spec, new_factors.get(name), "factors")
    return dataclasses.replace(
        chosen,
        thresholds=DiagnosisThresholds(**values),
        factors=new_factors,
        overridden=tuple(chosen.overridden) + tuple(changed),
    )


def effective_profile(
    model_type: str | None,
    model_name: str | None,
    profile: str | Path | Profile | None,
    thresholds: Mapping[str, float] | None,
    high_entropy_bits: float | None,
) -> Profile:
    """The profile one generation is diagnosed and stopped with: ``profile`` (or the model's own), then
    ``thresholds``, then the ``high_entropy_bits`` option where ``thresholds`` leaves it unset."""
    overrides = dict(thresholds or {})
    if high_entropy_bits is not None:
        overrides.setdefault("high_entropy_bits", high_entropy_bits)
    return resolve_profile(model_type, profile, overrides, model_name=model_name)
