"""Reports of the original CoreVital (schema 0.3.x and 0.4.0) converted into this package's report format.

Every field that has the same meaning is carried over exactly; fields whose
definition differs are left out and named in ``origin.notes`` (and, for whole
signal groups, in ``capture.unavailable``); the original's own verdicts (risk
score, health flags, narrative) are kept in ``origin`` for comparison. The
converted sequence is then diagnosed with this package's flags, risk score and
profiles, like a live report. A field of the wrong type or a missing required
field raises :class:`MigrationError` naming it (``timeline[3].logits_summary.entropy:
expected a number, got 'high'``).

What differs in the original, and how it is handled:

* causal models' logit signals describe the *processed* scores (after temperature/top-k/top-p):
  ``capture.distribution = "processed_scores"`` (seq2seq ones are raw logits);
* top-1 probability comes from the top-5 list, rounded to 3 decimals there;
* hidden-state summaries at step 0 cover the whole prompt, not the new token: step 0's layer data is left out;
* attention entropy is in nats over heads: normalised by ln(keys) when ``entropy_mean_normalized`` is absent;
* collapsed heads count the attention sink, max weight is the max over heads, hidden std is unbiased: not
  carried over (our definitions differ);
* basin scores average all prompt queries (ours: the last 32).
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from typing import Any

from ..version import __version__
from ._diagnose import diagnose_sequence, thresholds_of
from ._legacy_read import (
    MigrationError,
    Obj,
    as_bits,
    as_bool,
    as_count,
    as_int,
    as_ints,
    as_number,
    as_numbers,
    as_str,
    shown,
)
from ._model import (
    SCHEMA_VERSION,
    TIMELINE_SERIES,
    CaptureInfo,
    EncoderSummary,
    LayerSeries,
    ModelInfo,
    Origin,
    Producer,
    PromptTelemetry,
    Report,
    RequestInfo,
    SequenceReport,
    Timeline,
    Timings,
    Usage,
)
from ._summary import aggregates, finish_summary

SUPPORTED = ("0.3.x", "0.4.0")
PRODUCER = "opentelemetry-instrumentation-corevital"

#: Architecture class prefixes -> ``config.model_type`` (the profile key).
_ARCHITECTURES = (
    ("Mixtral", "mixtral"),
    ("Mistral", "mistral"),
    ("Qwen2Moe", "qwen2_moe"),
    ("Qwen2", "qwen2"),
    ("Phi3", "phi3"),
    ("GPT2", "gpt2"),
    ("Llama", "llama"),
    ("MT5", "mt5"),
    ("UMT5", "umt5"),
    ("LongT5", "longt5"),
    ("T5", "t5"),
    ("Bart", "bart"),
    ("Gemma2", "gemma2"),
    ("Gemma", "gemma"),
    ("Falcon", "falcon"),
)
_SEQ2SEQ_TYPES = {"t5", "mt5", "umt5", "longt5", "bart"}
#: OpenTelemetry times are 64-bit nanoseconds since 1970: a run must lie between these.
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_LAST = _dt.datetime(2262, 4, 11, tzinfo=_dt.timezone.utc)


def check_version(version: Any) -> str:
    """The source's schema version if this converter reads it, else a :class:`MigrationError`."""
    if not isinstance(version, str):
        raise MigrationError(f"schema_version: expected a string such as '0.4.0', got {shown(version)}")
    parts = version.split(".")
    if len(parts) == 3 and parts[0] == "1":
        raise MigrationError(f"schema_version {version!r} is already this package's report format; nothing to migrate")
    if len(parts) == 3 and parts[0] == "0" and (parts[1] == "3" or (parts[1] == "4" and parts[2] == "0")):
        return version
    raise MigrationError(
        f"schema_version {version!r} is not a CoreVital version this command reads ({', '.join(SUPPORTED)})"
    )


def model_type_of(architecture: str | None) -> str | None:
    """``config.model_type`` from an architecture class name (``LlamaForCausalLM`` -> ``llama``)."""
    for prefix, model_type in _ARCHITECTURES:
        if architecture and architecture.startswith(prefix):
            return model_type
    return None


def _created_at(value: str, where: str) -> str:
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MigrationError(f"{where}: not an ISO 8601 time: {shown(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    try:
        utc: _dt.datetime | None = parsed.astimezone(_dt.timezone.utc)
    except OverflowError:  # year 1 or 9999, a timezone away from the edge
        utc = None
    if utc is None or not _EPOCH <= utc < _LAST:
        raise MigrationError(f"{where}: {shown(value)} is outside 1970-01-01..2262-04-10 (OpenTelemetry's time range)")
    return utc.isoformat().replace("+00:00", "Z")


def _duration_s(summary: Obj | None, created: str) -> float:
    """The run's duration from ``summary.elapsed_ms``: >= 0, and not starting the run before 1970."""
    elapsed_ms = summary.get("elapsed_ms", as_number) if summary else None
    if summary is None or elapsed_ms is None:
        return 0.0
    since_epoch_s = (_dt.datetime.fromisoformat(created.replace("Z", "+00:00")) - _EPOCH).total_seconds()
    if not 0.0 <= elapsed_ms / 1000.0 <= since_epoch_s:
        raise MigrationError(
            f"{summary.where('elapsed_ms')}: expected 0 to {since_epoch_s * 1000:.0f} ms (a run starting after 1970), "
            f"got {shown(elapsed_ms)}"
        )
    return elapsed_ms / 1000.0


def _attention_entropy(summary: Obj, keys: int, field: str, normalised_field: str | None) -> float | None:
    if normalised_field and summary.has(normalised_field):
        return summary.get(normalised_field, as_number)
    raw = summary.get(field, as_number)
    if raw is None or keys < 2:
        return None
    return raw / math.log(keys)


def _layers(steps: list[Obj], seq2seq: bool, prompt_tokens: int, notes: list[str]) -> LayerSeries | None:
    """Per-layer matrices from each step's ``layers``; step 0 is left out (its summaries cover the whole prompt)."""
    table: dict[int, dict[int, Obj]] = {}
    for i, step in enumerate(steps):
        for value, where in step.items("layers"):
            layer = Obj(value, where)
            index = layer.get("layer_index", as_count, required=True)
            table.setdefault(index, {})[i] = layer
    if not table:
        return None
    indices = sorted(table)
    kept = [i for i in range(1, len(steps))]
    if len(steps) > 0:
        notes.append("step 0's layer summaries cover the whole prompt in CoreVital 0.x and were left out")
    series = LayerSeries(indices=indices, steps=kept)
    norm: list[list[float | None]] = []
    mean: list[list[float | None]] = []
    max_abs: list[list[float | None]] = []
    entropy: list[list[float | None]] = []
    entropy_min: list[list[float | None]] = []
    have_attention = False
    for index in indices:
        rows: list[list[float | None]] = [[], [], [], [], [], []]
        for i in range(len(steps)):  # step 0 too, so that every field is checked; it is dropped below
            cell = table[index].get(i)
            hidden = cell.obj("hidden_summary") if cell is not None else None
            attention = cell.obj("attention_summary") if cell is not None else None
            anomalies = cell.obj("anomalies") if cell is not None else None
            bad = anomalies is not None and bool(anomalies.get("has_nan", as_bool) or anomalies.get("has_inf", as_bool))
            rows[0].append(None if bad or hidden is None else hidden.get("l2_norm_mean", as_number))
            rows[1].append(None if bad or hidden is None else hidden.get("mean", as_number))
            rows[3].append(None if bad or hidden is None else hidden.get("max_abs", as_number))
            step_index = steps[i].get("step_index", as_count) or 0
            keys = (step_index - prompt_tokens + 1) if seq2seq else step_index
            if attention is not None:
                have_attention = True
                rows[4].append(_attention_entropy(attention, keys, "entropy_mean", "entropy_mean_normalized"))
                rows[5].append(_attention_entropy(attention, keys, "entropy_min", None))
            else:
                rows[4].append(None)
                rows[5].append(None)
        rows = [row[1:] for row in rows]
        for target, row in ((norm, 0), (mean, 1), (max_abs, 3), (entropy, 4), (entropy_min, 5)):
            target.append(rows[row])
    series.hidden_norm, series.hidden_mean, series.hidden_max_abs = norm, mean, max_abs
    if have_attention:
        series.attn_entropy, series.attn_entropy_min = entropy, entropy_min
    return series


def _prompt(source: Obj, prompt_tokens: int, notes: list[str]) -> PromptTelemetry | None:
    analysis = source.obj("prompt_analysis")
    if analysis is None:
        return None
    surprisal = as_numbers(analysis.items("prompt_surprisals"), as_bits)
    finite = [v for v in surprisal if v is not None]
    telemetry = PromptTelemetry(
        tokens=prompt_tokens, surprisal=surprisal, perplexity=2.0 ** (sum(finite) / len(finite)) if finite else None
    )
    layers = analysis.items("layers")
    if layers:
        basin, basin_min = [], []
        for value, where in layers:
            scores = [v for v in as_numbers(Obj(value, where).items("basin_scores")) if v is not None]
            basin.append(sum(scores) / len(scores) if scores else None)
            basin_min.append(min(scores) if scores else None)
        telemetry.layers = list(range(len(layers)))
        telemetry.basin, telemetry.basin_min = basin, basin_min
        notes.append("prompt basin scores average all prompt queries in CoreVital 0.x (ours: the last 32)")
    return telemetry


def _encoder(source: Obj) -> EncoderSummary | None:
    layers = source.items("encoder_layers")
    if not layers:
        return None
    summary = EncoderSummary()
    for value, where in layers:
        layer = Obj(value, where)
        summary.indices.append(layer.get("layer_index", as_count, required=True))
        hidden = layer.obj("hidden_summary")
        summary.hidden_norm.append(hidden.get("l2_norm_mean", as_number) if hidden else None)
        summary.attn_sparsity.append(None)
        summary.basin.append(None)
        summary.basin_min.append(None)
    return summary


def from_corevital(data: Any, *, content: bool = True, profile: Any = None) -> Report:
    """One original CoreVital report (parsed JSON) as a diagnosed :class:`Report` of this package.

    ``content=False`` drops the prompt and output text and token ids after diagnosing (the repetition check needs
    the ids). ``profile`` overrides the profile chosen from the model.
    """
    from ..signals.profiles import resolve_profile

    source = Obj(data, "")
    version = check_version(data.get("schema_version"))
    trace = source.get("trace_id", as_str, required=True)
    try:
        trace_hex = uuid.UUID(trace).hex
    except ValueError:
        raise MigrationError(f"trace_id: not a UUID: {shown(trace)}") from None
    created = _created_at(source.get("created_at_utc", as_str, required=True), "created_at_utc")
    model = source.required("model")
    architecture = model.get("architecture", as_str)
    model_type = model_type_of(architecture)
    encoder_layers = source.items("encoder_layers")
    seq2seq = bool(encoder_layers) or model_type in _SEQ2SEQ_TYPES
    notes: list[str] = []

    run_config = source.obj("run_config")
    generation = run_config.obj("generation") if run_config else None
    prompt = source.required("prompt")
    generated = source.required("generated")
    prompt_ids = as_ints(prompt.items("token_ids"))
    output_ids = as_ints(generated.items("token_ids"))
    prompt_tokens = prompt.get("num_tokens", as_count)
    prompt_tokens = prompt_tokens if prompt_tokens is not None else len(prompt_ids)
    output_tokens = generated.get("num_tokens", as_count)
    output_tokens = output_tokens if output_tokens is not None else len(output_ids)
    max_new = run_config.get("max_new_tokens", as_count) if run_config else None

    steps = [Obj(v, w) for v, w in source.items("timeline", required=True)]
    timeline = Timeline()
    have_logits = False
    for step in steps:
        logits = step.obj("logits_summary")
        if logits is None:
            for name in TIMELINE_SERIES:
                getattr(timeline, name).append(None)
            continue
        have_logits = True
        entropy = logits.get("entropy", as_bits)
        timeline.entropy.append(entropy)
        timeline.perplexity.append(None if entropy is None else 2.0**entropy)
        timeline.surprisal.append(logits.get("surprisal", as_bits))
        margin_key = "top_k_margin" if logits.has("top_k_margin") else "top1_top2_margin"
        timeline.margin.append(logits.get(margin_key, as_number))
        mass_key = "topk_mass" if logits.has("topk_mass") else "voter_agreement"
        timeline.topk_mass.append(logits.get(mass_key, as_number))
        top = logits.items("topk_probs") or logits.items("topk")
        timeline.top1_prob.append(Obj(*top[0]).get("prob", as_number) if top else None)
    if have_logits:
        notes.append("top-1 probability is the first entry of CoreVital 0.x's top-5 list, rounded to 3 decimals")
    if len(steps) < output_tokens:
        notes.append(f"the source holds {len(steps)} of {output_tokens} steps (an excerpt)")

    layers = _layers(steps, seq2seq, prompt_tokens, notes)
    unavailable: dict[str, str] = {}
    if layers is not None:
        unavailable["hidden_cos_prev"] = "CoreVital 0.x reports have no cosine to the previous step or update ratio"
        unavailable["attn_collapsed_fraction"] = (
            "CoreVital 0.x counted heads collapsed onto the attention sink; not comparable, left out"
        )
        notes.append(
            "CoreVital 0.x's hidden std is unbiased (ours: population) and its max attention weight is the "
            "max over heads (ours: the mean): both left out"
        )
    if len(steps) < output_tokens:
        unavailable["timeline"] = f"the source holds {len(steps)} of {output_tokens} steps"

    finish = "length" if max_new is not None and output_tokens >= max_new else "stop"
    sequence = SequenceReport(
        index=0,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        finish_reason=finish,
        timeline=timeline,
        aggregates=aggregates(timeline),
        layers=layers,
        prompt=_prompt(source, prompt_tokens, notes),
        encoder=_encoder(source),
    )
    name = model.get("hf_id", as_str, required=True)
    chosen = resolve_profile(model_type, profile, model_name=name)
    complete_ids = output_ids if len(output_ids) == output_tokens else None
    diagnose_sequence(sequence, chosen, tokens=complete_ids, signals=have_logits)
    if complete_ids is None:
        sequence.flags.unavailable["repetition_loop"] = (
            f"the source lists {len(output_ids)} of {output_tokens} generated token ids"
        )
    if content:
        sequence.token_ids = output_ids
        sequence.input_text = prompt.get("text", as_str)
        sequence.output_text = generated.get("output_text", as_str)

    flags = source.obj("health_flags")
    extensions = source.obj("extensions")
    risk = extensions.obj("risk") if extensions else None
    narrative = extensions.obj("narrative") if extensions else None
    signals = ["logits"] if have_logits else []
    signals.append("tokens")
    if layers is not None:
        signals += ["hidden", "hidden_full"] + (["attention"] if layers.attn_entropy is not None else [])
    if sequence.prompt is not None:
        signals.append("prompt")
    if sequence.encoder is not None:
        signals.append("encoder")
    do_sample = bool(generation.get("do_sample", as_bool)) if generation else False
    report = Report(
        schema_version=SCHEMA_VERSION,
        report_id=trace_hex,
        created_at=created,
        producer=Producer(PRODUCER, __version__),
        model=ModelInfo(
            name=name,
            model_type=model_type,
            architecture=architecture,
            num_layers=model.get("num_layers", as_count),
            hidden_size=model.get("hidden_size", as_count),
            num_attention_heads=model.get("num_attention_heads", as_count),
            dtype=model.get("dtype", as_str),
            device=model.get("device", as_str),
            is_encoder_decoder=seq2seq,
        ),
        request=RequestInfo(
            operation="text_completion",
            generation_mode="sample" if do_sample else "greedy_search",
            do_sample=do_sample,
            max_new_tokens=max_new,
            temperature=generation.get("temperature", as_number) if generation and do_sample else None,
            top_p=generation.get("top_p", as_number) if generation and do_sample else None,
            top_k=generation.get("top_k", as_count) if generation and do_sample else None,
            num_beams=(generation.get("num_beams", as_count) or 1) if generation else 1,
            seed=run_config.get("seed", as_int) if run_config else None,
        ),
        capture=CaptureInfo(
            mode="full" if layers is not None else "summary",
            distribution="raw_logits" if seq2seq else "processed_scores",
            top_k=10,
            signals=signals,
            unavailable=unavailable,
            layers=list(layers.indices) if layers is not None else [],
            attention_source="eager attention weights (CoreVital 0.x)" if layers is not None else None,
        ),
        usage=Usage(input_tokens=prompt_tokens, output_tokens=output_tokens),
        timings=Timings(duration_s=_duration_s(source.obj("summary"), created)),
        thresholds=thresholds_of(chosen),
        sequences=[sequence],
        trace_id=trace_hex,
        input_messages=(
            [{"role": "user", "parts": [{"type": "text", "content": sequence.input_text}]}]
            if content and sequence.input_text is not None
            else None
        ),
        origin=Origin(
            producer="CoreVital",
            schema_version=version,
            trace_id=trace,
            risk_score=risk.get("risk_score", as_number) if risk else None,
            health_flags={k: v for k, v in (flags.data.items() if flags else []) if not k.startswith("_")},
            narrative=narrative.get("summary", as_str) if narrative else None,
            notes=notes,
        ),
    )
    report.summary = finish_summary(report.sequences)
    return report
