"""What a sequence's diagnosis found: compound signals, early warnings, blamed layers, fingerprint (schema 1.2)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompoundSignalInfo:
    """A failure pattern several signals agree on, from its onset step."""

    name: str  # confident_repetition, context_loss, degeneration, attention_bottleneck
    onset_step: int
    severity: float
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass
class EarlyWarningInfo:
    """A trend that warns of trouble: where it started and when it was detected."""

    name: str  # entropy_acceleration, margin_collapse
    onset_step: int
    detected_step: int
    value: float
    severity: float


@dataclass
class BlameReasonInfo:
    """Why a layer is blamed, with the value that showed it."""

    code: str  # nonfinite, norm_spike, update_spike, attention_collapse
    severity: float
    value: float | None  # null for an infinite ratio (non-finite state)
    detail: str
    step: int | None = None


@dataclass
class LayerBlameInfo:
    """A layer the diagnosis blames, with its reasons."""

    layer: int
    severity: float
    reasons: list[BlameReasonInfo] = field(default_factory=list)


@dataclass
class Fingerprint:
    """A fixed-length feature vector of the run, for finding similar runs."""

    version: int
    vector: list[float | None] = field(default_factory=list)  # see signals.fingerprint.FINGERPRINT_FIELDS


@dataclass
class Diagnosis:
    """What the run's own values say went wrong, where, and what to do (schema 1.2)."""

    narrative: str = ""
    compound: list[CompoundSignalInfo] = field(default_factory=list)
    warnings: list[EarlyWarningInfo] = field(default_factory=list)
    blame: list[LayerBlameInfo] = field(default_factory=list)
    fingerprint: Fingerprint | None = None
    ngram_repeat_rate: float | None = None  # seq-rep-n of the output (kept for re-diagnosis without token ids)
    distinct_token_ratio: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # signal -> why this run could not have it
