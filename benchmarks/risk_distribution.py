"""Risk-score distribution over a few hundred varied SmolLM2 generations, and calibration of the risk factors.

Two disjoint prompt sets:

* ``tune``   (72 generations): the set the risk factors' midpoints and scales are calibrated on
  (``--calibrate`` prints the factor table to put in a profile file);
* ``report`` (216 generations): the set whose risk distribution ``BENCHMARKS.md`` reports. It shares no
  prompt, topic or task template with ``tune``.

Both mix ordinary requests (facts, explanations, how-to, lists, code, poems, arithmetic, translation) with
prompts built to drive a small model into loops (repeat a word, continue a pattern, write a sentence many
times, raw-text completions of repeated phrases), under greedy decoding and sampling at temperatures 0.7, 1.0
and 1.5. Every generation runs once with ``capture="full"`` and content capture; its report is saved, so the
diagnosis can be recomputed from the saved reports without generating again (``--reports DIR`` caches them).
Each report is scored twice: with every signal (full capture) and trimmed to what ``capture="summary"`` keeps.

    python benchmarks/risk_distribution.py --set tune --reports /tmp/cv-bench --calibrate
    python benchmarks/risk_distribution.py --set report --reports /tmp/cv-bench --json benchmarks/results/risk.json

On this project's 2-core CPU machine a generation of 40 tokens takes 4–15 s, so the report set takes 15–50 min.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MAX_NEW_TOKENS = 40

# --- prompt sets -------------------------------------------------------------------------------------------
# Disjoint topics and templates: nothing in TUNE appears in REPORT.

REPORT_TOPICS = [
    "volcanoes",
    "the French Revolution",
    "photosynthesis",
    "black holes",
    "the printing press",
    "honeybees",
    "the Roman Empire",
    "climate change",
    "the human heart",
    "jazz music",
    "electric cars",
    "the Great Wall of China",
    "vaccines",
    "the Moon landing",
    "coral reefs",
    "chess",
    "the internet",
    "earthquakes",
    "Shakespeare",
    "renewable energy",
    "the water cycle",
    "ancient Egypt",
    "penguins",
    "machine learning",
    "the Olympic Games",
    "coffee",
    "the Amazon rainforest",
    "gravity",
    "the piano",
    "antibiotics",
]
REPORT_TEMPLATES = [
    ("chat", "Explain {t} in two sentences."),
    ("chat", "Give me three interesting facts about {t}."),
    ("chat", "Write a short poem about {t}."),
    ("chat", "Why is {t} important? Answer briefly."),
    ("chat", "Describe {t} to a ten-year-old."),
    ("raw", "Here is a short introduction to {t}:"),
]
REPORT_EXTRA = [
    ("chat", "What is 12 plus 29?"),
    ("chat", "What is the capital of Japan?"),
    ("chat", "Write a Python function that reverses a string."),
    ("chat", "Translate 'good morning' into Spanish."),
    ("chat", "Name the planets of the solar system."),
    ("chat", "How many legs does a spider have?"),
    ("chat", "Write a haiku about autumn."),
    ("chat", "What year did World War II end?"),
    ("chat", "Give me a recipe for pancakes."),
    ("chat", "Summarise the plot of Romeo and Juliet in one sentence."),
    ("chat", "List the days of the week."),
    ("chat", "Who wrote Pride and Prejudice?"),
]
REPORT_LOOPS = [
    ("chat", "Repeat the word banana forever."),
    ("chat", "Say 'ok' again and again without stopping."),
    ("chat", "Continue the pattern: X Y X Y X Y X Y"),
    ("chat", "Continue the sequence: red blue red blue red blue"),
    ("chat", "Write the sentence 'The dog runs.' twenty times."),
    ("chat", "Write 'hello world' thirty times."),
    ("chat", "List forty animals, one per line."),
    ("chat", "List thirty colours separated by commas."),
    ("raw", "the cat sat on the mat and the cat sat on the mat and the cat sat on the mat and"),
    ("raw", "one more time, one more time, one more time, one more time,"),
    ("raw", "la la la la la la la la la la"),
    ("raw", "I think that I think that I think that"),
    ("chat", "Count the word 'yes': yes yes yes yes yes yes yes yes. Now continue writing yes."),
    ("chat", "Repeat after me ten times: I will not repeat myself."),
    ("raw", "Buffalo buffalo Buffalo buffalo buffalo buffalo Buffalo buffalo"),
    ("chat", "Write the number 7 fifty times."),
    ("raw", "ha ha ha ha ha ha ha ha"),
    ("chat", "Echo this forever: ping"),
]

TUNE_TOPICS = [
    "glaciers",
    "the Industrial Revolution",
    "DNA",
    "comets",
    "the telescope",
    "ants",
    "ancient Greece",
    "ocean tides",
    "the human brain",
    "classical music",
    "bicycles",
    "the pyramids of Giza",
    "rainbows",
    "solar panels",
    "dinosaurs",
    "tea",
    "mountains",
    "magnets",
]
TUNE_TEMPLATES = [
    ("chat", "Tell me briefly what {t} are or is."),
    ("chat", "Write two sentences about the history of {t}."),
    ("chat", "Write a limerick about {t}."),
    ("raw", "The most surprising thing about {t} is"),
]
TUNE_LOOPS = [
    ("chat", "Repeat the word apple forever."),
    ("chat", "Continue the pattern: A B A B A B A B"),
    ("chat", "Write the sentence 'I like cats.' twenty times."),
    ("chat", "List twenty fruits, one per line."),
    ("raw", "I went to the store and I went to the store and I went to the store and"),
    ("raw", "go go go go go go go go"),
]

#: (name, generate() sampling keywords): greedy and three sampling temperatures.
DECODING = [
    ("greedy", {"do_sample": False}),
    ("t0.7", {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0}),
    ("t1.0", {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}),
    ("t1.5", {"do_sample": True, "temperature": 1.5, "top_p": 1.0, "top_k": 0}),
]


def prompt_set(name: str) -> list[dict[str, Any]]:
    """The generations of a set: (kind, prompt, decoding, seed), deterministic."""
    if name == "report":
        base = [(k, tpl.format(t=t)) for t in REPORT_TOPICS for k, tpl in REPORT_TEMPLATES]  # 180
        base = base[::2] + REPORT_EXTRA  # 90 + 12 ordinary prompts
        loops = REPORT_LOOPS  # 18
    elif name == "tune":
        base = [(k, tpl.format(t=t)) for t in TUNE_TOPICS for k, tpl in TUNE_TEMPLATES][::2]  # 36
        loops = TUNE_LOOPS  # 6
    else:
        raise ValueError(name)
    runs = []
    # Ordinary prompts: greedy and one sampling temperature each (cycling through the three).
    for i, (kind, text) in enumerate(base):
        runs.append((kind, text, DECODING[0]))
        runs.append((kind, text, DECODING[1 + i % 3]))
    # Loop prompts: greedy and the two milder temperatures (at 1.5 sampling rarely holds a loop).
    for kind, text in loops:
        runs.extend((kind, text, d) for d in DECODING[:3])
    loop_prompts = {text for _, text in loops}
    return [
        {"id": i, "kind": k, "prompt": p, "decoding": d[0], "kwargs": d[1], "seed": 1000 + i, "loop": p in loop_prompts}
        for i, (k, p, d) in enumerate(runs)
    ]


# --- generation --------------------------------------------------------------------------------------------


def generate_reports(
    runs: list[dict[str, Any]], folder: Path, max_new_tokens: int, model_path: str | None = None
) -> list[dict[str, Any]]:
    """Report dicts of every run, generating those not yet saved in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [r for r in runs if not (folder / f"{r['id']:04d}.json").exists()]
    if missing:
        import torch

        from opentelemetry_instrumentation_corevital.cli import _models
        from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

        tokenizer, model = _models.load(
            _models.resolve_model(model_path, None), "cpu", _models.resolve_dtype("auto", "cpu")
        )
        started = time.perf_counter()
        for done, run in enumerate(missing, 1):
            torch.manual_seed(run["seed"])
            with TelemetryCapture(
                capture="full", capture_content=True, step_events=False, step_logs=False, layer_metrics=False
            ) as tc:
                if run["kind"] == "chat":  # tokenized while instrumented: content capture can decode tokens
                    inputs = tokenizer.apply_chat_template(
                        [{"role": "user", "content": run["prompt"]}],
                        add_generation_prompt=True,
                        return_tensors="pt",
                        return_dict=True,
                    )
                else:
                    inputs = tokenizer(run["prompt"], return_tensors="pt")
                model.generate(
                    **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **run["kwargs"]
                )
            (report,) = tc.reports
            path = folder / f"{run['id']:04d}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(report.to_json(), encoding="utf-8")
            tmp.replace(path)
            elapsed = time.perf_counter() - started
            print(
                f"[{done}/{len(missing)}] {elapsed:.0f}s  #{run['id']} {run['decoding']:6} "
                f"{report.sequences[0].output_tokens:3d} tokens  {run['prompt'][:50]!r}",
                file=sys.stderr,
                flush=True,
            )
    return [json.loads((folder / f"{r['id']:04d}.json").read_text(encoding="utf-8")) for r in runs]


# --- scoring and calibration ------------------------------------------------------------------------------

#: Factors calibrated from the tuning set's distribution; the others are anchored on their flag thresholds.
DISTRIBUTIONAL = ("entropy_mean", "high_entropy_fraction", "margin_mean", "surprisal_mean")


def score(reports: list[dict[str, Any]], profile: Any = None) -> list[dict[str, Any]]:
    """Diagnose each saved report twice (all signals; trimmed to summary capture) and keep what the tables need."""
    import copy

    from opentelemetry_instrumentation_corevital.report import Report, diagnose_report, trim_to_summary

    rows = []
    for data in reports:
        full = diagnose_report(Report.from_dict(copy.deepcopy(data)), profile)
        summary = diagnose_report(trim_to_summary(Report.from_dict(copy.deepcopy(data))), profile)
        seq, seq_summary = full.sequences[0], summary.sequences[0]
        rows.append(
            {
                "risk": seq.risk.score if seq.risk else None,
                "risk_summary": seq_summary.risk.score if seq_summary.risk else None,
                "level": seq.risk.level if seq.risk else None,
                "forced": bool(seq.risk and seq.risk.forced_by),
                "flags": seq.flags.fired(),
                "flags_summary": seq_summary.flags.fired(),
                "evidence": list(seq.flags.repetition_evidence),
                "factors": {f.name: f.value for f in (seq.risk.factors if seq.risk else [])},
                "contributions": {f.name: f.contribution for f in (seq.risk.factors if seq.risk else [])},
                "compound": [c.name for c in seq.diagnosis.compound],
                "warnings": [w.name for w in seq.diagnosis.warnings],
                "blamed": [b.layer for b in seq.diagnosis.blame],
                "fingerprint": seq.diagnosis.fingerprint.vector if seq.diagnosis.fingerprint else None,
                "tokens": seq.output_tokens,
                "entropy_mean": seq.aggregates.entropy_mean,
                "margin_mean": seq.aggregates.margin_mean,
            }
        )
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (q / 100) * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def calibrate(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Midpoint = p90 and scale = (p90 - p50) / ln 9 of each distributional factor over the reference runs.

    Reference runs: ordinary prompts (not built to loop) decoded as production does (greedy or temperature 0.7),
    without a repetition loop. The logistic then passes through (p50, 0.1) and (p90, 0.5): a typical answer
    scores 0.1 on each such factor and one in ten scores above 0.5 (mirrored for the margin, where low is bad).
    The CUSUM reference levels are the medians of the reference runs' mean entropy and margin.
    """
    ordinary = [
        row
        for run, row in zip(runs, rows)
        if not run["loop"] and run["decoding"] in ("greedy", "t0.7") and "repetition_loop" not in row["flags"]
    ]
    result: dict[str, Any] = {"factors": {}, "n": len(ordinary)}
    for name in DISTRIBUTIONAL:
        values = [r["factors"][name] for r in ordinary if name in r["factors"]]
        if name == "margin_mean":  # low is bad: mirror the percentiles
            p50, p90 = percentile(values, 50), percentile(values, 10)
        else:
            p50, p90 = percentile(values, 50), percentile(values, 90)
        result["factors"][name] = {
            "midpoint": round(p90, 3),
            "scale": round(abs(p90 - p50) / math.log(9), 3),
            "p50": p50,
            "p90": p90,
        }
    result["entropy_reference_bits"] = round(percentile([r["entropy_mean"] for r in ordinary], 50), 2)
    result["margin_reference"] = round(percentile([r["margin_mean"] for r in ordinary], 50), 2)
    return result


def _group(run: dict[str, Any], row: dict[str, Any]) -> str:
    if run["loop"]:
        return "loop prompts"
    return f"ordinary, {run['decoding']}"


def summarize(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The distribution numbers BENCHMARKS.md reports, for the full-capture and the summary-capture scores."""
    from collections import Counter

    out: dict[str, Any] = {"n": len(rows)}
    for key in ("risk", "risk_summary"):
        scores = [r[key] for r in rows]
        clean = [(r[key], r["forced"]) for r in rows]
        out[key] = {
            "exactly_0": sum(s == 0.0 for s in scores),
            "exactly_1_without_nan": sum(s == 1.0 and not f for s, f in clean),
            "at_most_0.01": sum(s <= 0.01 for s in scores),
            "at_least_0.99": sum(s >= 0.99 for s in scores),
            "forced_by_nan": sum(f for _, f in clean),
            "min": min(scores),
            "max": max(scores),
            "percentiles": {q: percentile(scores, q) for q in (5, 10, 25, 50, 75, 90, 95)},
            "histogram": [sum(i / 10 <= s < (i + 1) / 10 or (i == 9 and s == 1.0) for s in scores) for i in range(10)],
            "levels": dict(Counter(("low" if s < 0.3 else "medium" if s < 0.7 else "high") for s in scores)),
        }
    groups: dict[str, list[dict[str, Any]]] = {}
    for run, row in zip(runs, rows):
        groups.setdefault(_group(run, row), []).append(row)
    out["groups"] = {
        name: {
            "n": len(members),
            "risk_p10_p50_p90": [percentile([r["risk"] for r in members], q) for q in (10, 50, 90)],
            "flags": dict(Counter(f for r in members for f in r["flags"])),
            "compound": dict(Counter(c for r in members for c in r["compound"])),
            "warnings": dict(Counter(w for r in members for w in r["warnings"])),
            "blamed_runs": sum(bool(r["blamed"]) for r in members),
        }
        for name, members in sorted(groups.items())
    }
    vectors = [r["fingerprint"] for r in rows if r["fingerprint"]]
    out["fingerprint_constant_elements"] = [
        i for i in range(len(vectors[0])) if len({v[i] for v in vectors if v[i] is not None}) <= 1
    ]
    out["repetition_evidence"] = dict(Counter("+".join(r["evidence"]) for r in rows if r["evidence"]))
    return out


def markdown(summary: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    """The tables for BENCHMARKS.md."""
    lines = []
    for key, label in (("risk", "full capture"), ("risk_summary", "summary capture (the same generations, trimmed)")):
        d = summary[key]
        p = d["percentiles"]
        lines += [
            f"**{label}** - n = {summary['n']}: exactly 0: {d['exactly_0']}, exactly 1 without NaN/Inf: "
            f"{d['exactly_1_without_nan']}, <= 0.01: {d['at_most_0.01']}, >= 0.99: {d['at_least_0.99']}; "
            f"min {d['min']:.3f}, max {d['max']:.3f}; p5 {p[5]:.3f}, p10 {p[10]:.3f}, p25 {p[25]:.3f}, "
            f"p50 {p[50]:.3f}, p75 {p[75]:.3f}, p90 {p[90]:.3f}, p95 {p[95]:.3f}; levels {d['levels']}",
            "",
            "| risk | " + " | ".join(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)) + " |",
            "|---|" + "---|" * 10,
            "| runs | " + " | ".join(str(c) for c in d["histogram"]) + " |",
            "",
        ]
    lines += [
        "| group | n | risk p10 / p50 / p90 | flags | compound signals | early warnings | runs with blame |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, g in summary["groups"].items():

        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"

        lines.append(
            f"| {name} | {g['n']} | {' / '.join(f'{v:.2f}' for v in g['risk_p10_p50_p90'])} | "
            f"{fmt(g['flags'])} | {fmt(g['compound'])} | {fmt(g['warnings'])} | {g['blamed_runs']} |"
        )
    lines += [
        "",
        f"repetition evidence: {summary['repetition_evidence']}; fingerprint elements constant over the "
        f"set: {summary['fingerprint_constant_elements'] or 'none'}",
    ]
    return "\n".join(lines)


def typical_ranges(runs: list[dict[str, Any]], reports: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """p10 / p50 / p90 of each signal's per-run mean over the reference runs (for docs/diagnosis.md)."""

    def mean(values: list[Any]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    per_signal: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            per_signal.setdefault(name, []).append(value)

    for run, report, row in zip(runs, reports, rows):
        if run["loop"] or run["decoding"] not in ("greedy", "t0.7") or "repetition_loop" in row["flags"]:
            continue
        seq = report["sequences"][0]
        t, layers = seq["timeline"], seq["layers"]
        for name in ("entropy", "surprisal", "margin", "top1_prob", "topk_mass"):
            add(f"{name} (run mean)", mean(t[name]))
        add("entropy (per step)", None)
        per_signal.setdefault("entropy (per step)", []).extend(v for v in t["entropy"] if v is not None)
        add("ngram_repeat_rate", row["factors"].get("ngram_repeat_rate"))
        add("mid_layer_norm_ratio", row["factors"].get("mid_layer_norm_ratio"))
        count = len(layers["indices"])
        for label, index in (("first", 0), ("middle", count // 2), ("last", count - 1)):
            add(f"hidden_norm, {label} layer", mean(layers["hidden_norm"][index]))
        add("hidden_cos_prev, last layer", mean(layers["hidden_cos_prev"][-1]))
        add("update_ratio, middle layer", mean(layers["update_ratio"][count // 2]))
        for name in ("attn_entropy", "attn_sink_mass", "attn_prompt_mass", "attn_collapsed_fraction"):
            add(f"{name} (mean over layers)", mean([mean(r) for r in layers[name]]))
        if seq.get("prompt"):
            add("prompt perplexity", seq["prompt"]["perplexity"])
    lines = ["| signal | p10 | p50 | p90 |", "|---|---|---|---|"]
    for name, values in per_signal.items():
        lines.append(
            f"| {name} | {percentile(values, 10):.3g} | {percentile(values, 50):.3g} | {percentile(values, 90):.3g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("tune", "report"), required=True)
    parser.add_argument("--reports", type=Path, required=True, help="folder caching one report JSON per generation")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help="print the factor calibration from this set")
    parser.add_argument("--profile", default=None, help="profile to diagnose with (default: from the model)")
    parser.add_argument("--model", default=None, help="model folder, .gguf file or hub id (default: embedded SmolLM2)")
    parser.add_argument("--json", type=Path, default=None, help="write per-run scores and the summary here")
    parser.add_argument("--ranges", action="store_true", help="print typical signal ranges of the reference runs")
    args = parser.parse_args(argv)
    runs = prompt_set(args.set)
    print(f"{len(runs)} generations in set {args.set!r} (python {platform.python_version()})", file=sys.stderr)
    reports = generate_reports(runs, args.reports / args.set, args.max_new_tokens, args.model)
    if args.generate_only:
        return 0
    rows = score(reports, args.profile)
    if args.calibrate:
        print(json.dumps(calibrate(runs, rows), indent=2))
        return 0
    if args.ranges:
        print(typical_ranges(runs, reports, rows))
        return 0
    summary = summarize(runs, rows)
    print(markdown(summary, reports))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "summary": summary,
                    "runs": [
                        {
                            **{k: run[k] for k in ("id", "kind", "prompt", "decoding", "seed", "loop")},
                            **{
                                k: row[k]
                                for k in (
                                    "risk",
                                    "risk_summary",
                                    "level",
                                    "forced",
                                    "flags",
                                    "evidence",
                                    "compound",
                                    "warnings",
                                    "blamed",
                                    "tokens",
                                    "contributions",
                                )
                            },
                        }
                        for run, row in zip(runs, rows)
                    ],
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
