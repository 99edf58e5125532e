"""Every attribute, metric and event name this package emits, in one place (the bottom layer: imports nothing of ours).

GenAI names follow semantic conventions v1.41 (now owned by
open-telemetry/semantic-conventions-genai); ours live under ``corevital.``.
The semconv package marks its GenAI constants deprecated since the move, so
the strings are spelled out here.
"""

from __future__ import annotations

# --- GenAI semantic conventions -------------------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
OUTPUT_TYPE = "gen_ai.output.type"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_STREAM = "gen_ai.request.stream"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
#: The default conventions' name of the provider, on their message events (gen_ai.provider.name replaced it).
SYSTEM = "gen_ai.system"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RESPONSE_ID = "gen_ai.response.id"

#: Hugging Face has no value in the well-known provider list; OpenLIT uses this one.
PROVIDER = "huggingface"
#: The OpenAI-compatible client: the API spoken (a vLLM, TGI or llama.cpp server has no well-known value).
PROVIDER_OPENAI = "openai"
PROVIDER_VLLM = "vllm"
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"

# --- CoreVital span attributes -------------------------------------------------
CV = "corevital."
SCHEMA_VERSION = CV + "schema_version"
CAPTURE_MODE = CV + "capture.mode"
CAPTURE_UNAVAILABLE = CV + "capture.unavailable"
CAPTURE_ERROR = CV + "capture.error"
GENERATION_MODE = CV + "generation.mode"
RISK_SCORE = CV + "risk.score"
RISK_LEVEL = CV + "risk.level"
RISK_FACTORS = CV + "risk.factors"
RISK_FACTOR_CONTRIBUTIONS = CV + "risk.factor_contributions"
RISK_FACTOR_VALUES = CV + "risk.factor_values"
RISK_FACTOR_WEIGHTS = CV + "risk.factor_weights"
RISK_CALIBRATED = CV + "risk.calibrated"
RISK_UNCALIBRATED_SCORE = CV + "risk.uncalibrated_score"
RISK_DIVERGENCE = CV + "risk.divergence"
RISK_DIVERGENT_FEATURES = CV + "risk.divergent_features"
#: Answer uncertainty (RAUQ, capture "full"): how likely the answer is wrong, not whether the generation failed.
UNCERTAINTY_SCORE = CV + "uncertainty.score"
UNCERTAINTY_LAYER = CV + "uncertainty.layer"
PROFILE = CV + "profile"
NARRATIVE = CV + "narrative"
#: GenAI JSON attributes left off the span because the value-length limit would cut them into invalid JSON.
DROPPED_ATTRIBUTES = CV + "dropped_attributes"
BLAME_LAYERS = CV + "blame.layers"
BLAME_SEVERITIES = CV + "blame.severities"
BLAME_REASONS = CV + "blame.reasons"
COMPOUND = CV + "compound"
COMPOUND_ONSET_STEPS = CV + "compound.onset_steps"
WARNINGS = CV + "warnings"
WARNING_ONSET_STEPS = CV + "warnings.onset_steps"
FINGERPRINT = CV + "fingerprint"
FINGERPRINT_VERSION = CV + "fingerprint.version"
MID_LAYER_ANOMALY_LAYERS = CV + "mid_layer_anomaly.layers"
ATTENTION_COLLAPSE_ONSET_STEP = CV + "attention_collapse.onset_step"
FLAGS = CV + "flags"
FLAG_PREFIX = CV + "flag."
HIGH_ENTROPY_STEPS = CV + "high_entropy.steps"
REPETITION_ONSET_STEP = CV + "repetition.onset_step"
ENTROPY_MEAN = CV + "entropy.mean"
ENTROPY_MAX = CV + "entropy.max"
ENTROPY_P95 = CV + "entropy.p95"
PERPLEXITY_MEAN = CV + "perplexity.mean"
SURPRISAL_MEAN = CV + "surprisal.mean"
SURPRISAL_MAX = CV + "surprisal.max"
MARGIN_MEAN = CV + "margin.mean"
MARGIN_MIN = CV + "margin.min"
TOP1_PROB_MEAN = CV + "top1_prob.mean"
TOPK_MASS_MEAN = CV + "topk_mass.mean"
TIME_TO_FIRST_TOKEN = CV + "timing.time_to_first_token"
TIME_PER_OUTPUT_TOKEN = CV + "timing.time_per_output_token"
TIMELINE_LENGTHS = CV + "timeline.lengths"
TIMELINE_STRIDE = CV + "timeline.stride"
STEP_PREFIX = CV + "step."
STEP_SERIES = ("entropy", "surprisal", "margin", "top1_prob", "topk_mass")
STEP_DURATION = CV + "step.duration"
SEQUENCE_RISK_SCORES = CV + "sequence.risk_scores"
SEQUENCE_UNCERTAINTY_SCORES = CV + "sequence.uncertainty_scores"
CAPTURE_DETAIL = CV + "capture.detail"
LAYERS_INDICES = CV + "layers.indices"
LAYERS_PREFIX = CV + "layers."
#: Per-layer means over steps put on the span: summary has hidden_norm; full adds the rest.
SUMMARY_LAYER_SERIES = ("hidden_norm",)
FULL_LAYER_SERIES = (
    "hidden_norm",
    "update_ratio",
    "hidden_cos_prev",
    "attn_entropy",
    "attn_collapsed_fraction",
    "attn_sink_mass",
    "attn_prompt_mass",
    "router_entropy",
    "expert_load_balance",
)
PROMPT_TOKENS = CV + "prompt.tokens"
PROMPT_PERPLEXITY = CV + "prompt.perplexity"
PROMPT_SURPRISAL = CV + "prompt.surprisal"
PROMPT_BASIN = CV + "prompt.basin"
STEP_EVENTS_TOTAL = CV + "step_events.total"
STEP_EVENTS_SAMPLED = CV + "step_events.sampled"
PERF_PREFIX = CV + "perf."
INTERVENTION_CONDITIONS = CV + "intervention.conditions"
INTERVENTION_STEPS = CV + "intervention.steps"

# span events and per-step log records (full capture)
EVENT_STEP = "corevital.step"
EVENT_STEP_LOG = "corevital.generation.step"
STEP_INDEX = CV + "step"
SEQUENCE_INDEX = CV + "sequence"
STEP_ANOMALOUS = CV + "anomalous"
TOKEN_ID = CV + "token.id"

FLAG_NAMES = ("nan_or_inf", "repetition_loop", "mid_layer_anomaly", "attention_collapse", "high_entropy")

# --- metrics --------------------------------------------------------------------
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
METRIC_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"
#: The newest GenAI conventions' client inference metrics (``gen_ai_latest_experimental``), in place of the four above.
METRIC_INFERENCE_DURATION = "gen_ai.client.inference.duration"
METRIC_INFERENCE_TIME_TO_FIRST_CHUNK = "gen_ai.client.inference.time_to_first_chunk"
METRIC_INFERENCE_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.inference.time_per_output_chunk"
METRIC_INFERENCE_USAGE_INPUT = "gen_ai.client.inference.usage.input_tokens"
METRIC_INFERENCE_USAGE_OUTPUT = "gen_ai.client.inference.usage.output_tokens"
METRIC_INFERENCE_OPERATION_INPUT = "gen_ai.client.inference.operation.input_tokens"
METRIC_INFERENCE_OPERATION_OUTPUT = "gen_ai.client.inference.operation.output_tokens"
TOKEN_MODALITY = "gen_ai.token.modality"
METRIC_RISK_SCORE = "corevital.risk.score"
METRIC_UNCERTAINTY_SCORE = "corevital.uncertainty.score"
METRIC_HEALTH_FLAGS = "corevital.health.flags"
FLAG_ATTRIBUTE = "corevital.flag"
LAYER_ATTRIBUTE = "corevital.layer.index"
#: The per-layer histograms' default label: a group of consecutive layers, "first-last" (``layer_groups``).
LAYER_GROUP_ATTRIBUTE = "corevital.layer.group"
METRIC_LAYER_PREFIX = "corevital.layer."
#: Per-layer histograms (full capture), one measurement per layer per sequence: the mean over its steps.
LAYER_METRICS = ("hidden_norm", "attn_entropy", "attn_collapsed_fraction")
#: Distribution of every generated token's entropy (bits); bounded attributes only, never the step.
METRIC_TOKEN_ENTROPY = "corevital.token.entropy"
#: Failures inside CoreVital that cost a call its telemetry (never its output), by the stage that failed.
METRIC_INTERNAL_CALL_ERRORS = "corevital.internal.call_errors"
INTERNAL_STAGE = "corevital.internal.stage"
#: The stages of one call, in order (the bounded values of ``corevital.internal.stage``).
CALL_STAGES = ("start", "span_start", "capture", "report", "emit", "on_report", "span_end", "fail")

#: Every metric this package can emit, with its unit: the dashboards and the collector configs use only these.
METRIC_UNITS = {
    METRIC_OPERATION_DURATION: "s",
    METRIC_TOKEN_USAGE: "{token}",
    METRIC_TIME_TO_FIRST_TOKEN: "s",
    METRIC_TIME_PER_OUTPUT_TOKEN: "s",
    METRIC_INFERENCE_DURATION: "s",
    METRIC_INFERENCE_TIME_TO_FIRST_CHUNK: "s",
    METRIC_INFERENCE_TIME_PER_OUTPUT_CHUNK: "s",
    METRIC_INFERENCE_USAGE_INPUT: "{token}",
    METRIC_INFERENCE_USAGE_OUTPUT: "{token}",
    METRIC_INFERENCE_OPERATION_INPUT: "{token}",
    METRIC_INFERENCE_OPERATION_OUTPUT: "{token}",
    METRIC_RISK_SCORE: "1",
    METRIC_UNCERTAINTY_SCORE: "1",
    METRIC_HEALTH_FLAGS: "{flag}",
    METRIC_TOKEN_ENTROPY: "bit",
    METRIC_INTERNAL_CALL_ERRORS: "{error}",
    **{METRIC_LAYER_PREFIX + name: "1" for name in LAYER_METRICS},
}

# --- CoreVital's own health (exporters/losses.py) -----------------------------------
#: Telemetry items our exporters dropped: a full queue, the shutdown deadline, a refused write target.
METRIC_INTERNAL_DROPPED = "corevital.internal.dropped"
#: Exports of ours that failed (the backend refused, timed out or raised).
METRIC_INTERNAL_ERRORS = "corevital.internal.errors"
EXPORTER_ATTRIBUTE = "corevital.exporter"
SIGNAL_ATTRIBUTE = "corevital.signal"
INTERNAL_METRIC_UNITS = {METRIC_INTERNAL_DROPPED: "{item}", METRIC_INTERNAL_ERRORS: "{export}"}

# Explicit bucket boundaries from the GenAI conventions (v1.41).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
RISK_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ENTROPY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)

# --- log records ----------------------------------------------------------------
EVENT_REPORT = "corevital.generation.report"
#: The newest GenAI conventions' one event per call: its attributes, and its messages with content capture on.
EVENT_OPERATION_DETAILS = "gen_ai.client.inference.operation.details"
#: The default GenAI conventions' content events: one per input message (``gen_ai.user.message``...), one per choice.
EVENT_MESSAGE = "gen_ai.{role}.message"
EVENT_CHOICE = "gen_ai.choice"
