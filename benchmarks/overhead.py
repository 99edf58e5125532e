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


def paired_interval(
    times: list[float], plain: list[float], level: float = 0.95, resamples: int = 2000
) -> tuple[float, float]:
    """Bootstrap interval of the paired ratio (median over rounds of mode / plain), resampling whole rounds."""
    ratios = [t / p for t, p in zip(times, plain)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1.0 - tail) * resamples))]


def build_model(name: str, device: str, dtype: torch.dtype) -> tuple[Any, int]:
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
    config = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config}[arch](**spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = spec["eos_token_id"]
    return model.eval(), config.vocab_size


HOST_TIME = [0.0]


def time_our_host_work() -> None:
    """Accumulate the host time spent in CoreVital's own code (per-step recorder, call start and end).

    On a launch-bound GPU this is what the instrumentation adds to each step;
    it is measured directly, so host jitter that swamps wall-clock ratios
    does not hide it.
    """
    from opentelemetry_instrumentation_corevital.capture import _recorder
    from opentelemetry_instrumentation_corevital.instrument import _call

    def timed(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                HOST_TIME[0] += time.perf_counter() - start

        return wrapper

    _recorder.StepRecorder.__call__ = timed(_recorder.StepRecorder.__call__)
    _recorder.RecordingProcessorList.__init__ = timed(_recorder.RecordingProcessorList.__init__)
    _call.GenerationCall.__init__ = timed(_call.GenerationCall.__init__)
    _call.GenerationCall.__enter__ = timed(_call.GenerationCall.__enter__)
    _call.GenerationCall.succeed = timed(_call.GenerationCall.succeed)


def telemetry_providers() -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return {
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
        "_exporter": exporter,
    }


def set_mode(mode: str, providers: dict[str, Any]) -> None:
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    instrumentor = CoreVitalInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if mode != "plain":
        kwargs = {k: v for k, v in providers.items() if not k.startswith("_")}
        instrumentor.instrument(capture=mode, **kwargs)
    providers["_exporter"].clear()


def sync_now(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(name: str, args: argparse.Namespace) -> Result:
    device = args.device
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model, vocab = build_model(name, device, dtype)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, min(vocab, 32000), (args.batch, args.prompt_len), generator=gen).to(device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt), max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
    )
    modes = ["plain", *args.modes]
    providers = telemetry_providers()
    result = Result(name, device, args.dtype, args.batch, args.prompt_len, args.tokens, args.rounds)
    outputs: dict[str, torch.Tensor] = {}

    with torch.inference_mode():
        for mode in modes:  # warm-up, and one output per mode for the equality check
            set_mode(mode, providers)
            for _ in range(args.warmup):
                outputs[mode] = model.generate(prompt, **kwargs)
            sync_now(device)
        set_mode("plain", providers)
        result.plain_reproducible = bool(torch.equal(model.generate(prompt, **kwargs), outputs["plain"]))
        times: dict[str, list[float]] = {m: [] for m in modes}
        ours: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in order:
                set_mode(mode, providers)
                gc.collect()
                sync_now(device)
                HOST_TIME[0] = 0.0
                start = time.perf_counter()
                model.generate(prompt, **kwargs)
                sync_now(device)
                times[mode].append(time.perf_counter() - start)
                ours[mode].append(HOST_TIME[0])
        if device.startswith("cuda"):
            for mode in modes:
                set_mode(mode, providers)
                torch.cuda.reset_peak_memory_stats()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        model.generate(prompt, **kwargs)
                    finally:
                        torch.cuda.set_sync_debug_mode(0)
                    torch.cuda.synchronize()
                result.syncs[mode] = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
                result.peak_mib[mode] = torch.cuda.max_memory_allocated() / 2**20
    set_mode("plain", providers)

    base = statistics.median(times["plain"])
    for mode in modes:
        result.all_s[mode] = times[mode]
        result.median_s[mode] = statistics.median(times[mode])
        result.min_s[mode] = min(times[mode])
        result.paired[mode] = statistics.median(t / p for t, p in zip(times[mode], times["plain"]))
        result.host_ms[mode] = statistics.median(ours[mode]) * 1000
        result.ratio[mode] = result.median_s[mode] / base
        result.same_output[mode] = bool(torch.equal(outputs[mode], outputs["plain"]))
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


def table(results: list[Result]) -> str:
    lines = [
        "| model | device | dtype | batch | prompt | new tokens | mode | median s | ratio (medians) | ratio (paired) | "
        "paired 95% interval | CoreVital host ms / generation | host ms / plain ms | same tokens | "
        "added syncs / generation | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for mode, median in r.median_s.items():
            syncs = r.syncs.get(mode)
            added = "" if syncs is None else str(syncs - r.syncs.get("plain", 0))
            peak = f"{r.peak_mib[mode]:.0f}" if mode in r.peak_mib else ""
            low, high = paired_interval(r.all_s[mode], r.all_s["plain"])
            share = r.host_ms[mode] / (r.median_s["plain"] * 1000)
            lines.append(
                f"| {r.model} | {r.device} | {r.dtype} | {r.batch} | {r.prompt_len} | {r.new_tokens} | {mode} | "
                f"{median:.3f} | {r.ratio[mode]:.3f} | {r.paired[mode]:.3f} | {low:.3f}–{high:.3f} | "
                f"{r.host_ms[mode]:.1f} | {share:.1%} | "
                f"{'yes' if r.same_output[mode] else ('NO' if r.plain_reproducible else 'no (plain vs plain: no)')} | "
                f"{added} | {peak} |"
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
    args = parser.parse_args(argv)
    if args.render:
        print(table([Result(**r) for path in args.render for r in json.load(open(path))["results"]]))
        return 0
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.modes = [m for m in args.modes.split(",") if m]
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
        torch.set_num_threads(1)  # more threads than cores would spin against each other
    time_our_host_work()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]
    print(json.dumps(machine()), flush=True)
    results = []
    for name in args.models.split(","):
        for batch in batches:
            args.batch = batch
            result = bench(name, args)
            results.append(result)
            print("\n".join(table([result]).splitlines()[2:]), flush=True)
    print()
    print(table(results))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"machine": machine(), "results": [asdict(r) for r in results]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
