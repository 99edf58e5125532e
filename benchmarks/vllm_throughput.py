"""vLLM throughput with and without CoreVital, measured in the same process and run.

One in-process ``vllm.LLM`` (CPU, float32, eager; ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` so the engine, and
the spans it ends, live in this process) runs rounds of one ``llm.generate`` call with 16 prompts of mixed
lengths, greedy, ``max_tokens`` fixed and ``ignore_eos=True`` so every round generates the same tokens. The
variants (plain = not instrumented, then the instrumentor in each capture mode) are timed round-robin with the
starting variant rotated every round, after warm-up. The LLM is created while instrumented (so its decoder
layers can be hooked later), then the instrumentor is switched off and on between rounds.

Telemetry goes through the real SDK (``BatchSpanProcessor``/``BatchLogRecordProcessor`` to in-memory exporters,
an ``InMemoryMetricReader``), flushed inside the timed part. Every instrumented round must return the plain
round's greedy token ids and one report and span per request, else the script exits with 1. Besides the clock,
CoreVital's own code is timed by part (see :data:`PARTS`); on a CPU that is the whole cost of the capture.

    python benchmarks/vllm_throughput.py --pin-cpu 0 --json-out FILE   # --profile 30: cProfile one round a mode
    python benchmarks/vllm_throughput.py --render FILE...              # the markdown tables again
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_tqdm_set = "TQDM_DISABLE" in os.environ
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import paired_interval  # noqa: E402

if not _tqdm_set:  # overhead.py sets it; vLLM divides by zero with it
    os.environ.pop("TQDM_DISABLE", None)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, ".cache", "smollm2-135m-instruct-hf")  # made by `make test`

#: Prompt text; request i gets its first WORDS[i] words (mixed lengths: a few tokens to a few hundred).
TEXT = (
    "The history of the river begins high in the mountains, where snow melts each spring and feeds a thousand "
    "small streams. They join in narrow valleys, cut through old forests of pine and birch, and fall over rocks "
    "into deep pools where trout wait in the cold water. Farther down, the valley opens, the current slows, and "
    "the river turns wide and brown as it crosses farmland, passing villages, mills and bridges built of stone. "
    "Towns grew where the river could be crossed, and their markets traded grain, wool, timber and salt. Over "
    "centuries people built canals and locks, drained marshes, and raised dikes against the floods that came "
    "after heavy rain. Today the river carries barges and pleasure boats, feeds cities with drinking water, and "
    "still floods now and then, reminding everyone who lives along its banks that it was there long before them "
    "and will outlast every wall they build. Scientists measure its flow, its temperature and the fish that "
    "return each year, and they write reports that describe how the climate changes the timing of the spring "
    "melt, the length of dry summers and the strength of the autumn storms that sweep in from the west."
)
WORDS = [3, 180, 10, 90, 25, 150, 6, 60, 120, 15, 45, 200, 8, 75, 30, 105]


@dataclass
class Result:
    """One run's settings and measurements (the --json-out record; --render reads it back)."""

    model: str
    requests: int
    max_tokens: int
    rounds: int
    warmup: int
    device: str = "cpu"
    dtype: str = "float32"
    prompt_tokens: list[int] = field(default_factory=list)
    tokens_per_round: int = 0
    all_s: dict[str, list[float]] = field(default_factory=dict)  # wall time of each round
    cpu_s: dict[str, list[float]] = field(default_factory=dict)  # this process's CPU time of each round
    median_s: dict[str, float] = field(default_factory=dict)
    tokens_per_s: dict[str, float] = field(default_factory=dict)  # generated tokens / median round time
    ratio: dict[str, float] = field(default_factory=dict)  # median / plain median
    paired: dict[str, float] = field(default_factory=dict)  # median over rounds of variant / plain, same round
    interval: dict[str, list[float]] = field(default_factory=dict)  # bootstrap 95% of the paired ratio
    cpu_paired: dict[str, float] = field(default_factory=dict)  # the paired ratio of CPU times
    cpu_interval: dict[str, list[float]] = field(default_factory=dict)
    host_ms: dict[str, float] = field(default_factory=dict)  # our code's time per request (median over rounds)
    parts_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> part -> ms per request
    gc_ms: dict[str, float] = field(default_factory=dict)  # Python's garbage collections per round (median)
    same_tokens: dict[str, bool] = field(default_factory=dict)
    reports: dict[str, list[int]] = field(default_factory=dict)  # reports per round
    plain_reproducible: bool = True


# -- our own time, by part ------------------------------------------------------------
#: Part -> what it covers (exclusive times: a part nested in another is not counted twice).
PARTS = {
    "mark": "frontend: copy the request's sampling parameters and add the marker (VLLMWrappers._marked)",
    "rows": "engine: follow vLLM's batch update, install/remove hooks (BatchCapture.update)",
    "hooks": "decoder-layer hooks: gather the residual stream at the sampled rows (VLLMLayerTaps)",
    "take": "stack the layers' rows for the captured requests (VLLMLayerTaps.take)",
    "reduce": "per-step reduce of the captured rows (BatchCapture.step, without take)",
    "end": "per step: did a request end? (BatchCapture.after_step, without finish)",
    "finish": "request end: read its rows on the host, build its CaptureResult (BatchCapture.finish)",
    "build": "request end: build the report (VLLMCall._report: build_report)",
    "emit": "request end: span, metrics, logs, on_report (VLLMCall.emit, without build)",
}


class PartTimer:
    """Exclusive wall time per part of our code, and in Python's garbage collector (everyone's), until read."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []
        self.collecting = self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.collecting += time.perf_counter() - self._gc_start

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its time (less its timed callees') added to ``part``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                spent = time.perf_counter() - start
                self.spent[part] += spent - inner
                if self._stack:
                    self._stack[-1] += spent

        return timed

    def take(self) -> tuple[dict[str, float], float]:
        """The seconds per part, and in garbage collections, since the last take."""
        spent, collecting = dict(self.spent), self.collecting
        self.spent, self.collecting = defaultdict(float), 0.0
        return spent, collecting


TIMER = PartTimer()


def time_our_code() -> None:
    """Wrap the functions of each part (class attributes, so engines and hooks made later are timed too)."""
    from opentelemetry_instrumentation_corevital.capture import _vllm_batch, _vllm_taps
    from opentelemetry_instrumentation_corevital.instrument import _vllm, _vllm_call

    wrap = TIMER.wrap
    _vllm.VLLMWrappers._marked = wrap("mark", _vllm.VLLMWrappers._marked)
    _vllm_batch.BatchCapture.update = wrap("rows", _vllm_batch.BatchCapture.update)
    _vllm_batch.BatchCapture.step = wrap("reduce", _vllm_batch.BatchCapture.step)
    _vllm_batch.BatchCapture.after_step = wrap("end", _vllm_batch.BatchCapture.after_step)
    _vllm_batch.BatchCapture.finish = wrap("finish", _vllm_batch.BatchCapture.finish)
    _vllm_taps.VLLMLayerTaps._before_first = wrap("hooks", _vllm_taps.VLLMLayerTaps._before_first)
    _vllm_taps.VLLMLayerTaps.take = wrap("take", _vllm_taps.VLLMLayerTaps.take)
    after = _vllm_taps.VLLMLayerTaps._after
    _vllm_taps.VLLMLayerTaps._after = lambda self, index: wrap("hooks", after(self, index))
    _vllm_call.VLLMCall._report = wrap("build", _vllm_call.VLLMCall._report)
    _vllm_call.VLLMCall.emit = wrap("emit", _vllm_call.VLLMCall.emit)


# -- telemetry ----------------------------------------------------------------------------
class Telemetry:
    """Real SDK providers (batch processors to in-memory exporters) and the reports handed on."""

    def __init__(self) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.spans, self.logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
        self.tracer_provider, self.logger_provider = TracerProvider(), LoggerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(self.logs))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.reports: list[Any] = []

    def set_variant(self, variant: str) -> None:
        """Instrument in ``variant``'s capture mode, or not at all for plain; start from empty exporters."""
        from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

        instrumentor = CoreVitalInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        if variant != "plain":
            instrumentor.instrument(**self.providers(), on_report=self.reports.append, capture=variant)
        self.flush()
        self.spans.clear()
        self.logs.clear()
        self.reports.clear()

    def providers(self) -> dict[str, Any]:
        """The providers, as ``instrument()`` takes them."""
        return dict(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
        )

    def flush(self) -> None:
        """Export everything the batch processors hold."""
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()


# -- the benchmark ----------------------------------------------------------------------
def prompts(count: int) -> list[str]:
    """``count`` prompts of mixed lengths, the same every run."""
    words = TEXT.split()
    return [" ".join(words[: WORDS[i % len(WORDS)] + i // len(WORDS)]) for i in range(count)]


class Failed(Exception):
    """An instrumented round changed the output or lost reports."""


def bench(args: argparse.Namespace) -> Result:
    """Time every variant round by round on one in-process LLM; raises :class:`Failed` after the rounds if any
    instrumented round changed the tokens or lost a report."""
    from vllm import LLM, SamplingParams

    telemetry = Telemetry()
    telemetry.set_variant(args.modes[0] if args.modes else "summary")  # create the LLM while instrumented
    llm = LLM(model=args.model, enforce_eager=True, dtype="float32", max_model_len=2048, seed=0)
    texts = prompts(args.requests)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    variants = ["plain", *args.modes]
    name = os.path.basename(args.model.rstrip("/"))
    result = Result(name, args.requests, args.max_tokens, args.rounds, args.warmup)
    result.tokens_per_round = args.requests * args.max_tokens
    reference: list[list[int]] | None = None
    problems: list[str] = []

    def run(variant: str, label: str) -> tuple[float, float, dict[str, float]]:
        nonlocal reference
        telemetry.set_variant(variant)
        gc.collect()
        TIMER.take()
        start, cpu = time.perf_counter(), time.process_time()
        outputs = llm.generate(texts, params, use_tqdm=False)
        if variant != "plain":
            telemetry.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        parts, collecting = TIMER.take()
        gcs[variant].append(collecting)
        ids = [list(o.outputs[0].token_ids) for o in outputs]
        if not result.prompt_tokens:
            result.prompt_tokens = [len(o.prompt_token_ids or ()) for o in outputs]
        if any(len(t) != args.max_tokens for t in ids):
            problems.append(f"{label} {variant}: a request generated other than {args.max_tokens} tokens")
        if reference is None and variant == "plain":
            reference = ids
        if reference is not None and ids != reference:
            if variant == "plain":
                result.plain_reproducible = False
            else:
                result.same_tokens[variant] = False
                problems.append(f"{label} {variant}: greedy token ids differ from plain")
        if variant != "plain":
            reports, spans = len(telemetry.reports), len(telemetry.spans.get_finished_spans())
            result.reports.setdefault(variant, []).append(reports)
            lengths = sorted(r.usage.output_tokens for r in telemetry.reports)
            if reports != args.requests or spans != args.requests or lengths != [args.max_tokens] * args.requests:
                problems.append(f"{label} {variant}: {reports} reports, {spans} spans, output tokens {lengths}")
        return elapsed, cpu, parts if variant != "plain" else {}

    times: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    gcs: dict[str, list[float]] = {v: [] for v in variants}
    ours: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for variant in sorted(variants, key=lambda v: v != "plain"):  # plain first: the reference ids
        for w in range(args.warmup):
            run(variant, f"warm-up {w}")
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            elapsed, cpu, spent = run(variant, f"round {r}")
            times[variant].append(elapsed)
            cpus[variant].append(cpu)
            ours[variant].append(spent)
        line = ", ".join(f"{v} {times[v][-1]:.3f} s (CPU {cpus[v][-1]:.3f} s)" for v in variants)
        print(f"round {r}: {line}", flush=True)
    if args.profile:
        for variant in args.modes:
            profile_round(llm, texts, params, telemetry, variant, args.profile)
    telemetry.set_variant("plain")

    base = statistics.median(times["plain"])
    for variant in variants:
        result.all_s[variant] = times[variant]
        result.median_s[variant] = statistics.median(times[variant])
        result.tokens_per_s[variant] = result.tokens_per_round / result.median_s[variant]
        result.ratio[variant] = result.median_s[variant] / base
        result.paired[variant], result.interval[variant] = paired(times[variant], times["plain"])
        result.cpu_s[variant] = cpus[variant]
        result.cpu_paired[variant], result.cpu_interval[variant] = paired(cpus[variant], cpus["plain"])
        per_request = 1000 / args.requests
        result.host_ms[variant] = statistics.median(sum(o.values()) for o in ours[variant]) * per_request
        if variant != "plain":
            result.parts_ms[variant] = {
                part: statistics.median(o.get(part, 0.0) for o in ours[variant]) * per_request for part in PARTS
            }
        result.gc_ms[variant] = statistics.median(gcs[variant][-args.rounds :]) * 1000
        result.same_tokens.setdefault(variant, True)
    if problems:
        raise Failed("; ".join(problems))
    return result


def paired(times: list[float], plain: list[float]) -> tuple[float, list[float]]:
    """The median over rounds of time / plain time of the same round, and its bootstrap 95% interval."""
    return statistics.median(t / p for t, p in zip(times, plain)), list(paired_interval(times, plain))


def profile_round(llm: Any, texts: list[str], params: Any, telemetry: Telemetry, variant: str, top: int) -> None:
    """One cProfile'd round of ``variant``: this package's functions and the torch calls they make, by own time."""
    telemetry.set_variant(variant)
    profiler = cProfile.Profile()
    profiler.enable()
    llm.generate(texts, params, use_tqdm=False)
    telemetry.flush()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    out.write("\n--- callers: our package ---\n")
    stats.sort_stats("cumulative").print_stats("opentelemetry_instrumentation_corevital", top)
    print(f"\n=== cProfile, one round of {variant} ===\n{out.getvalue()}", flush=True)


# -- output -----------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """Versions and the host, for the record."""
    import torch
    import vllm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_affinity": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))),
    }


def table(results: list[Result], labels: list[str] | None = None) -> str:
    """The markdown tables: throughput and ratios per variant, then our time per request by part.

    ``labels`` (one per result) add a first column saying which run a row is from.
    """
    names = labels or [""] * len(results)
    run = "| run " if labels else ""
    lines = [
        f"{run}| variant | median s / round | generated tokens/s | ratio (medians) | ratio (paired) | "
        "paired 95% interval | CPU time ratio (paired) | its 95% interval | CoreVital host ms / request | "
        "host time / plain round | GC ms / round | same tokens | reports / round |",
        "|---" * (13 + bool(labels)) + "|",
    ]
    for name, r in zip(names, results):
        for variant, median in r.median_s.items():
            low, high = r.interval[variant]
            cpu_low, cpu_high = r.cpu_interval[variant]
            share = r.host_ms[variant] * r.requests / (r.median_s["plain"] * 1000)
            reports = r.reports.get(variant)
            count = "–" if not reports else (str(reports[0]) if len(set(reports)) == 1 else "/".join(map(str, reports)))
            same = "–" if variant == "plain" else ("yes" if r.same_tokens[variant] else "NO")
            gc = f"{r.gc_ms[variant]:.0f}" if variant in r.gc_ms else "–"
            lines.append(
                (f"| {name} " if labels else "")
                + f"| {variant} | {median:.3f} | {r.tokens_per_s[variant]:.1f} | {r.ratio[variant]:.3f} | "
                f"{r.paired[variant]:.3f} | {low:.3f}–{high:.3f} | {r.cpu_paired[variant]:.3f} | "
                f"{cpu_low:.3f}–{cpu_high:.3f} | {r.host_ms[variant]:.2f} | {share:.1%} | {gc} | {same} | {count} |"
            )
    columns = [(f"{name} {v}".strip(), r.parts_ms[v]) for name, r in zip(names, results) for v in r.parts_ms]
    if columns:
        lines += ["", "CoreVital host ms per request, by part (median over rounds; exclusive times):", ""]
        lines.append("| part | " + " | ".join(c for c, _ in columns) + " | what |")
        lines.append("|---|" + "---|" * len(columns) + "---|")
        for part, what in PARTS.items():
            lines.append(f"| {part} | " + " | ".join(f"{ms.get(part, 0.0):.2f}" for _, ms in columns) + f" | {what} |")
        totals = " | ".join(f"{sum(ms.values()):.2f}" for _, ms in columns)
        lines.append(f"| **sum of the medians** | {totals} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="a vLLM model folder (default: the converted SmolLM2)")
    parser.add_argument("--modes", default="summary,full", help="capture modes to compare with plain")
    parser.add_argument("--requests", type=int, default=16, help="prompts per round (one llm.generate call)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="rounds per variant before the measured ones")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--pin-cpu", type=int, default=None, help="run on this CPU core, one torch thread")
    parser.add_argument("--profile", type=int, default=0, help="print a cProfile of one round per mode (top N)")
    parser.add_argument("--render", nargs="+", default=None, help="print the tables of earlier --json-out files")
    parser.add_argument("--labels", default=None, help="with --render: comma list naming each file's run")
    args = parser.parse_args(argv)
    if args.render:
        runs = [(path, Result(**r)) for path in args.render for r in json.load(open(path))["results"]]
        labels = args.labels.split(",") if args.labels else None
        if labels is None and len(runs) > 1:  # the file names, less what they all start with
            stems = [os.path.splitext(os.path.basename(path))[0] for path, _ in runs]
            common = len(os.path.commonprefix(stems))
            labels = [stem[common:].strip("-_") or stem for stem in stems]
        print(table([r for _, r in runs], labels))
        return 0
    args.modes = [m for m in args.modes.split(",") if m]
    if args.pin_cpu is not None:  # before vLLM starts: its CPU worker forbids changing the thread count later
        import torch

        os.sched_setaffinity(0, {args.pin_cpu})
        torch.set_num_threads(1)  # more threads than cores would spin against each other
    time_our_code()
    try:
        result = bench(args)
    except Failed as exc:
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(json.dumps(machine()))  # after the engine started: vLLM sets torch's threads
    print(table([result]))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"machine": machine(), "results": [asdict(result)]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
