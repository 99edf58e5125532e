"""The model's own answers to HaluEval QA questions, graded against the right answer; the RAUQ sweep.

The teacher-forced setting of ``halueval.py`` scores answers the model did not
write. RAUQ's paper (and every sampling-free uncertainty method) asks another
question: is the answer the model *itself* produced wrong? Here the model
answers each question greedily under ``CoreVitalMonitor(capture="full")``, and
its answer counts as right when the normalised right answer appears in it or
their token F1 is at least 0.5 (SQuAD normalisation: lower case, no
punctuation or articles). No label is used by any score; the calibration half
only fits the calibrated map and picks the baselines' directions.
"""

from __future__ import annotations

import json
import math
import re
import string
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from opentelemetry_instrumentation_corevital.signals.uncertainty import layer_uncertainty, middle_third

MAX_NEW_TOKENS = 32
BATCH = 8
LAYERS = ("attn_prompt_mass", "attn_entropy", "hidden_cos_prev", "update_ratio", "attn_prev_token")
ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def _normalise(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(answer: str, right: str) -> float:
    a, b = _normalise(answer).split(), _normalise(right).split()
    common = sum((Counter(a) & Counter(b)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def is_wrong(answer: str, right: str) -> int:
    """1 when the answer neither contains the right one nor overlaps it at F1 >= 0.5."""
    norm_right = _normalise(right)
    return 0 if (norm_right and norm_right in _normalise(answer)) or token_f1(answer, right) >= 0.5 else 1


def answer_all(questions: list[dict[str, Any]], cache: Path, loader: Any, prompt_text: Any) -> list[dict[str, Any]]:
    """One item per question: the model's greedy answer, its grade and what the capture measured (cached)."""
    done: dict[int, dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            item = json.loads(line)
            done[item["qid"]] = item
    todo = [q for q in questions if q["qid"] not in done]
    if todo:
        import torch

        from opentelemetry_instrumentation_corevital import CoreVitalMonitor

        tokenizer, model = loader()
        monitor = CoreVitalMonitor(capture="full", keep=1)
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tokenizer.padding_side = "left"  # a batch of prompts, each answer starting right after its own
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        with cache.open("a") as out:
            for start in range(0, len(todo), BATCH):
                batch = todo[start : start + BATCH]
                prompt = tokenizer.apply_chat_template(
                    [[{"role": "user", "content": prompt_text(q)}] for q in batch],
                    add_generation_prompt=True,
                    padding=True,
                    return_tensors="pt",
                    return_dict=True,
                ).to(model.device)
                with torch.no_grad():
                    ids = monitor.generate(
                        model,
                        **prompt,
                        max_new_tokens=MAX_NEW_TOKENS,
                        do_sample=False,
                        pad_token_id=tokenizer.eos_token_id,
                    )
                width = prompt["input_ids"].shape[1]
                for row, q in enumerate(batch):
                    text = tokenizer.decode(ids[row, width:], skip_special_tokens=True)
                    seq = monitor.report.sequences[row]
                    item = _item(q, text, seq)
                    out.write(json.dumps(item) + "\n")
                    done[q["qid"]] = item
                out.flush()
                print(f"  {start + len(batch)}/{len(todo)} answers, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return [done[q["qid"]] for q in questions if q["qid"] in done]


def _item(q: dict[str, Any], text: str, seq: Any) -> dict[str, Any]:
    """What the analysis reads of one answer."""
    return {
        "qid": q["qid"],
        "label": is_wrong(text, q["right_answer"]),
        "tokens": seq.output_tokens,
        "risk": seq.risk.score if seq.risk else None,
        "uncertainty": seq.uncertainty.score if seq.uncertainty else None,
        "timeline": {"surprisal": seq.timeline.surprisal, "entropy": seq.timeline.entropy},
        "aggregates": dict(vars(seq.aggregates)),
        "layers": {k: getattr(seq.layers, k) for k in LAYERS},
        "text": text,
    }


def rauq_value(surprisal: list[Any], prev_token: list[list[Any]], alpha: float, positions: range) -> float | None:
    """RAUQ's per-answer value (largest per-layer mean of -ln c) for one alpha and one set of layer positions."""
    n = len(surprisal)
    if not n or any(s is None for s in surprisal):
        return None
    probabilities = [2.0**-s for s in surprisal]
    values = []
    for position in positions:
        row = prev_token[position][:n]
        if len(row) < n or any(v is None for v in row[1:]):
            continue
        values.append(layer_uncertainty(probabilities, [0.0 if v is None else v for v in row], alpha))
    return max(values) if values else None


def rauq_sweep(views: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Every (alpha, layer set) variant's value for each answer view: the sweep reported beside the default."""
    out: dict[str, list[float | None]] = {}
    for view in views:
        prev = view["layers"].get("attn_prev_token") or []
        count = len(prev)
        sets = {
            "middle third": middle_third(count),
            "all layers": range(count),
            "last third": range(count - max(1, count // 3), count),
        }
        for alpha in ALPHAS:
            for name, positions in sets.items():
                key = f"rauq alpha {alpha:.1f}, {name}"
                out.setdefault(key, []).append(rauq_value(view["surprisal"], prev, alpha, positions) if prev else None)
    return out


def score_of(value: float | None) -> float | None:
    """The reported 0..1 form of a RAUQ value."""
    return None if value is None else 1.0 - math.exp(-value)
