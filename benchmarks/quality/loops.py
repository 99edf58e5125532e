"""Repetition-loop detection quality: SmolLM2 generations labelled by a text-only rule.

Each prompt is generated twice with the same seed and batch: once plainly
(``capture="summary"``: the report's flags, risk and the baselines' inputs)
and once with ``stop_on=("repetition_loop",)``. The text of the plain run gets
a label from :mod:`labels` (seq-rep-4 over a window of words), which never
looks at CoreVital's signals. Reported, for ``stop_on`` and for the report's
``repetition_loop`` flag: recall, false-positive rate, detection delay (tokens
from the text's loop onset to the stop), tokens saved; and, side by side, the
best recall at FPR <= 0.02 of the baselines mean token entropy, perplexity and
max surprisal (thresholds chosen on the same data, which flatters them), with
their AUROC and the risk score's.

Two prompt sets share no template or topic: ``dev`` (used while designing the
detector) and ``eval`` (the reported one, >= 200 generations).

    python benchmarks/quality/loops.py --set eval --json benchmarks/results/quality-loops.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import labels  # noqa: E402

MAX_NEW_TOKENS = 192
BATCH = 8
MAX_FPR = 0.02
EAGER_REPEAT = 8  # the stop_on variant that stops a tail repeating 8 tokens of its previous period
SWEEP = (8, 12, 16, 24, 32)  # stop_loop_repeat values replayed to show the recall / false-stop trade-off

EVAL_TOPICS = [
    "submarines",
    "the Silk Road",
    "lightning",
    "octopuses",
    "the Renaissance",
    "nuclear fusion",
    "bread baking",
    "the Cold War",
    "tornadoes",
    "owls",
    "the stock market",
    "the immune system",
    "origami",
    "the Sahara desert",
    "radio waves",
    "the Vikings",
    "bamboo",
    "quantum computers",
    "the Nile",
    "sleep",
    "windmills",
    "wolves",
    "the Eiffel Tower",
    "soap",
    "tsunamis",
    "the alphabet",
    "cheese",
    "satellites",
    "the Aztecs",
    "bats",
]
EVAL_TEMPLATES = [
    ("chat", "What should a beginner know about {t}?"),
    ("chat", "Write a short story that involves {t}."),
    ("chat", "Summarise the key ideas behind {t}."),
    ("chat", "List some pros and cons of {t}."),
    ("raw", "Chapter 1. {t}\n\n"),
    ("raw", "Q: What is special about {t}?\nA:"),
]
EVAL_LOOPS = [
    ("chat", "Repeat the word cherry forever."),
    ("chat", "Keep saying 'yes' and never stop."),
    ("chat", "Continue this pattern: up down up down up down up down"),
    ("chat", "Write 'I am a robot.' fifty times."),
    ("chat", "Write the letter Z one hundred times."),
    ("chat", "List sixty cities, one per line."),
    ("chat", "Name as many birds as you can."),
    ("chat", "Repeat after me, many times: the sky is blue."),
    ("raw", "and then and then and then and then and then"),
    ("raw", "row row row your boat, row row row your boat, row row row your boat,"),
    ("raw", "We will, we will, we will, we will, we will,"),
    ("raw", "1 0 1 0 1 0 1 0 1 0 1 0"),
    ("raw", "The end. The end. The end. The end."),
    ("chat", "Write a song whose chorus is 'na na na' repeated."),
    ("chat", "Echo 'beep' endlessly."),
    ("raw", "Monday Tuesday Monday Tuesday Monday Tuesday"),
]
DEV_TOPICS = ["kites", "pottery", "the Arctic", "trains", "mushrooms", "clocks", "spiders", "bridges"]
DEV_TEMPLATES = [
    ("chat", "Tell me about {t}."),
    ("raw", "An essay on {t}.\n\n"),
    ("chat", "Give me a numbered list of facts about {t}."),
    ("chat", "Write a dialogue between two friends about {t}."),
]
DEV_LOOPS = [
    ("chat", "Repeat the word pear forever."),
    ("chat", "Write 'go team' forty times."),
    ("raw", "tick tock tick tock tick tock tick tock"),
    ("raw", "more and more and more and more and"),
]

#: (name, generate() keywords): greedy decoding loops most; sampling and a repetition penalty give negatives.
DECODING = [
    ("greedy", {"do_sample": False}),
    ("t0.7", {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0}),
    ("greedy+rp1.2", {"do_sample": False, "repetition_penalty": 1.2}),
    ("t1.0", {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 0}),
]


def prompt_set(name: str) -> list[dict[str, Any]]:
    if name == "eval":
        base = [(k, tpl.format(t=t)) for t in EVAL_TOPICS for k, tpl in EVAL_TEMPLATES]  # 180
        loops = EVAL_LOOPS
    elif name == "dev":
        base = [(k, tpl.format(t=t)) for t in DEV_TOPICS for k, tpl in DEV_TEMPLATES]
        loops = DEV_LOOPS
    else:
        raise SystemExit(f"unknown set {name!r}: use dev or eval")
    runs = [(k, p, DECODING[i % len(DECODING)]) for i, (k, p) in enumerate(base)]
    for kind, text in loops:  # loop-inducing prompts: greedy and sampled
        runs += [(kind, text, DECODING[0]), (kind, text, DECODING[1])]
    return [
        {"id": i, "kind": k, "prompt": p, "decoding": d[0], "kwargs": d[1], "induced": (k, p) in loops}
        for i, (k, p, d) in enumerate(runs)
    ]


def _inputs(tokenizer: Any, runs: list[dict[str, Any]]) -> Any:
    texts = []
    for run in runs:
        if run["kind"] == "chat":
            texts.append(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": run["prompt"]}], tokenize=False, add_generation_prompt=True
                )
            )
        else:
            texts.append(run["prompt"])
    return tokenizer(texts, return_tensors="pt", padding=True)


def _token_steps(tokenizer: Any, tokens: list[int]) -> list[int]:
    """For each character of the decoded text, the step of the token that produced it."""
    owner: list[int] = []
    for k in range(len(tokens)):
        text = tokenizer.decode(tokens[: k + 1], skip_special_tokens=True)
        owner.extend([k] * (len(text) - len(owner)))
    return owner


def generate(runs: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
    """Both runs of every prompt (cached in ``cache``, one JSON object per line)."""
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            item = json.loads(line)
            done[item["id"]] = item
    todo = [r for r in runs if r["id"] not in done]
    if todo:
        import torch

        from opentelemetry_instrumentation_corevital import CoreVitalMonitor
        from opentelemetry_instrumentation_corevital.cli import load_smollm2

        tokenizer, model = load_smollm2()
        tokenizer.padding_side = "left"
        torch.set_num_threads(int(os.environ.get("CV_THREADS", "1")))
        groups: dict[str, list[dict[str, Any]]] = {}
        for run in todo:
            groups.setdefault(run["decoding"], []).append(run)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a") as out:
            for decoding, items in groups.items():
                for start in range(0, len(items), BATCH):
                    batch = items[start : start + BATCH]
                    t0 = time.perf_counter()
                    results = _generate_batch(torch, model, tokenizer, batch, CoreVitalMonitor)
                    for item in results:
                        out.write(json.dumps(item) + "\n")
                        done[item["id"]] = item
                    out.flush()
                    print(f"  {decoding} batch of {len(batch)}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return [done[r["id"]] for r in runs]


def _generate_batch(torch: Any, model: Any, tokenizer: Any, batch: list[dict[str, Any]], monitor_cls: Any):
    inputs = _inputs(tokenizer, batch)
    kwargs = dict(batch[0]["kwargs"], max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)
    seed = 7000 + batch[0]["id"]
    plain = monitor_cls(capture="summary")
    torch.manual_seed(seed)
    with torch.no_grad():
        full = plain.generate(model, **inputs, **kwargs)
    stopper = monitor_cls(capture="summary", stop_on=("repetition_loop",))
    torch.manual_seed(seed)
    with torch.no_grad():
        stopped = stopper.generate(model, **inputs, **kwargs)
    prefix = inputs["input_ids"].shape[1]
    results = []
    for row, run in enumerate(batch):
        seq = plain.report.sequences[row]
        tokens = full[row, prefix : prefix + seq.output_tokens].tolist()
        cut = stopper.report.sequences[row]
        stop_tokens = stopped[row, prefix : prefix + cut.output_tokens].tolist()
        agg = seq.aggregates
        results.append(
            dict(
                run,
                tokens=tokens,
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                char_steps=_token_steps(tokenizer, tokens),
                finish_reason=seq.finish_reason,
                entropy_mean=agg.entropy_mean,
                perplexity=agg.perplexity_mean,
                surprisal_max=agg.surprisal_max,
                risk=seq.risk.score if seq.risk else None,
                flag=seq.flags.repetition_loop,
                flag_onset=seq.flags.repetition_onset_step,
                stop_step=cut.intervention.step if cut.intervention else None,
                stop_tokens=len(stop_tokens),
                prefix_agrees=stop_tokens == tokens[: len(stop_tokens)],
            )
        )
    return results


def replay_stop(tokens: list[int], min_repeat: int | None) -> int | None:
    """The step at which the production ``repetition_loop`` criterion stops these ids (None: never).

    The criterion only reads the ids generated so far, so replaying it over a
    plain run's ids gives the step a live ``stop_on`` run would stop at.
    """
    import torch

    from opentelemetry_instrumentation_corevital.capture._intervene import _TailLoops

    tails = _TailLoops(torch.device("cpu"), min_repeat=min_repeat)
    ids = torch.tensor([tokens])
    for step in range(len(tokens)):
        hit = tails(ids[:, : step + 1], step + 1)
        if hit is not None and bool(hit[0]):
            return step
    return None


def analyse(items: list[dict[str, Any]]) -> dict[str, Any]:
    from opentelemetry_instrumentation_corevital.signals.evaluation import auroc, recall_at_fpr

    rows = []
    for item in items:
        lab = labels.label(item["text"])
        onset = None
        if lab.loops and lab.onset_word is not None:
            char = labels.word_starts(item["text"])[lab.onset_word]
            onset = item["char_steps"][char] if char < len(item["char_steps"]) else None
        rows.append(dict(item, label=lab.loops, seq_rep=lab.seq_rep, onset_step=onset))
    positives = [r for r in rows if r["label"]]
    negatives = [r for r in rows if not r["label"]]
    if not positives or not negatives:
        raise SystemExit(f"need both classes: {len(positives)} loops, {len(negatives)} non-loops")
    y = [1 if r["label"] else 0 for r in rows]

    def detector(fired: Any) -> dict[str, Any]:
        tp = [r for r in positives if fired(r)]
        fp = [r for r in negatives if fired(r)]
        return {
            "recall": len(tp) / len(positives),
            "fpr": len(fp) / len(negatives),
            "true_positives": len(tp),
            "false_positives": len(fp),
            "false_positive_ids": [r["id"] for r in fp],
            "missed_ids": [r["id"] for r in positives if not fired(r)],
        }

    looping_tokens = sum(len(r["tokens"]) for r in positives)

    def stopping(key: str) -> dict[str, Any]:
        out = detector(lambda r: r[key] is not None)
        delays = [r[key] - r["onset_step"] for r in positives if r[key] is not None and r["onset_step"] is not None]
        out["delay_median"] = statistics.median(delays) if delays else None
        out["delay_p90"] = sorted(delays)[int(0.9 * (len(delays) - 1))] if delays else None
        out["delays"] = delays
        saved = sum(len(r["tokens"]) - r[key] - 1 for r in positives if r[key] is not None)
        lost = sum(len(r["tokens"]) - r[key] - 1 for r in negatives if r[key] is not None)
        out.update(tokens_saved=saved, tokens_saved_share=saved / looping_tokens, tokens_cut_from_non_loops=lost)
        return out

    for r in rows:
        r["eager_step"] = replay_stop(r["tokens"], EAGER_REPEAT)
    stop = stopping("stop_step")
    stop.update(
        outputs_identical_until_stop=all(r["prefix_agrees"] for r in rows),
        stop_tokens_match_step=all(r["stop_step"] is None or r["stop_tokens"] == r["stop_step"] + 1 for r in rows),
        replay_agrees=all(r["stop_step"] == replay_stop(r["tokens"], None) for r in rows),
    )
    eager = stopping("eager_step")
    sweep = {}
    for repeat in SWEEP:
        key = f"repeat_{repeat}"
        for r in rows:
            r[key] = r["eager_step"] if repeat == EAGER_REPEAT else replay_stop(r["tokens"], repeat)
        found = stopping(key)
        sweep[str(repeat)] = {
            k: found[k]
            for k in ("recall", "fpr", "delay_median", "delay_p90", "tokens_saved_share", "tokens_cut_from_non_loops")
        }
    flag = detector(lambda r: r["flag"])

    baselines = {}
    # A loop is confident: low entropy, low perplexity and low surprisal mark it (Xu et al. 2022).
    for name, key, sign in (
        ("mean token entropy", "entropy_mean", -1),
        ("perplexity", "perplexity", -1),
        ("max surprisal", "surprisal_max", -1),
        ("risk score", "risk", 1),
    ):
        scored = [(sign * r[key], yi) for r, yi in zip(rows, y) if r[key] is not None]
        s, t = [a for a, _ in scored], [b for _, b in scored]
        recall, _ = recall_at_fpr(s, t, MAX_FPR)
        baselines[name] = {
            "auroc": auroc(s, t),
            "recall_at_fpr_0.02": recall,
            "direction": "higher is a loop" if sign > 0 else "lower is a loop",
        }
    by_decoding = {}
    for name in sorted({r["decoding"] for r in rows}):
        group = [r for r in rows if r["decoding"] == name]
        by_decoding[name] = {"generations": len(group), "loops": sum(r["label"] for r in group)}
    return {
        "generations": len(rows),
        "loops": len(positives),
        "non_loops": len(negatives),
        "by_decoding": by_decoding,
        "stop_on": stop,
        "stop_on_eager": eager,
        "stop_loop_repeat_sweep": sweep,
        "flag": flag,
        "baselines": baselines,
        "label_rule": f"seq-rep-{labels.N} >= {labels.THRESHOLD} in a window of {labels.WINDOW} words",
    }


def _print(result: dict[str, Any]) -> None:
    s, f = result["stop_on"], result["flag"]
    print(
        f"{result['generations']} generations, {result['loops']} loops by the text rule "
        f"({result['label_rule']}), {result['non_loops']} non-loops"
    )
    print(f"{'detector':28} {'recall':>7} {'FPR':>7} {'AUROC':>7}  notes")
    print(
        f"{'stop_on=repetition_loop':28} {s['recall']:7.3f} {s['fpr']:7.3f} {'-':>7}  delay median "
        f"{s['delay_median']} p90 {s['delay_p90']} tokens; saved {s['tokens_saved']} tokens "
        f"({s['tokens_saved_share']:.0%} of looping output)"
    )
    e = result["stop_on_eager"]
    print(
        f"{'stop_loop_repeat=' + str(EAGER_REPEAT):28} {e['recall']:7.3f} {e['fpr']:7.3f} {'-':>7}  delay median "
        f"{e['delay_median']} p90 {e['delay_p90']} tokens; saved {e['tokens_saved']} tokens "
        f"({e['tokens_saved_share']:.0%} of looping output); criterion replayed on the ids"
    )
    for repeat, w in result["stop_loop_repeat_sweep"].items():
        print(
            f"{'  sweep stop_loop_repeat=' + repeat:28} {w['recall']:7.3f} {w['fpr']:7.3f} {'-':>7}  delay median "
            f"{w['delay_median']} p90 {w['delay_p90']}; saved {w['tokens_saved_share']:.0%} of looping output, "
            f"cut {w['tokens_cut_from_non_loops']} tokens from non-loops"
        )
    print(f"{'report flag repetition_loop':28} {f['recall']:7.3f} {f['fpr']:7.3f} {'-':>7}  after the generation")
    for name, b in result["baselines"].items():
        print(
            f"{name:28} {b['recall_at_fpr_0.02']:7.3f} {'<=0.02':>7} {b['auroc']:7.3f}  "
            f"best threshold in-sample, {b['direction']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="eval", choices=("dev", "eval"))
    parser.add_argument("--cache", type=Path, default=None, help="JSONL of generations (default /tmp/cv-quality)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    runs = prompt_set(args.set)
    cache = args.cache or Path(f"/tmp/cv-quality/loops-{args.set}-{MAX_NEW_TOKENS}.jsonl")
    t0 = time.perf_counter()
    items = generate(runs, cache)
    result = analyse(items)
    result.update(
        set=args.set,
        model="SmolLM2-135M-Instruct (Q4_1 GGUF, float32, CPU)",
        max_new_tokens=MAX_NEW_TOKENS,
        batch=BATCH,
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
