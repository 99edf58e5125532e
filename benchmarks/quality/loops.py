"""Repetition-loop detection quality: SmolLM2 generations labelled by a text-only rule.

Each prompt is generated once plainly (``capture="summary"``: ids, per-step
entropies, the report's flag, risk and the baselines' inputs; cached as JSON
lines under /tmp/cv-quality) and once with ``stop_on=("repetition_loop",)``
(the same seed and batch). The text of the plain run gets a label from
:mod:`labels` (seq-rep-4 over a window of words), which never looks at
CoreVital's signals. Every detector setting is replayed over the cached ids
(a stop criterion only reads the ids generated so far), so the whole sweep
costs one generation pass; the live ``stop_on`` pass checks that the shipped
criterion stops where its replay says and that the outputs equal the plain
ones up to the stop. Reported per detector: recall, false-positive rate,
detection delay (tokens from the text's loop onset to the stop), tokens saved;
and, side by side, the best recall at FPR <= 0.02 of the baselines mean token
entropy, perplexity and max surprisal (thresholds chosen on the same data,
which flatters them), with their AUROC and the risk score's.

Two prompt sets share no template or topic: ``dev`` (80 generations, used
while designing the detector) and ``eval`` (the reported one, 212).

    python benchmarks/quality/loops.py --set eval --json benchmarks/results/quality-loops.json
    python benchmarks/quality/loops.py --set dev --no-live --model /path/to/hf-folder
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
#: The exact tail test of the SmolLM2 profile (min_cycles, min_tokens, max_period), for caches made before it was kept.
DEFAULT_TAIL = (3, 12, 32)
SWEEP = (8, 12, 16, 24, 32)  # stop_loop_repeat values replayed to show the recall / false-stop trade-off


def _ngram_sweep() -> list[Any]:
    """The n-gram rule's settings replayed beside the shipped one (n=4, seen=3, history=128, window=16, hits=9)."""
    from opentelemetry_instrumentation_corevital.signals.repetition import NgramLoopRule

    out = []
    for seen, history in ((2, 64), (2, 128), (3, 128), (3, 256), (4, 256)):
        for window, hits in ((8, 6), (12, 7), (16, 9), (16, 12), (24, 13), (32, 13), (32, 20)):
            out.append(NgramLoopRule(n=4, seen=seen, history=history, window=window, hits=hits))
    return out + [NgramLoopRule(n=3), NgramLoopRule(n=5, hits=8)]


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
#: A second dev block (added while designing loop detector v2: 40 generations were too few to choose a rule).
DEV_TOPICS_2 = ["volcanoes", "honeybees", "chess", "glaciers", "coffee", "penguins", "the printing press", "rainbows"]
DEV_LOOPS_2 = [
    ("chat", "Say 'hello' over and over."),
    ("chat", "Write the same sentence ten times: I love the sea."),
    ("raw", "la la la la la la la la"),
    ("raw", "one two one two one two one two"),
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
        blocks = [(EVAL_TOPICS, EVAL_TEMPLATES, EVAL_LOOPS)]  # 180 + 32
    elif name == "dev":
        blocks = [(DEV_TOPICS, DEV_TEMPLATES, DEV_LOOPS), (DEV_TOPICS_2, DEV_TEMPLATES, DEV_LOOPS_2)]  # 40 + 40
    else:
        raise SystemExit(f"unknown set {name!r}: use dev or eval")
    runs = []
    for block, (topics, templates, loops) in enumerate(blocks):
        base = [(k, tpl.format(t=t)) for t in topics for k, tpl in templates]
        part = [(k, p, DECODING[i % len(DECODING)]) for i, (k, p) in enumerate(base)]
        for kind, text in loops:  # loop-inducing prompts: greedy and sampled
            part += [(kind, text, DECODING[0]), (kind, text, DECODING[1])]
        runs += [(block, k, p, d, (k, p) in loops) for k, p, d in part]
    return [
        {"id": i, "block": b, "kind": k, "prompt": p, "decoding": d[0], "kwargs": d[1], "induced": induced}
        for i, (b, k, p, d, induced) in enumerate(runs)
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


def _load(model_path: str | None) -> tuple[Any, Any]:
    """(tokenizer, model): the embedded SmolLM2, or any local HF folder or GGUF file, float32 on the CPU."""
    import torch

    from opentelemetry_instrumentation_corevital.cli import load_smollm2
    from opentelemetry_instrumentation_corevital.cli._models import load, resolve_model

    if model_path is None:
        return load_smollm2()
    return load(resolve_model(model_path, None), "cpu", torch.float32)


def _batches(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs grouped by decoding, in batches of BATCH: the same batches (and seeds) for every pass."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(f"{run['block']} {run['decoding']}", []).append(run)
    return [items[i : i + BATCH] for items in groups.values() for i in range(0, len(items), BATCH)]


def _cached(cache: Path) -> dict[int, dict[str, Any]]:
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            item = json.loads(line)
            done[item["id"]] = item
    return done


def generate(runs: list[dict[str, Any]], cache: Path, model_path: str | None, live: bool) -> list[dict[str, Any]]:
    """The plain pass of every prompt (cached in ``cache``, one JSON object per line), and with ``live`` the
    ``stop_on`` pass (cached beside it): ids and per-step entropies, so any detector setting replays from them."""
    passes = [("plain", cache)] + ([("stop", cache.with_name(cache.stem + "-stop.jsonl"))] if live else [])
    loaded: tuple[Any, Any] | None = None
    merged: dict[int, dict[str, Any]] = {}
    for name, path in passes:
        done = _cached(path)
        todo = [b for b in _batches(runs) if any(r["id"] not in done for r in b)]
        if todo and loaded is None:
            loaded = _load(model_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            for batch in todo:
                t0 = time.perf_counter()
                for item in _generate_batch(*loaded, batch, stop=name == "stop"):
                    out.write(json.dumps(item) + "\n")
                    done[item["id"]] = item
                out.flush()
                print(
                    f"  {name} {batch[0]['decoding']} batch of {len(batch)}: {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
        for run in runs:
            merged.setdefault(run["id"], {}).update(done[run["id"]])
    return [merged[r["id"]] for r in runs]


def _generate_batch(tokenizer: Any, model: Any, batch: list[dict[str, Any]], stop: bool) -> list[dict[str, Any]]:
    import torch

    from opentelemetry_instrumentation_corevital import CoreVitalMonitor

    torch.set_num_threads(int(os.environ.get("CV_THREADS", "1")))
    tokenizer.padding_side = "left"
    inputs = _inputs(tokenizer, batch)
    kwargs = dict(batch[0]["kwargs"], max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)
    monitor = CoreVitalMonitor(capture="summary", stop_on=("repetition_loop",) if stop else ())
    torch.manual_seed(7000 + batch[0]["id"])
    with torch.no_grad():
        out = monitor.generate(model, **inputs, **kwargs)
    prefix = inputs["input_ids"].shape[1]
    results = []
    for row, run in enumerate(batch):
        seq = monitor.report.sequences[row]
        tokens = out[row, prefix : prefix + seq.output_tokens].tolist()
        if stop:
            step = seq.intervention.step if seq.intervention else None
            results.append(dict(id=run["id"], stop_step=step, stop_ids=tokens))
            continue
        agg, th = seq.aggregates, monitor.report.thresholds
        results.append(
            dict(
                run,
                tokens=tokens,
                entropy=seq.timeline.entropy,
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                char_steps=_token_steps(tokenizer, tokens),
                finish_reason=seq.finish_reason,
                entropy_mean=agg.entropy_mean,
                perplexity=agg.perplexity_mean,
                surprisal_max=agg.surprisal_max,
                risk=seq.risk.score if seq.risk else None,
                flag=seq.flags.repetition_loop,
                flag_onset=seq.flags.repetition_onset_step,
                flag_hidden="hidden" in seq.flags.repetition_evidence,  # the flag's other evidence, not from the ids
                loop_tail=[th.repetition_min_cycles, th.repetition_min_tokens, th.repetition_max_period],
            )
        )
    return results


def tail_step(
    tokens: list[int], min_cycles: int, min_repeat: int | None = None, min_tokens: int = 12, max_period: int = 32
) -> int | None:
    """First step at which the exact tail test holds: pure, O(len * max_period)."""
    from opentelemetry_instrumentation_corevital.capture._intervene import loop_length

    needs = [loop_length(p, min_cycles, min_tokens, min_repeat) for p in range(1, max_period + 1)]
    runs = [0] * max_period
    for t in range(len(tokens)):
        for p in range(1, max_period + 1):
            runs[p - 1] = runs[p - 1] + 1 if t >= p and tokens[t] == tokens[t - p] else 0
            if runs[p - 1] + p >= needs[p - 1]:
                return t
    return None


def ngram_step(tokens: list[int], rule: Any) -> int | None:
    """First step at which the n-gram rule holds (the pure function the report uses)."""
    from opentelemetry_instrumentation_corevital.signals.repetition import ngram_loop_steps

    held = ngram_loop_steps(tokens, rule)
    return held.index(True) if True in held else None


def replay_stop(tokens: list[int], tail: tuple[int, int, int]) -> int | None:
    """The step at which the production ``repetition_loop`` criterion, run as on the device, stops these ids.

    The criterion only reads the ids generated so far, so replaying it over a
    plain run's ids gives the step a live ``stop_on`` run would stop at.
    """
    import torch

    from opentelemetry_instrumentation_corevital.capture._intervene import LoopCheck

    check = LoopCheck(torch.device("cpu"), *tail)
    ids = torch.tensor([tokens])
    for step in range(len(tokens)):
        hit = check(ids[:, : step + 1], step + 1)
        if hit is not None and bool(hit[0]):
            return step
    return None


def _first(*steps: int | None) -> int | None:
    found = [s for s in steps if s is not None]
    return min(found) if found else None


def analyse(items: list[dict[str, Any]], live: bool) -> dict[str, Any]:
    from opentelemetry_instrumentation_corevital.signals.evaluation import auroc, recall_at_fpr
    from opentelemetry_instrumentation_corevital.signals.repetition import NGRAM_LOOP

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
        tail = r.get("loop_tail") or DEFAULT_TAIL
        r["tail3"], r["tail2"] = tail_step(r["tokens"], 3), tail_step(r["tokens"], 2)
        r["ngram"] = ngram_step(r["tokens"], NGRAM_LOOP)
        # The shipped rule, stop_on's and the report flag's: the profile's exact tail test or the n-gram rule.
        r["rule"] = _first(r["ngram"], tail_step(r["tokens"], tail[0], None, tail[1], tail[2]))
        r["replay"] = replay_stop(r["tokens"], tail)
    stop = stopping("rule")
    stop.update(replay_agrees_with_pure_rule=all(r["replay"] == r["rule"] for r in rows))
    if live:
        ran = [r for r in rows if "stop_ids" in r]  # rows whose live stop_on run is there
        stop.update(
            live_generations=len(ran),
            live_agrees_with_replay=all(r["stop_step"] == r["replay"] for r in ran),
            outputs_identical_until_stop=all(r["stop_ids"] == r["tokens"][: len(r["stop_ids"])] for r in ran),
            stop_tokens_match_step=all(r["stop_step"] is None or len(r["stop_ids"]) == r["stop_step"] + 1 for r in ran),
        )
    sweep = {}

    def add(name: str, steps: Any) -> None:
        for r in rows:
            r["_sweep"] = steps(r)
        found = stopping("_sweep")
        sweep[name] = {
            k: found[k]
            for k in (
                "recall",
                "fpr",
                "false_positives",
                "delay_median",
                "delay_p90",
                "tokens_saved_share",
                "tokens_cut_from_non_loops",
            )
        }

    add("exact tail, 3 periods (v1 stop_on)", lambda r: r["tail3"])
    add("exact tail, 2 periods (v1 report flag)", lambda r: r["tail2"])
    for repeat in SWEEP:
        add(f"exact tail, stop_loop_repeat={repeat}", lambda r, repeat=repeat: tail_step(r["tokens"], 3, repeat))
    for rule in _ngram_sweep():
        label = f"n-gram n={rule.n} seen={rule.seen} history={rule.history} window={rule.window} hits={rule.hits}"
        steps = {r["id"]: ngram_step(r["tokens"], rule) for r in rows}
        add(label, lambda r, steps=steps: steps[r["id"]])
        add(label + " or exact tail 3 periods", lambda r, steps=steps: _first(steps[r["id"]], r["tail3"]))
    flag = detector(lambda r: r["rule"] is not None or r.get("flag_hidden", False))

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
        "sweep": sweep,
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
    checks = {k: v for k, v in s.items() if isinstance(v, bool)}
    print(f"{'detector':52} {'recall':>6} {'FPR':>6} {'FP':>3} {'delay':>9}  saved  notes")
    for name, w in [("stop_on=repetition_loop (shipped rule)", s)] + list(result["sweep"].items()):
        print(
            f"{name:52} {w['recall']:6.3f} {w['fpr']:6.3f} {w['false_positives']:3} "
            f"{str(w['delay_median']) + '/' + str(w['delay_p90']):>9}  {w['tokens_saved_share']:4.0%}"
        )
    print(f"checks: {checks}")
    print(f"{'report flag repetition_loop':52} {f['recall']:6.3f} {f['fpr']:6.3f} {f['false_positives']:3}")
    for name, b in result["baselines"].items():
        print(f"{name:52} {b['recall_at_fpr_0.02']:6.3f} at FPR <= 0.02, AUROC {b['auroc']:.3f} ({b['direction']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="eval", choices=("dev", "eval"))
    parser.add_argument("--cache", type=Path, default=None, help="JSONL of generations (default /tmp/cv-quality)")
    parser.add_argument("--model", default=None, help="a local HF folder or GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--no-live", action="store_true", help="only the plain pass: every detector replayed on its ids"
    )
    args = parser.parse_args()
    runs = prompt_set(args.set)
    tag = "smollm2" if args.model is None else Path(args.model).name.replace(".gguf", "")
    cache = args.cache or Path(f"/tmp/cv-quality/loops-{args.set}-{tag}-{MAX_NEW_TOKENS}.jsonl")
    t0 = time.perf_counter()
    items = generate(runs, cache, args.model, live=not args.no_live)
    result = analyse(items, live=not args.no_live)
    result.update(
        set=args.set,
        model="SmolLM2-135M-Instruct (Q4_1 GGUF, float32, CPU)" if args.model is None else f"{args.model} (CPU)",
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
