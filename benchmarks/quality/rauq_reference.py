"""RAUQ as its paper computes it, against the streaming form CoreVital ships, on the same answers.

The paper's reference code (mbzuai-nlp/rauq-hallucination-detection, ``rauq.py``) reads eager attention
weights over the whole answer: per layer it picks the head with the largest *mean* previous-token weight over the
answer, and token j's weight is its own query's (row j, column j - 1). CoreVital's capture cannot wait for the
whole answer, so it takes the largest previous-token weight over the heads at each step, and step j's weight is
the query of token j - 1 (``signals.uncertainty``). Both, and the plain baselines and LLM-Check's attention
score (mean log self-attention, summed over heads), are scored here on the model's own greedy answers to the
HaluEval QA questions of ``halueval.py``, graded as in ``answers.py``. Eager attention and float32 on the CPU;
label 1 = wrong; no score uses a label.

    python benchmarks/quality/rauq_reference.py --json benchmarks/results/quality-rauq-reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from answers import is_wrong
from halueval import chat_ids, load_questions

from opentelemetry_instrumentation_corevital.signals.evaluation import auroc
from opentelemetry_instrumentation_corevital.signals.uncertainty import ALPHA, answer_uncertainty, middle_third

MAX_NEW_TOKENS = 24


def collect(questions: list[dict[str, Any]], cache: Path, model_path: str | None) -> list[dict[str, Any]]:
    """Per answer: grade, token log-probabilities and entropies, per-layer per-head previous and self weights."""
    done = {}
    if cache.exists():
        done = {item["qid"]: item for item in map(json.loads, cache.read_text().splitlines())}
    todo = [q for q in questions if q["qid"] not in done]
    if todo:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from opentelemetry_instrumentation_corevital.cli._models import embedded_model, resolve_model

        torch.set_num_threads(int(os.environ.get("CV_THREADS", "1")))
        source = embedded_model() if model_path is None else resolve_model(model_path, None)
        extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(source.location, **extra)
        model = AutoModelForCausalLM.from_pretrained(
            source.location, attn_implementation="eager", dtype=torch.float32, **extra
        ).eval()
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with cache.open("a") as out, torch.no_grad():
            for n, q in enumerate(todo):
                prompt = chat_ids(tokenizer, q)
                width = prompt.shape[1]
                answer = model.generate(
                    prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.eos_token_id
                )[:, width:]
                ends = (answer[0] == tokenizer.eos_token_id).nonzero()
                if len(ends):
                    answer = answer[:, : int(ends[0]) + 1]
                count = answer.shape[1]
                forward = model(torch.cat([prompt, answer], 1), output_attentions=True)
                logp = torch.log_softmax(forward.logits[0, width - 1 : width + count - 1].float(), -1)
                rows = torch.arange(width, width + count)
                weights = torch.stack([a[0] for a in forward.attentions])  # [layers, heads, T, T]
                text = tokenizer.decode(answer[0], skip_special_tokens=True)
                item = {
                    "qid": q["qid"],
                    "label": is_wrong(text, q["right_answer"]),
                    "logp": logp.gather(-1, answer[0][:, None])[:, 0].tolist(),
                    "entropy": (-(logp.exp() * logp).sum(-1)).tolist(),
                    "prev": weights[:, :, rows, rows - 1].permute(2, 0, 1).tolist(),  # [token][layer][head]
                    "self": weights[:, :, rows, rows].permute(2, 0, 1).tolist(),
                }
                out.write(json.dumps(item) + "\n")
                done[q["qid"]] = item
                if n % 25 == 24:
                    out.flush()
                    print(f"  {n + 1}/{len(todo)} answers, {time.perf_counter() - t0:.0f} s")
    return [done[q["qid"]] for q in questions if q["qid"] in done]


def rauq_paper(logp: list[float], prev: list[list[list[float]]], alpha: float = ALPHA) -> float:
    """The reference code's default: per-answer head choice, token j's own row, mean log, max over the middle."""
    p = [math.exp(v) for v in logp]
    layers = len(prev[0])
    values = []
    for layer in middle_third(layers):
        heads = len(prev[0][layer])
        means = [sum(prev[j][layer][h] for j in range(1, len(p))) / max(1, len(p) - 1) for h in range(heads)]
        head = max(range(heads), key=means.__getitem__)
        conf = [p[0]]
        for j in range(1, len(p)):
            conf.append(alpha * p[j] + (1 - alpha) * prev[j][layer][head] * conf[-1])
        values.append(-sum(math.log(max(c, 1e-30)) for c in conf) / len(conf))
    return max(values)


def rauq_streaming(logp: list[float], prev: list[list[list[float]]]) -> float | None:
    """CoreVital's form from the same weights: per step the largest head, step j = the query of token j - 1."""
    layers = len(prev[0])
    series = [[math.nan] + [max(prev[j - 1][layer]) for j in range(1, len(logp))] for layer in range(layers)]
    found = answer_uncertainty([-v / math.log(2) for v in logp], series, list(range(layers)))
    return found.score if found else None


def llm_check_attention(self_weights: list[list[list[float]]]) -> float:
    """LLM-Check's attention score, negated so that higher is more suspect: -mean over middle layers of
    sum over heads of mean log self-attention."""
    layers = len(self_weights[0])
    per_layer = []
    for layer in middle_third(layers):
        heads = len(self_weights[0][layer])
        per_layer.append(
            sum(
                sum(math.log(max(self_weights[j][layer][h], 1e-30)) for j in range(len(self_weights)))
                / len(self_weights)
                for h in range(heads)
            )
        )
    return -sum(per_layer) / len(per_layer)


SCORES = {
    "RAUQ, the paper's form": lambda it: rauq_paper(it["logp"], it["prev"]),
    "RAUQ, CoreVital's streaming form": lambda it: rauq_streaming(it["logp"], it["prev"]),
    "LLM-Check attention score": lambda it: llm_check_attention(it["self"]),
    "mean token entropy": lambda it: sum(it["entropy"]) / len(it["entropy"]),
    "perplexity (mean -log p)": lambda it: -sum(it["logp"]) / len(it["logp"]),
    "max surprisal": lambda it: -min(it["logp"]),
    "answer length": lambda it: len(it["logp"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=600, help="the same shuffled questions as halueval.py")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cv-quality/rauq-reference.jsonl"))
    parser.add_argument("--model", default=None, help="a local HF folder or GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    questions = load_questions(args.questions)[args.questions // 2 :]  # the evaluation half
    items = collect(questions, args.cache, args.model)
    labels = [it["label"] for it in items]
    result: dict[str, Any] = {"answers": len(items), "wrong_share": round(sum(labels) / max(1, len(labels)), 3)}
    print(f"{len(items)} own answers of the evaluation half, {result['wrong_share']:.0%} wrong")
    for name, score in SCORES.items():
        kept = [(v, t) for it, t in zip(items, labels) if (v := score(it)) is not None]
        result[name] = round(auroc([v for v, _ in kept], [t for _, t in kept]), 3)
        print(f"  {name:36} AUROC {result[name]:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
