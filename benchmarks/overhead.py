"""Overhead of CoreVital against plain ``generate()``, measured in the same process.

Each model is timed in every mode (plain, then the instrumentor in each capture
mode) round-robin, with the starting mode rotated every round, after warm-up.
We report the median of the rounds and each mode's ratio to plain. All runs
use greedy decoding with ``min_new_tokens == max_new_tokens`` so random-weight
models cannot stop early. Instrumented runs export to in-memory SDK
exporters, so span building, report building and metric recording are inside
the measured time.

CPU (``make bench``)::

    python benchmarks/overhead.py --device cpu --models smollm2,tiny-llama

GPU (random-init real shapes in bf16, through the device tool)::

    python benchmarks/overhead.py --device cuda --models llama-3.1-8b,qwen2-0.5b --tokens 128 --prompt-len 128

On CUDA it also counts synchronising calls with ``torch.cuda.set_sync_debug_mode``
(plain vs instrumented) and compares peak allocated memory.

Held-out settings (issue 17): a third shape (``mistral-7b``), prompt 1024 and 256
new tokens, batches 1/4/8, and compiled generation: ``--cache static`` (transformers
compiles the forward; the capture keeps to the logit signals and says so) or
``--compile-forward`` (``model.forward = torch.compile(model.forward)``).
``--logit-scale`` multiplies the final norm's weight so that random weights give
confident, healthy-looking generations (the cheap ``on_risk`` path)::

    python benchmarks/overhead.py --device cuda --models mistral-7b --batches 1,4 --prompt-len 1024 --tokens 256
    python benchmarks/overhead.py --device cuda --models qwen2-0.5b --batches 1,8 --cache static

A model split over several GPUs (issue 18; peak memory then per GPU)::

    python benchmarks/overhead.py --device cuda --gpus 2 --models llama-3.1-8b,llama-3.1-70b-40l --batches 1,8
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

# Real configurations, random weights (no download anywhere).
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": dict(
        arch="llama",
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=128000,
        eos_token_id=128001,
    ),
    "mistral-7b": dict(  # Mistral-7B-v0.3
        arch="mistral",
        vocab_size=32768,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-5,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "qwen2-0.5b": dict(
        arch="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
    ),
}


# Llama-3.1-70B's layer shape with 40 of its 80 layers (about 36B parameters, 69 GB in bf16): over 2 GPUs it runs
# like the real model's half per device, and every mode and batch fits one 10-minute device command.
SHAPES["llama-3.1-70b-40l"] = dict(
    SHAPES["llama-3.1-8b"], hidden_size=8192, intermediate_size=28672, num_hidden_layers=40, num_attention_heads=64
)


@dataclass
class Result:
    model: str
    device: str
    dtype: str
    batch: int
    prompt_len: int
    new_tokens: int
    rounds: int
    median_s: dict[str, float] = field(default_factory=dict)
    min_s: dict[str, float] = field(default_factory=dict)
    paired: dict[str, float] = field(default_factory=dict)  # median over rounds of mode / plain in the same round
    host_ms: dict[str, float] = field(default_factory=dict)  # our own host time per generation (median)
    ratio: dict[str, float] = field(default_factory=dict)
    all_s: dict[str, list[float]] = field(default_factory=dict)
    same_output: dict[str, bool] = field(default_factory=dict)
    syncs: dict[str, int] = field(default_factory=dict)
    plain_reproducible: bool = True  # two plain runs gave the same tokens (else "same tokens" cannot hold either)
    peak_mib: dict[str, float] = field(default_factory=dict)
    compiled: str = ""  # "static cache" (compiled by transformers), "torch.compile(forward)" or "" (eager)
    host_parts: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> part -> median ms / generation
    signals: dict[str, list[str]] = field(default_factory=dict)  # mode -> signal groups of its last report
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)  # mode -> what its last report lacks, why
    full_share: dict[str, float] = field(default_factory=dict)  # mode -> share of reports emitted at full detail
    risk: dict[str, float] = field(default_factory=dict)  # mode -> median risk score of its reports
    logit_scale: float = 1.0
    gpus: int = 1  # the model split over this many GPUs (device_map, layers in equal runs)
    peak_devices: dict[str, list[float]] = field(default_factory=dict)  # mode -> peak MiB on each GPU
    background: bool = False  # background_emit on: build and emit ran on the emission thread (flushed per round)
    graph_trees: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> CUDA-graph trees (--graph-trees)


def paired_interval(
    times: list[float], plain: list[float], level: float = 0.95, resamples: int = 2000
) -> tuple[float, float]:
    """Bootstrap interval of the paired ratio (median over rounds of mode / plain), resampling whole rounds."""
    ratios = [t / p for t, p in zip(times, plain)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1.0 - tail) * resamples))]


def split_over_gpus(model: Any, gpus: int) -> Any:
    """The model dispatched over ``gpus`` GPUs as ``device_map`` loading does (accelerate): embeddings and the first
    layers on GPU 0, equal runs of layers after, the final norm and the head on the last GPU."""
    from accelerate import dispatch_model

    layers = model.config.num_hidden_layers
    device_map: dict[str, int] = {"model.embed_tokens": 0, "model.rotary_emb": 0}
    device_map.update({f"model.layers.{i}": i * gpus // layers for i in range(layers)})
    device_map.update({"model.norm": gpus - 1, "lm_head": gpus - 1})
    return dispatch_model(model, device_map=device_map)


def build_model(name: str, device: str, dtype: torch.dtype, gpus: int = 1) -> tuple[Any, int]:
    if name == "smollm2":
        from opentelemetry_instrumentation_corevital.cli import load_smollm2

        _, model = load_smollm2()
        return model.to(device=device, dtype=dtype), model.config.vocab_size
    if name == "tiny-llama":
        from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm

        model = tiny_causal_lm("llama")
        return model.to(device=device, dtype=dtype), model.config.vocab_size
    import transformers as tf

    spec = dict(SHAPES[name])
    arch = spec.pop("arch")
    config = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}[arch](**spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = spec["eos_token_id"]
    if gpus > 1:
        model = split_over_gpus(model, gpus)
    return model.eval(), config.vocab_size


HOST_TIME: dict[str, float] = {}  # part -> seconds, inclusive (see host_parts)
GRAPH_TREES: dict[str, float] = {}  # "records", "misses", "miss_us" in this generation (see count_graph_trees)


def timed(fn: Any, part: str) -> Any:
    """``fn``, adding its inclusive host time to ``HOST_TIME[part]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            HOST_TIME[part] = HOST_TIME.get(part, 0.0) + time.perf_counter() - start

    return wrapper


def time_our_host_work() -> None:
    """Accumulate the host time spent in CoreVital's own code, by part (per step, call start, call end).

    On a launch-bound GPU this is what the instrumentation adds to each step;
    it is measured directly, so host jitter that swamps wall-clock ratios
    does not hide it.
    """
    from opentelemetry_instrumentation_corevital.capture import TransformersSource, _recorder
    from opentelemetry_instrumentation_corevital.instrument import _call

    _recorder.StepRecorder.__call__ = timed(_recorder.StepRecorder.__call__, "step")
    TransformersSource.processors_for = timed(TransformersSource.processors_for, "attach")
    _call.GenerationCall.__init__ = timed(_call.GenerationCall.__init__, "start")
    _call.GenerationCall.__enter__ = timed(_call.GenerationCall.__enter__, "enter")
    _call.GenerationCall.succeed = timed(_call.GenerationCall.succeed, "end")
    _call.GenerationCall._hand_off = timed(_call.GenerationCall._hand_off, "handoff")
    _call.GenerationCall._report = timed(_call.GenerationCall._report, "report")
    TransformersSource.finish = timed(TransformersSource.finish, "transfer")


def time_finish_parts() -> None:
    """Split the read-back's host time (``transfer``) into its parts, as ``fin.*`` keys of the host parts: the wait for
    the device to catch up (a synchronisation put first), the end of the batched steps, the transfer, the step times
    and the release; and the step's ring copy and clock mark. (The transfer and the step times are queued there; the
    wait for them and the lists are timed with ``report``, wherever the result is settled.)"""
    from opentelemetry_instrumentation_corevital.capture import _clock, _logit_batch, _reducer, _transformers

    finish = _transformers.TransformersSource.finish

    def lag_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        if torch.cuda.is_available():
            timed(torch.cuda.synchronize, "fin.lag")()
        return finish(self, *args, **kwargs)

    _transformers.TransformersSource.finish = lag_first
    _transformers.transfer = timed(_transformers.transfer, "fin.transfer")
    _reducer.StepReducer.settle = timed(_reducer.StepReducer.settle, "fin.settle")
    _clock.StepClock.ends_later = timed(_clock.StepClock.ends_later, "fin.ends")
    _transformers.TransformersSource._release = timed(_transformers.TransformersSource._release, "fin.release")
    _logit_batch.LogitBatch.add = timed(_logit_batch.LogitBatch.add, "step.add")
    _clock.StepClock.mark = timed(_clock.StepClock.mark, "step.mark")


def count_graph_trees() -> None:
    """Count what torch's CUDA-graph trees do for a compiled forward (recordings, and checks of a recorded path that
    did not match the call's inputs) into :data:`GRAPH_TREES`: the cost that a static input moving to a new address
    brings (a recording, then a failed check every step), which the round-robin of modes may bring to either side."""
    from torch._inductor import cudagraph_trees as trees

    record, check = trees.CUDAGraphTreeManager.record_function, trees.CUDAGraphNode.check_invariants

    def counted_record(*args: Any, **kwargs: Any) -> Any:
        GRAPH_TREES["records"] = GRAPH_TREES.get("records", 0) + 1
        return record(*args, **kwargs)

    def counted_check(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        status = check(*args, **kwargs)
        first = status[0] if isinstance(status, tuple) else status  # (status, why) in newer torch, else a status
        if first is not True and getattr(first, "name", None) != "SUCCESS":
            GRAPH_TREES["misses"] = GRAPH_TREES.get("misses", 0) + 1
            GRAPH_TREES["miss_us"] = GRAPH_TREES.get("miss_us", 0) + (time.perf_counter() - start) * 1e6
        return status

    trees.CUDAGraphTreeManager.record_function = counted_record
    trees.CUDAGraphNode.check_invariants = counted_check


def host_parts(inclusive: dict[str, float]) -> dict[str, float]:
    """Exclusive milliseconds per part: per-step reduce, call start, read-back, report build, emission; and total,
    the caller's own: with ``background_emit`` the build and emission run on the emission thread (``background``)."""
    get = inclusive.get
    handoff = "handoff" in inclusive  # the read-back was done on the caller's thread, before the report
    parts = {
        "steps": get("step", 0.0),
        "start": get("start", 0.0) + get("enter", 0.0) + get("attach", 0.0),
        "transfer": get("transfer", 0.0),
        "build": get("report", 0.0) - (0.0 if handoff else get("transfer", 0.0)),
        "emit": get("end", 0.0) - get("report", 0.0),
    }
    parts["background"] = get("end", 0.0) if handoff else 0.0
    parts.update({k: v for k, v in inclusive.items() if k.startswith(("fin.", "step."))})  # --finish-parts
    parts["total"] = parts["steps"] + parts["start"] + (get("handoff", 0.0) if handoff else get("end", 0.0))
    return {k: v * 1000 for k, v in parts.items()}


def telemetry_providers() -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reports: list[Any] = []
    return {
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
        "on_report": reports.append,
        "_exporter": exporter,
        "_reports": reports,
    }


def set_mode(mode: str, providers: dict[str, Any]) -> None:
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
    from opentelemetry_instrumentation_corevital.capture import _graph_pool

    instrumentor = CoreVitalInstrumentor()
    # uninstrument() drops the reduce graphs kept between generations; a process that stays instrumented keeps
    # them, so the harness hands them back after its own switch (else every instrumented round captured afresh).
    kept = providers.setdefault("_graphs", {})  # key -> graphs, across plain rounds too
    with _graph_pool._lock:
        kept.update({key: list(graphs) for key, graphs in _graph_pool._kept.items()})
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if mode == "plain" and providers.get("_compiled"):
        # A compiled forward's guards name the attention function: with the registry wrapped in every mode, plain
        # and instrumented rounds run one compiled graph (the wrapper compiles away) and one CUDA-graph tree.
        # Otherwise each mode switch makes torch's CUDA-graph trees look through both modes' recordings every
        # step, a cost of switching that a process which stays instrumented never pays (BENCHMARKS.md, issue 17).
        from opentelemetry_instrumentation_corevital.capture import install_attention_interception

        install_attention_interception()
    if mode != "plain":
        kwargs = {k: v for k, v in providers.items() if not k.startswith("_")}
        if providers.get("_background"):
            kwargs["background_emit"] = True
        instrumentor.instrument(capture=mode, **kwargs)
        with _graph_pool._lock:
            _graph_pool._kept.update({key: list(graphs) for key, graphs in kept.items()})
    providers["_exporter"].clear()
    providers["_reports"].clear()


def static_cache_setup(
    model_name: str, device: str, batch: int, prompt_len: int, tokens: int
) -> tuple[Any, torch.Tensor, dict[str, Any], dict[str, Any]]:
    """A compiled decode to time (transformers' static cache): the model, a seeded prompt, ``generate``'s keywords,
    and providers for background emission whose plain rounds keep the attention registry wrapped (``set_mode``)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, vocab = build_model(model_name, device, dtype)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, min(vocab, 32000), (batch, prompt_len), generator=generator).to(device)
    kwargs: dict[str, Any] = dict(
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        cache_implementation="static",
    )
    providers = telemetry_providers()
    providers["_background"] = True
    providers["_compiled"] = True
    return model, prompt, kwargs, providers


def sync_now(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flush_reports() -> None:
    """Let the emission thread (``background_emit``) finish, outside the timing: the next round starts clean."""
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    CoreVitalInstrumentor().flush(60)


def compiled_setup(model: Any, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Compile as asked: how (for the table) and generate's extra keywords."""
    if args.cache == "static":
        return "static cache", {"cache_implementation": "static"}
    if args.compile_forward:
        model.forward = torch.compile(model.forward)
        return "torch.compile(forward)", {}
    return "", {}


def bench(name: str, args: argparse.Namespace) -> Result:
    device = args.device
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model, vocab = build_model(name, device, dtype, args.gpus)
    if args.logit_scale != 1.0:  # confident next-token distributions from random weights (healthy-looking risk)
        norm = model.get_decoder().norm
        norm.weight.data.mul_(args.logit_scale)
    if args.cache or args.compile_forward:
        torch._dynamo.reset()  # each shape compiles afresh, within dynamo's recompile limit
    compiled, extra = compiled_setup(model, args)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, min(vocab, 32000), (args.batch, args.prompt_len), generator=gen).to(device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=args.tokens,
        min_new_tokens=args.tokens,
        do_sample=False,
        **extra,
    )
    modes = ["plain", *args.modes]
    providers = telemetry_providers()
    providers["_background"] = args.background
    providers["_compiled"] = bool(args.cache or args.compile_forward)
    result = Result(name, device, args.dtype, args.batch, args.prompt_len, args.tokens, args.rounds)
    result.background = args.background
    result.compiled, result.logit_scale, result.gpus = compiled, args.logit_scale, args.gpus
    outputs: dict[str, torch.Tensor] = {}
    details: dict[str, list[str | None]] = {m: [] for m in modes}
    risks: dict[str, list[float]] = {m: [] for m in modes}

    with torch.inference_mode():
        for mode in modes:  # warm-up (and compilation), and one output per mode for the equality check
            set_mode(mode, providers)
            for _ in range(args.warmup):
                outputs[mode] = model.generate(prompt, **kwargs)
            sync_now(device)
            flush_reports()
            reports = providers["_reports"]
            if reports:
                result.signals[mode] = list(reports[-1].capture.signals)
                result.unavailable[mode] = dict(reports[-1].capture.unavailable)
        set_mode("plain", providers)
        result.plain_reproducible = bool(torch.equal(model.generate(prompt, **kwargs), outputs["plain"]))
        times: dict[str, list[float]] = {m: [] for m in modes}
        ours: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        trees: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in order:
                set_mode(mode, providers)
                gc.collect()
                sync_now(device)
                HOST_TIME.clear()
                GRAPH_TREES.clear()
                start = time.perf_counter()
                model.generate(prompt, **kwargs)
                sync_now(device)
                times[mode].append(time.perf_counter() - start)
                flush_reports()
                ours[mode].append(host_parts(HOST_TIME))
                trees[mode].append(dict(GRAPH_TREES))
                for report in providers["_reports"]:
                    details[mode].append(report.capture.detail)
                    if report.summary.risk_score is not None:
                        risks[mode].append(report.summary.risk_score)
        if device.startswith("cuda") and args.syncs:
            for mode in modes:
                set_mode(mode, providers)
                for index in range(args.gpus):
                    torch.cuda.reset_peak_memory_stats(index)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        model.generate(prompt, **kwargs)
                    finally:
                        torch.cuda.set_sync_debug_mode(0)
                    torch.cuda.synchronize()
                result.syncs[mode] = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
                peaks = [torch.cuda.max_memory_allocated(index) / 2**20 for index in range(args.gpus)]
                result.peak_mib[mode], result.peak_devices[mode] = max(peaks), peaks
    set_mode("plain", providers)

    base = statistics.median(times["plain"])
    for mode in modes:
        result.all_s[mode] = times[mode]
        result.median_s[mode] = statistics.median(times[mode])
        result.min_s[mode] = min(times[mode])
        result.paired[mode] = statistics.median(t / p for t, p in zip(times[mode], times["plain"]))
        result.host_parts[mode] = {k: statistics.median(p[k] for p in ours[mode]) for k in ours[mode][0]}
        result.host_ms[mode] = result.host_parts[mode]["total"]
        if args.graph_trees:
            counts = trees[mode]
            result.graph_trees[mode] = {
                "records": sum(c.get("records", 0) for c in counts),
                "misses": statistics.median(c.get("misses", 0) for c in counts),
                "miss_ms": statistics.median(c.get("miss_us", 0) for c in counts) / 1000,
            }
        result.ratio[mode] = result.median_s[mode] / base
        result.same_output[mode] = bool(torch.equal(outputs[mode], outputs["plain"]))
        if details[mode]:
            result.full_share[mode] = sum(d == "full" for d in details[mode]) / len(details[mode])
        if risks[mode]:
            result.risk[mode] = statistics.median(risks[mode])
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def machine() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def label(r: Result) -> str:
    return r.model + (f" on {r.gpus} GPUs" if r.gpus > 1 else "")


def table(results: list[Result]) -> str:
    lines = [
        "| model | compiled | batch | prompt | new tokens | mode | median s | ratio (medians) | ratio (paired) | "
        "paired 95% interval | CoreVital host ms / generation | host µs / step | host ms / plain ms | same tokens | "
        "signals | on_risk: full / risk | added syncs / generation | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for mode, median in r.median_s.items():
            syncs = r.syncs.get(mode)
            added = "" if syncs is None else str(syncs - r.syncs.get("plain", 0))
            peak = f"{r.peak_mib[mode]:.0f}" if mode in r.peak_mib else ""
            if len(r.peak_devices.get(mode, [])) > 1:
                peak = " / ".join(f"{p:.0f}" for p in r.peak_devices[mode])
            low, high = paired_interval(r.all_s[mode], r.all_s["plain"])
            share = r.host_ms[mode] / (r.median_s["plain"] * 1000)
            risky = f"{r.full_share[mode]:.0%} / {r.risk.get(mode, float('nan')):.2f}" if mode in r.full_share else ""
            lines.append(
                f"| {label(r)} | {r.compiled or 'no'} | {r.batch} | {r.prompt_len} | {r.new_tokens} | "
                f"{shown(r, mode)} | "
                f"{median:.3f} | {r.ratio[mode]:.3f} | {r.paired[mode]:.3f} | {low:.3f}–{high:.3f} | "
                f"{r.host_ms[mode]:.1f} | {r.host_ms[mode] * 1000 / max(1, r.new_tokens):.0f} | {share:.1%} | "
                f"{'yes' if r.same_output[mode] else ('NO' if r.plain_reproducible else 'no (plain vs plain: no)')} | "
                f"{','.join(r.signals.get(mode, []))} | {risky} | {added} | {peak} |"
            )
    return "\n".join(lines)


def shown(r: Result, mode: str) -> str:
    """The mode as the tables show it: marked when its telemetry was built and emitted in the background."""
    return f"{mode} (background)" if r.background and mode != "plain" else mode


def parts_table(results: list[Result]) -> str:
    """Where CoreVital's host time goes: median ms per generation of each part (exclusive)."""
    names = ("steps", "start", "transfer", "build", "emit", "total", "background")
    lines = [
        "| model | compiled | batch | prompt | mode | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in results:
        for mode, parts in r.host_parts.items():
            if mode != "plain":
                lines.append(
                    f"| {label(r)} | {r.compiled or 'no'} | {r.batch} | {r.prompt_len} | {shown(r, mode)} | "
                    + " | ".join(f"{parts.get(n, 0.0):.1f}" for n in names)
                    + " |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--models", default="smollm2,tiny-llama")
    parser.add_argument("--modes", default="off,summary,full")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--batches", default=None, help="comma list of batch sizes; overrides --batch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--pin-cpu", type=int, default=None, help="run on this CPU core only (less host jitter)")
    parser.add_argument("--render", nargs="+", default=None, help="print the table of earlier --json-out files")
    parser.add_argument("--cache", default=None, choices=["static"], help="static: transformers compiles the forward")
    parser.add_argument("--compile-forward", action="store_true", help="model.forward = torch.compile(model.forward)")
    parser.add_argument("--logit-scale", type=float, default=1.0, help="multiply the final norm's weight by this")
    parser.add_argument("--gpus", type=int, default=1, help="split each model over this many GPUs (device_map)")
    parser.add_argument("--no-syncs", dest="syncs", action="store_false", help="skip the sync count and peak memory")
    parser.add_argument("--background", action="store_true", help="background_emit=True (flushed after each round)")
    parser.add_argument("--graph-trees", action="store_true", help="count CUDA-graph tree recordings and failed checks")
    parser.add_argument("--finish-parts", action="store_true", help="split the read-back's host time into its parts")
    args = parser.parse_args(argv)
    if args.render:
        loaded = [Result(**r) for path in args.render for r in json.load(open(path))["results"]]
        print(table(loaded) + "\n\n" + parts_table(loaded))
        return 0
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.modes = [m for m in args.modes.split(",") if m]
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
        torch.set_num_threads(1)  # more threads than cores would spin against each other
    if args.finish_parts:  # before time_our_host_work: "transfer" then includes the parts
        time_finish_parts()
    time_our_host_work()
    if args.graph_trees:
        count_graph_trees()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]
    print(json.dumps(machine()), flush=True)
    results = []
    for name in args.models.split(","):
        for batch in batches:
            args.batch = batch
            result = bench(name, args)
            results.append(result)
            print("\n".join(table([result]).splitlines()[2:]), flush=True)
            if args.json_out:  # what finished so far survives a run cut short
                with open(args.json_out, "w") as handle:
                    json.dump({"machine": machine(), "results": [asdict(r) for r in results]}, handle, indent=2)
    print()
    print(table(results))
    print()
    print(parts_table(results))
    for r in results:
        for mode, parts in r.host_parts.items():
            detail = {k: round(v, 2) for k, v in parts.items() if k.startswith(("fin.", "step."))}
            if detail:
                print(f"read-back and step parts, batch {r.batch}, {mode} (ms a generation):", json.dumps(detail))
        if r.graph_trees:
            print(
                f"CUDA-graph trees, batch {r.batch} (recordings in all rounds, failed checks a generation):",
                json.dumps(r.graph_trees),
            )
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"machine": machine(), "results": [asdict(r) for r in results]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
