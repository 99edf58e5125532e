"""Hand-made OTLP JSON lines files with exact values, written as the docs describe the format.

Written independently of the package's emitters (only the documented field
and attribute names are shared), so the viewer is tested against the format,
not against our own writer. ``DEEP`` is a schema 1.1 report with the
deep-capture and diagnosis fields that later issues add; ``PLAIN`` a 1.0
summary report; ``SPAN_ONLY`` a batch run known only from its span.
All numbers are exact in binary floating point, so tests compare with ``==``.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

DEEP_TRACE, DEEP_SPAN = "a1" * 16, "b1" * 8
PLAIN_TRACE, PLAIN_SPAN = "a2" * 16, "b2" * 8
TWIN_TRACE, TWIN_SPAN = "a3" * 16, "b3" * 8
ONLY_TRACE, ONLY_SPAN = "a4" * 16, "b4" * 8
V2_TRACE, V2_SPAN = "a5" * 16, "b5" * 8
GZ_TRACE, GZ_SPAN = "a6" * 16, "b6" * 8

#: 2026-01-02T03:04:08Z, the DEEP run's start; the others start a minute apart after it.
T0 = 1767323048
NS = 1_000_000_000

LAYERS = list(range(8))
STEPS = list(range(12))
ENTROPY = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5, 5.0, 4.25, 3.75, None, 2.0]
SURPRISAL = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.5, 4.0, 3.0, 2.5, None, 1.0]
MARGIN = [0.75, 0.625, 0.5, 0.5, 0.375, 0.25, 0.125, 0.0625, 0.125, 0.25, None, 0.5]
TOPK = [0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.75, 0.7, 0.72, 0.8, None, 0.93]
TOP1 = [0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.3, 0.25, 0.3, 0.4, None, 0.7]
STEP_END = [0.5 + 0.125 * k for k in STEPS]  # 0.5, 0.625, ... 1.875: TTFT 0.5 s, 0.125 s a token
BLAMED = [5, 6]
FINGERPRINT = [0.25, 0.5, 0.75, 1.0]
TWIN_FINGERPRINT = [0.25, 0.5, 0.75, 2.0]  # distance 1.0 from FINGERPRINT
NARRATIVE = "Entropy rose from step 6 while attention in layers 5 and 6 collapsed onto one token."


def hidden_norm(layer: int, step: int) -> float:
    return 10.0 * (layer + 1) + step


def attn_entropy(layer: int, step: int) -> float:
    return 0.125 if layer in BLAMED and step >= 6 else (8 - layer) / 8


def collapsed(layer: int, step: int) -> float:
    return 0.5 if layer in BLAMED and step >= 6 else 0.0


PROMPT_SURPRISAL = [4.0, 2.5, 1.25, 0.5, 3.0]
BASIN = [0.875, 0.75, 0.75, 0.625, 0.5, 0.25, 0.25, 0.5]


# --- OTLP/JSON encoding -----------------------------------------------------------------------------------------


def value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": "NaN" if math.isnan(v) else v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}} if v else {"arrayValue": {}}
    raise TypeError(type(v))


def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": value(v)} for k, v in d.items()]


def span(
    trace_id: str,
    span_id: str,
    start_s: float,
    duration_s: float,
    attributes: dict[str, Any],
    name: str = "chat hand-made",
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(int(start_s * NS)),
        "endTimeUnixNano": str(int((start_s + duration_s) * NS)),
        "attributes": attrs(attributes),
        "status": {},
    }


def traces_line(spans: list[dict[str, Any]], service: str = "handmade-svc") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attrs({"service.name": service})},
                "scopeSpans": [{"scope": {"name": "opentelemetry_instrumentation_corevital"}, "spans": spans}],
            }
        ]
    }


def report_record(report: dict[str, Any] | str, trace_id: str, span_id: str) -> dict[str, Any]:
    body = report if isinstance(report, str) else json.dumps(report)
    return {
        "eventName": "corevital.generation.report",
        "traceId": trace_id,
        "spanId": span_id,
        "severityNumber": 9,
        "body": {"stringValue": body},
    }


def logs_line(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": attrs({"service.name": "handmade-svc"})},
                "scopeLogs": [{"scope": {"name": "opentelemetry_instrumentation_corevital"}, "logRecords": records}],
            }
        ]
    }


def metrics_line() -> dict[str, Any]:
    return {"resourceMetrics": [{"resource": {}, "scopeMetrics": [{"metrics": [{"name": "corevital.risk.score"}]}]}]}


# --- reports ----------------------------------------------------------------------------------------------------


def _base_report(trace_id: str, span_id: str, version: str, name: str, created: str, duration: float) -> dict[str, Any]:
    return {
        "schema_version": version,
        "report_id": (trace_id[:2] + "c") * 10 + "ab",
        "created_at": created,
        "producer": {"name": "hand", "version": "0"},
        "model": {
            "name": name,
            "model_type": "llama",
            "architecture": "LlamaForCausalLM",
            "num_layers": 8,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 1000,
            "dtype": "float32",
            "device": "cpu",
            "is_encoder_decoder": False,
        },
        "request": {
            "operation": "chat",
            "generation_mode": "sample",
            "do_sample": True,
            "max_new_tokens": 12,
            "temperature": 0.75,
            "top_p": None,
            "top_k": None,
            "num_beams": 1,
            "num_return_sequences": 1,
            "repetition_penalty": None,
            "min_new_tokens": None,
            "stop_strings": [],
            "seed": 7,
            "stream": False,
        },
        "capture": {
            "mode": "summary",
            "distribution": "raw_logits",
            "top_k": 10,
            "signals": ["logits"],
            "unavailable": {},
            "error": None,
        },
        "usage": {"input_tokens": 6, "output_tokens": 12},
        "timings": {
            "duration_s": duration,
            "time_to_first_token_s": 0.5,
            "time_per_output_token_s": 0.125,
            "step_end_s": list(STEP_END),
        },
        "thresholds": {
            "high_entropy_bits": 4.0,
            "repetition_min_cycles": 3,
            "repetition_min_tokens": 12,
            "repetition_max_period": 32,
        },
        "trace_id": trace_id,
        "span_id": span_id,
        "input_messages": None,
    }


def _sequence(risk: float, level: str) -> dict[str, Any]:
    return {
        "index": 0,
        "prompt_tokens": 6,
        "output_tokens": 12,
        "finish_reason": "length",
        "timeline": {
            "entropy": ENTROPY,
            "perplexity": [None if e is None else 2**e for e in ENTROPY],
            "surprisal": SURPRISAL,
            "top1_prob": TOP1,
            "margin": MARGIN,
            "topk_mass": TOPK,
        },
        "aggregates": {"entropy_mean": 3.0},
        "flags": {
            "nan_or_inf": False,
            "nan_or_inf_steps": 0,
            "nan_or_inf_first_step": None,
            "high_entropy": True,
            "high_entropy_steps": 3,
            "high_entropy_longest_run": 3,
            "high_entropy_first_step": 6,
            "repetition_loop": False,
            "repetition_onset_step": None,
            "repetition_period": None,
            "repetition_share": 0.0,
        },
        "risk": {
            "score": risk,
            "level": level,
            "forced_by": None,
            "factors": [
                {
                    "name": "high_entropy_fraction",
                    "value": 0.25,
                    "score": 0.5,
                    "weight": 0.35,
                    "contribution": 0.175,
                    "description": "share of steps above the high-entropy threshold",
                },
                {
                    "name": "entropy_mean",
                    "value": 3.0,
                    "score": 0.75,
                    "weight": 0.45,
                    "contribution": 0.3375,
                    "description": "mean next-token entropy (bits)",
                },
            ],
        },
        "token_ids": [101 + k for k in STEPS],
        "input_text": "user: tell me about basins",
        "output_text": "hand made output of twelve tokens",
    }


def _summary(risk: float, level: str) -> dict[str, Any]:
    return {
        "risk_score": risk,
        "risk_level": level,
        "flags": ["high_entropy"],
        "aggregates": {
            "entropy_mean": 3.0,
            "entropy_max": 5.0,
            "surprisal_mean": 1.875,
            "margin_mean": 0.375,
            "topk_mass_mean": 0.875,
        },
        "riskiest_sequence": 0,
    }


def deep_report(
    trace_id: str = DEEP_TRACE,
    span_id: str = DEEP_SPAN,
    fingerprint: list[float] = FINGERPRINT,
    name: str = "hand-made/deep-1.1",
) -> dict[str, Any]:
    """Schema 1.1 with everything the deep-capture and diagnosis issues add."""
    r = _base_report(trace_id, span_id, "1.1.0", name, "2026-01-02T03:04:10Z", 2.0)
    r["capture"].update(mode="full", layers=LAYERS, step_stride=1, signals=["logits", "layers", "prompt"])
    seq = _sequence(0.5, "medium")
    seq["layers"] = {
        "indices": LAYERS,
        "steps": STEPS,
        "hidden_norm": [[hidden_norm(layer, s) for s in STEPS] for layer in LAYERS],
        "attn_entropy": [[attn_entropy(layer, s) for s in STEPS] for layer in LAYERS],
        "attn_collapsed_fraction": [[collapsed(layer, s) for s in STEPS] for layer in LAYERS],
        "update_ratio": [[None if s == 3 else 0.25 for s in STEPS] for layer in LAYERS],
    }
    seq["prompt"] = {
        "surprisal": PROMPT_SURPRISAL,
        "perplexity": 5.5,
        "hidden_norm": [float(10 * (layer + 1)) for layer in LAYERS],
        "attn_sparsity": [0.5 for _ in LAYERS],
        "basin": BASIN,
        "basin_min": [b / 2 for b in BASIN],
    }
    r["sequences"] = [seq]
    r["summary"] = {
        **_summary(0.5, "medium"),
        "narrative": NARRATIVE,
        "blamed_layers": [{"layer": 5, "reason": "attention collapse"}, 6],
        "fingerprint": fingerprint,
    }
    r["perf"] = {"method": "strict", "runs": 3, "plain_s": 2.0, "instrumented_s": 2.5, "ratio": 1.25}
    return r


def plain_report() -> dict[str, Any]:
    """Schema 1.0, summary capture: no layers, no prompt analysis, no fingerprint."""
    r = _base_report(PLAIN_TRACE, PLAIN_SPAN, "1.0.0", "hand-made/plain-1.0", "2026-01-02T03:05:10Z", 2.0)
    r["sequences"] = [_sequence(0.25, "low")]
    r["summary"] = _summary(0.25, "low")
    return r


def span_attributes(report: dict[str, Any]) -> dict[str, Any]:
    """The span attributes of a report, as docs/telemetry.md's tables describe them (one sequence, stride 1)."""
    seq = report["sequences"][0]
    nan = float("nan")
    out: dict[str, Any] = {
        "corevital.schema_version": report["schema_version"],
        "corevital.capture.mode": report["capture"]["mode"],
        "corevital.generation.mode": "sample",
        "corevital.timing.time_to_first_token": 0.5,
        "corevital.timing.time_per_output_token": 0.125,
        "corevital.risk.score": report["summary"]["risk_score"],
        "corevital.risk.level": report["summary"]["risk_level"],
        "corevital.flags": report["summary"]["flags"],
        "corevital.timeline.stride": 1,
        "corevital.timeline.lengths": [12],
    }
    for name in ("entropy", "surprisal", "margin", "top1_prob", "topk_mass"):
        out["corevital.step." + name] = [nan if v is None else float(v) for v in seq["timeline"][name]]
    out.update(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": report["model"]["name"],
            "gen_ai.usage.input_tokens": 6,
            "gen_ai.usage.output_tokens": 12,
        }
    )
    return out


# --- files ------------------------------------------------------------------------------------------------------


def _write(path: Path, documents: list[Any]) -> None:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in documents), encoding="utf-8")


def write_good(folder: Path) -> Path:
    """DEEP, PLAIN and TWIN (a deep run with another fingerprint) with spans and reports; SPAN_ONLY and a
    rotated gzip file holding one more span."""
    folder.mkdir(parents=True, exist_ok=True)
    deep, plain = deep_report(), plain_report()
    twin = deep_report(TWIN_TRACE, TWIN_SPAN, TWIN_FINGERPRINT, name="hand-made/twin-1.1")
    twin["created_at"] = "2026-01-02T03:06:10Z"
    deep_attrs = {**span_attributes(deep), "corevital.perf.ratio": 1.25}  # repeats the report's perf.ratio
    only = {
        "corevital.schema_version": "1.0.0",
        "corevital.capture.mode": "summary",
        "corevital.risk.score": 0.75,
        "corevital.risk.level": "high",
        "corevital.flags": ["repetition_loop"],
        "corevital.flag.repetition_loop": True,
        "corevital.repetition.onset_step": 2,
        "corevital.risk.factors": ["repetition_share", "entropy_mean"],
        "corevital.risk.factor_contributions": [0.625, 0.125],
        "corevital.timeline.stride": 2,
        "corevital.timeline.lengths": [3, 2],
        "corevital.step.entropy": [1.0, float("nan"), 3.0, 0.5, 0.25],
        "corevital.step.margin": [0.5, 0.25, 0.125, 0.75, 0.875],
        "corevital.step.duration": [0.25, 0.125, 0.125],
        "gen_ai.request.model": "hand-made/span-only",
        "gen_ai.operation.name": "text_completion",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.response.finish_reasons": ["length", "stop"],
        "corevital.perf.ratio": 1.5,
        "corevital.layers.indices": [0, 1],
        "corevital.layers.hidden_norm": [10.0, 20.0],
        "corevital.prompt.tokens": 4,
        "corevital.prompt.perplexity": 2.5,
        "corevital.prompt.surprisal": [2.0, 1.0],
        "corevital.prompt.basin": [0.5, 0.25],
    }
    _write(
        folder / "traces.jsonl",
        [
            traces_line([span(DEEP_TRACE, DEEP_SPAN, T0, 2.0, deep_attrs, "chat hand-made/deep-1.1")]),
            traces_line(
                [
                    span(PLAIN_TRACE, PLAIN_SPAN, T0 + 60, 2.0, span_attributes(plain), "chat hand-made/plain-1.0"),
                    span(ONLY_TRACE, ONLY_SPAN, T0 + 180, 4.0, only, "text_completion hand-made/span-only"),
                ]
            ),
            traces_line([span(TWIN_TRACE, TWIN_SPAN, T0 + 120, 2.0, span_attributes(twin), "chat hand-made/twin-1.1")]),
        ],
    )
    _write(
        folder / "logs.jsonl",
        [
            logs_line([report_record(deep, DEEP_TRACE, DEEP_SPAN), report_record(plain, PLAIN_TRACE, PLAIN_SPAN)]),
            logs_line([report_record(twin, TWIN_TRACE, TWIN_SPAN)]),
        ],
    )
    _write(folder / "metrics.jsonl", [metrics_line()])
    rotated = json.dumps(
        traces_line(
            [
                span(
                    GZ_TRACE,
                    GZ_SPAN,
                    T0 + 240,
                    1.0,
                    {
                        "corevital.schema_version": "1.0.0",
                        "corevital.capture.mode": "off",
                        "gen_ai.request.model": "hand-made/rotated-gzip",
                        "gen_ai.usage.output_tokens": 4,
                        "corevital.timing.time_to_first_token": 0.25,
                    },
                )
            ],
            service="rotated-svc",
        )
    )
    with gzip.open(folder / "traces-2026-01-01T00-00-00.000.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(rotated + "\n")
    return folder


def write_bad(folder: Path) -> Path:
    """One problem of each kind, next to a readable span, so the page shows both."""
    folder.mkdir(parents=True, exist_ok=True)
    v2 = {**plain_report(), "schema_version": "2.0.0", "trace_id": V2_TRACE, "span_id": V2_SPAN}
    v2_attrs = {
        "corevital.schema_version": "2.0.0",
        "corevital.risk.score": 0.5,
        "gen_ai.request.model": "hand-made/from-the-future",
        "gen_ai.usage.output_tokens": 5,
    }
    _write(
        folder / "bad.jsonl",
        [
            '{"resourceSpans": [',  # line 1: truncated JSON
            {"hello": "world"},  # line 2: JSON, not OTLP
            logs_line([report_record("this is not json", "c" * 32, "d" * 16)]),  # line 3: report body not JSON
            logs_line([report_record(v2, V2_TRACE, V2_SPAN)]),  # line 4: report schema 2
            traces_line([span(V2_TRACE, V2_SPAN, T0 + 300, 1.0, v2_attrs)]),  # line 5: span schema 2
        ],
    )
    (folder / "empty.jsonl").write_text("", encoding="utf-8")
    return folder


def bad_problems(folder: Path) -> list[str]:
    """The problems ``write_bad(folder)`` causes, in the order the viewer meets them."""
    from opentelemetry_instrumentation_corevital.viewer import messages

    bad = str(folder / "bad.jsonl")
    return [
        messages.TRUNCATED.format(file=bad, line=1, size=len('{"resourceSpans": ['), run=""),
        messages.NOT_OTLP.format(file=bad, line=2),
        messages.BAD_REPORT.format(file=bad, line=3, detail="not JSON: Expecting value: line 1 column 1 (char 0)"),
        messages.UNKNOWN_REPORT_SCHEMA.format(file=bad, line=4, version="2.0.0"),
        messages.UNKNOWN_SPAN_SCHEMA.format(file=bad, line=5, span_id=V2_SPAN, version="2.0.0"),
        messages.EMPTY_FILE.format(file=str(folder / "empty.jsonl")),
    ]
