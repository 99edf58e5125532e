"""The versioned report of one generation.

A report is plain data: every field is a number, string, bool, list or nested
report object, so ``to_dict()`` is JSON as-is and the shipped JSON Schema
(``schema/report.schema.json``) describes it exactly. Per-step series are
stored column-wise (one list per signal) and non-finite values as ``null``.

Versioning: ``schema_version`` is MAJOR.MINOR.PATCH. Adding optional fields
bumps MINOR; readers accept any report of the same MAJOR.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ._findings import Diagnosis
from ._plain import from_plain

SCHEMA_VERSION = "1.5.0"
SCHEMA_MAJOR = 1


@dataclass
class ModelInfo:
    """The model that generated: name, architecture, size, device and dtype."""

    name: str
    model_type: str | None = None
    architecture: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    vocab_size: int | None = None
    dtype: str | None = None
    device: str | None = None
    is_encoder_decoder: bool = False


@dataclass
class RequestInfo:
    """What was asked of ``generate()``: operation and decoding settings."""

    operation: str  # "chat" or "text_completion"
    generation_mode: str | None = None  # greedy_search, sample, beam_search ...
    do_sample: bool = False
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_beams: int = 1
    num_return_sequences: int = 1
    repetition_penalty: float | None = None
    min_new_tokens: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False


@dataclass
class CaptureInfo:
    """How the run was captured: mode, signal groups present or unavailable (and why), layers."""

    mode: str
    distribution: str = "raw_logits"  # what the logit signals describe ("processed_scores": migrated CoreVital 0.x)
    top_k: int = 10
    signals: list[str] = field(default_factory=list)  # signal groups present in this report
    unavailable: dict[str, str] = field(default_factory=dict)  # signal group -> why not
    error: str | None = None
    layers: list[int] = field(default_factory=list)  # decoder layers captured
    step_stride: int = 1  # layer data every n-th step
    attention_source: str | None = None  # how attention rows were obtained
    detail: str | None = None  # on_risk: "full" when the risk crossed the threshold, else "summary"


@dataclass
class Usage:
    """Prompt and output token counts."""

    input_tokens: int
    output_tokens: int


@dataclass
class Timings:
    """Wall-clock timings of the generation (seconds)."""

    duration_s: float
    time_to_first_token_s: float | None = None
    time_per_output_token_s: float | None = None
    step_end_s: list[float] = field(default_factory=list)  # seconds from start to each step's end


@dataclass
class Timeline:
    """Per-step series of one sequence; index i is the i-th generated token."""

    entropy: list[float | None] = field(default_factory=list)  # bits
    perplexity: list[float | None] = field(default_factory=list)  # 2 ** entropy
    surprisal: list[float | None] = field(default_factory=list)  # bits, of the emitted token
    top1_prob: list[float | None] = field(default_factory=list)
    margin: list[float | None] = field(default_factory=list)  # top-1 minus top-2 probability
    topk_mass: list[float | None] = field(default_factory=list)  # mass of the top 10


@dataclass
class Aggregates:
    """A sequence's logit signals summed up over its steps."""

    entropy_mean: float | None = None
    entropy_max: float | None = None
    entropy_p95: float | None = None
    perplexity_mean: float | None = None
    surprisal_mean: float | None = None
    surprisal_max: float | None = None
    top1_prob_mean: float | None = None
    margin_mean: float | None = None
    margin_min: float | None = None
    topk_mass_mean: float | None = None


#: Flag names in the order they are listed (most severe first).
FLAG_ORDER = ("nan_or_inf", "repetition_loop", "mid_layer_anomaly", "attention_collapse", "high_entropy")


@dataclass
class Flags:
    """The threshold checks of a sequence: whether each fired, how often, and from which step."""

    nan_or_inf: bool = False
    nan_or_inf_steps: int = 0
    nan_or_inf_first_step: int | None = None
    high_entropy: bool = False
    high_entropy_steps: int = 0
    high_entropy_longest_run: int = 0
    high_entropy_first_step: int | None = None
    repetition_loop: bool = False
    repetition_onset_step: int | None = None
    repetition_period: int | None = None
    repetition_share: float | None = None
    repetition_evidence: list[str] = field(default_factory=list)  # "tokens", "hidden": what showed the loop
    repetition_hidden_recurrence: float | None = None  # mean |x(t) - x(t - period)| of the last layer in the loop
    repetition_hidden_signal: str | None = None  # "hidden_cos_prev" (full) or "hidden_norm" (summary)
    mid_layer_anomaly: bool = False
    mid_layer_anomaly_layers: list[int] = field(default_factory=list)
    mid_layer_anomaly_first_step: int | None = None
    mid_layer_anomaly_ratio: float | None = None  # largest norm ratio against both neighbours (fired or not)
    attention_collapse: bool = False
    attention_collapse_onset_step: int | None = None
    attention_collapse_share: float | None = None  # highest collapsed-head share held for the required steps
    attention_collapse_peak_share: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # flag or part of one -> why it could not be checked

    def fired(self) -> list[str]:
        """The names of the flags that fired, in report order."""
        return [name for name in FLAG_ORDER if getattr(self, name)]


@dataclass
class RiskFactor:
    """One feature's share of the risk score."""

    name: str
    value: float
    score: float
    weight: float
    contribution: float
    description: str = ""
    midpoint: float | None = None  # the calibrated logistic's centre: score 0.5
    scale: float | None = None


@dataclass
class RiskInfo:
    """A sequence's risk score, its level and the factors behind it."""

    score: float
    level: str
    factors: list[RiskFactor] = field(default_factory=list)
    forced_by: str | None = None
    # With a calibrated profile (schema 1.2): ``score`` is the fitted probability and the noisy-OR is kept here.
    calibrated: bool = False
    uncalibrated_score: float | None = None
    divergence: float | None = None  # mean |z| of the run's features against the profile's healthy baseline
    divergent_features: list[str] = field(default_factory=list)  # |z| > 3, most extreme first

    def top_factors(self, n: int = 3) -> list[RiskFactor]:
        """The ``n`` factors that contributed most, largest first."""
        return sorted(self.factors, key=lambda f: f.contribution, reverse=True)[:n]


#: Field metadata of the layer matrices: the capture's column group each belongs to.
_HIDDEN, _ATTENTION, _MOE = {"group": "hidden"}, {"group": "attention"}, {"group": "moe"}
_Matrix = list[list[float | None]]  # [layer][step]


@dataclass
class LayerSeries:
    """Per-layer data of one sequence: each matrix is [layer][step] for ``indices`` x ``steps``.

    Within a group, fields are declared in the capture's column order.
    """

    indices: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    hidden_norm: _Matrix = field(default_factory=list, metadata=_HIDDEN)
    hidden_mean: _Matrix | None = field(default=None, metadata=_HIDDEN)
    hidden_std: _Matrix | None = field(default=None, metadata=_HIDDEN)
    hidden_max_abs: _Matrix | None = field(default=None, metadata=_HIDDEN)
    hidden_nonfinite: _Matrix | None = field(default=None, metadata=_HIDDEN)  # non-finite elements of the new token
    hidden_cos_prev: _Matrix | None = field(default=None, metadata=_HIDDEN)  # cosine to the previous captured step's
    update_ratio: _Matrix | None = field(default=None, metadata=_HIDDEN)  # |out - in| / |in|
    attn_entropy: _Matrix | None = field(default=None, metadata=_ATTENTION)  # normalised 0..1, mean over heads
    attn_entropy_min: _Matrix | None = field(default=None, metadata=_ATTENTION)
    attn_max_weight: _Matrix | None = field(default=None, metadata=_ATTENTION)
    attn_sink_mass: _Matrix | None = field(default=None, metadata=_ATTENTION)
    attn_prompt_mass: _Matrix | None = field(default=None, metadata=_ATTENTION)
    attn_collapsed_fraction: _Matrix | None = field(default=None, metadata=_ATTENTION)
    attn_prev_token: _Matrix | None = field(default=None, metadata=_ATTENTION)  # top head weight on the previous token
    router_entropy: _Matrix | None = field(default=None, metadata=_MOE)
    expert_load_balance: _Matrix | None = field(default=None, metadata=_MOE)


def field_names(cls: type, group: str | None = None) -> tuple[str, ...]:
    """A report dataclass's field names in declaration order (or one ``group``'s): the one spelling of column names."""
    return tuple(f.name for f in fields(cls) if group is None or f.metadata.get("group") == group)


TIMELINE_SERIES = field_names(Timeline)
HIDDEN_MATRICES = field_names(LayerSeries, "hidden")
ATTENTION_MATRICES = field_names(LayerSeries, "attention")
MOE_MATRICES = field_names(LayerSeries, "moe")


@dataclass
class PromptTelemetry:
    """The prefill pass of one sequence's prompt (padding excluded)."""

    tokens: int
    surprisal: list[float | None] = field(default_factory=list)  # bits, of prompt tokens 2..n given the ones before
    perplexity: float | None = None  # 2 ** mean surprisal
    layers: list[int] = field(default_factory=list)
    hidden_norm: list[float | None] = field(default_factory=list)  # mean token L2 norm per layer
    attn_sparsity: list[float | None] = field(default_factory=list)
    basin: list[float | None] = field(default_factory=list)  # mean over heads
    basin_min: list[float | None] = field(default_factory=list)  # min over heads


@dataclass
class EncoderSummary:
    """Encoder-decoder models: the encoder pass over the input, per encoder layer."""

    indices: list[int] = field(default_factory=list)
    hidden_norm: list[float | None] = field(default_factory=list)
    attn_sparsity: list[float | None] = field(default_factory=list)
    basin: list[float | None] = field(default_factory=list)
    basin_min: list[float | None] = field(default_factory=list)


@dataclass
class UncertaintyInfo:
    """How likely the answer is wrong, without labels (RAUQ; ``signals.uncertainty``). Not the risk score."""

    score: float  # 0 .. 1: one minus the geometric mean of the attention-carried token confidences
    layer: int  # the layer whose confidence fell most
    tokens: int  # answer tokens scored
    method: str = "rauq"


@dataclass
class Intervention:
    """``stop_on``: the condition that stopped this sequence while it was being generated, and when."""

    condition: str  # repetition_loop, nan_or_inf, high_entropy or step_callback
    step: int  # the step whose token made the condition hold (the sequence ends with it)


@dataclass
class SequenceReport:
    """Everything measured about one generated sequence."""

    index: int
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "stop", "length", or "intervention" (stop_on)
    timeline: Timeline = field(default_factory=Timeline)
    aggregates: Aggregates = field(default_factory=Aggregates)
    flags: Flags = field(default_factory=Flags)
    risk: RiskInfo | None = None
    uncertainty: UncertaintyInfo | None = None  # schema 1.4: needs the attention statistics (capture "full")
    diagnosis: Diagnosis | None = None
    layers: LayerSeries | None = None
    prompt: PromptTelemetry | None = None
    encoder: EncoderSummary | None = None
    intervention: Intervention | None = None
    token_ids: list[int] | None = None  # content capture only
    token_texts: list[str] | None = None  # content capture only: each generated token's own text, one per step
    input_text: str | None = None  # content capture only
    output_text: str | None = None  # content capture only


@dataclass
class Summary:
    """The whole generation at a glance: worst sequence's risk, union of flags, pooled aggregates."""

    risk_score: float | None = None
    risk_level: str | None = None
    uncertainty: float | None = None  # the most uncertain sequence's answer uncertainty (schema 1.4)
    flags: list[str] = field(default_factory=list)
    aggregates: Aggregates = field(default_factory=Aggregates)
    riskiest_sequence: int | None = None
    uncertain_sequence: int | None = None  # the sequence ``uncertainty`` is of (schema 1.5)
    narrative: str | None = None  # the riskiest sequence's
    blamed_layers: list[int] = field(default_factory=list)  # the riskiest sequence's, worst first
    compound: list[str] = field(default_factory=list)  # compound signals on any sequence
    warnings: list[str] = field(default_factory=list)  # early warnings on any sequence


@dataclass
class Thresholds:
    """The thresholds this report was diagnosed with: the model profile's, with the user's overrides."""

    high_entropy_bits: float
    repetition_min_cycles: int
    repetition_min_tokens: int
    repetition_max_period: int
    profile: str | None = None
    overridden: list[str] = field(default_factory=list)
    high_entropy_min_run: int | None = None
    repetition_hidden_window: int | None = None
    repetition_hidden_cos_tolerance: float | None = None
    repetition_hidden_norm_tolerance: float | None = None
    ngram_n: int | None = None
    mid_layer_norm_ratio: float | None = None
    attention_collapse_share: float | None = None
    attention_collapse_min_steps: int | None = None
    window: int | None = None
    confident_repetition_entropy_bits: float | None = None
    confident_repetition_copied_share: float | None = None
    context_loss_ratio: float | None = None
    context_loss_entropy_rise_bits: float | None = None
    degeneration_entropy_slope: float | None = None
    degeneration_margin_slope: float | None = None
    degeneration_surprisal_slope: float | None = None
    entropy_reference_bits: float | None = None
    entropy_cusum_slack_bits: float | None = None
    entropy_cusum_threshold_bits: float | None = None
    margin_reference: float | None = None
    margin_cusum_slack: float | None = None
    margin_cusum_threshold: float | None = None
    blame_min_severity: float | None = None
    blame_max_layers: int | None = None
    blame_collapse_share: float | None = None


@dataclass
class PerfInfo:
    """Overhead measured by ``corevital run --perf strict`` in the same process, before this generation."""

    method: str  # "strict"
    runs: int  # timed runs of each kind (after warm-up)
    plain_s: float  # median wall time of plain generate()
    instrumented_s: float  # median wall time of the instrumented generate(), report and export included
    ratio: float  # instrumented_s / plain_s


@dataclass
class Origin:
    """A report converted by ``corevital migrate``: the source and the source's own verdicts, kept for comparison."""

    producer: str  # "CoreVital"
    schema_version: str  # the source's, e.g. "0.4.0"
    trace_id: str | None = None  # the source's (a UUID)
    risk_score: float | None = None
    health_flags: dict[str, Any] = field(default_factory=dict)
    narrative: str | None = None
    notes: list[str] = field(default_factory=list)  # how source fields were mapped, and what could not be


@dataclass
class Producer:
    """The package and version that wrote the report."""

    name: str
    version: str


@dataclass
class Report:
    """One generation call, as the report exporters, the CLI and the viewer read it."""

    schema_version: str
    report_id: str
    created_at: str
    producer: Producer
    model: ModelInfo
    request: RequestInfo
    capture: CaptureInfo
    usage: Usage
    timings: Timings
    thresholds: Thresholds
    summary: Summary = field(default_factory=Summary)
    sequences: list[SequenceReport] = field(default_factory=list)
    trace_id: str | None = None
    span_id: str | None = None
    input_messages: Any = None  # content capture only, GenAI message format
    system_instructions: Any = None  # content capture only: the chat template's own system prompt, as GenAI parts
    perf: PerfInfo | None = None
    origin: Origin | None = None  # set by `corevital migrate`: what the report was converted from

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        """The report as JSON text (non-finite numbers are an error, never written)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from ``to_dict()`` output (unknown keys are ignored)."""
        return from_plain(cls, data)

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Rebuild a report from ``to_json()`` output."""
        return cls.from_dict(json.loads(text))
