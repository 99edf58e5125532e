"""``corevital run``: generate once with a real model and show what CoreVital saw."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .._config import Options
from .._errors import CoreVitalError
from ..report import Report
from . import _models, _telemetry
from ._flags import add_flags, non_negative_float, parsed, positive_int
from ._perf import measure_overhead
from ._progress import progress
from ._render import render

DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."


def add_parser(subparsers: Any) -> None:
    """Register ``corevital run`` with a flag for every option."""
    p = subparsers.add_parser(
        "run",
        help="generate with a model and print CoreVital's report",
        description="Generate once with a Hugging Face model, instrumented, and print the report. "
        "Telemetry goes to OTLP JSON lines files in --out unless --exporter says otherwise.",
    )
    p.add_argument(
        "--model", help="model folder, .gguf file or hub id (default: the embedded SmolLM2-135M-Instruct GGUF)"
    )
    p.add_argument("--gguf-file", help="GGUF file name inside the --model folder")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (default: %(default)r)")
    chat = p.add_mutually_exclusive_group()
    chat.add_argument(
        "--chat",
        dest="chat",
        action="store_true",
        default=None,
        help="apply the chat template (default when the tokenizer has one)",
    )
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="feed the prompt as plain text")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate (default: %(default)s)")
    add_flags(p, Options)
    p.add_argument(
        "--perf",
        choices=("off", "strict"),
        default="off",
        help="strict: warm up, time plain and instrumented generate in this process, and record the ratio",
    )
    p.add_argument("--perf-runs", type=positive_int, default=3, help="timed runs of each kind with --perf strict")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: %(default)s)")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="(default: float32 on CPU, bfloat16 on CUDA)",
    )
    p.add_argument("--seed", type=int, default=None, help="torch seed, for reproducible sampling")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=non_negative_float, default=None)
    p.add_argument("--top-p", type=non_negative_float, default=None)
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--repetition-penalty", type=non_negative_float, default=None)
    _telemetry.add_arguments(p, non_negative_float)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the text view")
    p.add_argument("--quiet", action="store_true", help="no progress indicator")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate once, instrumented, and print the report; the exit code."""
    # tqdm reads this when transformers imports it; our own progress indicator is enough.
    os.environ.setdefault("TQDM_DISABLE", "1")
    options = parsed(args, Options)
    settings = _telemetry.settings(args)
    source = _models.resolve_model(args.model, args.gguf_file)
    device = _models.resolve_device(args.device)
    dtype = _models.resolve_dtype(args.dtype, device)

    from ..instrument import CoreVitalInstrumentor, generation_context

    reports: list[Report] = []
    instrumentor = CoreVitalInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    # The CLI keeps its configuration for the whole command: --perf strict re-instruments, and the
    # Prometheus endpoint, W&B run and files must outlive that.
    with _telemetry.configure_from(settings) as config:
        files = [str(f) for f in config.files]

        def instrument_for_output() -> None:
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            instrumentor.instrument(report_log=True, **config.instrument_kwargs(on_report=reports.append), **options)

        instrument_for_output()
        show = not args.quiet
        try:
            with progress(f"loading {source.display_name}", enabled=show):
                tokenizer, model = _models.load(source, device, dtype)
            inputs = _encode(tokenizer, args.prompt, args.chat)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            generate_kwargs = _generate_kwargs(args, tokenizer)
            import torch

            if args.seed is not None:
                torch.manual_seed(args.seed)
            perf = None
            if args.perf == "strict":
                with progress(f"timing plain and instrumented generate ({args.perf_runs} runs each)", enabled=show):
                    perf = measure_overhead(model, inputs, generate_kwargs, args.perf_runs, args.seed, options)
                instrument_for_output()
            if args.seed is not None:
                torch.manual_seed(args.seed)
            with progress(f"generating up to {args.max_new_tokens} tokens", enabled=show):
                with generation_context(seed=args.seed, perf=perf):
                    output = model.generate(**inputs, **generate_kwargs)
            prompt_len = inputs["input_ids"].shape[1]
            text = tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
            if not reports:
                raise CoreVitalError(
                    "the generation finished but produced no report; rerun with --capture summary and -v"
                )
            report = reports[-1]
            if args.json:
                sys.stdout.write(report.to_json(indent=2) + "\n")
            else:
                sys.stdout.write(render(report, text, files) + "\n")
            sys.stdout.flush()
            _serve(config.prometheus_url, _telemetry.serve_seconds(args, config))
        finally:
            instrumentor.uninstrument()  # then leaving the block flushes and stops every exporter
    return 0


def _serve(url: str | None, seconds: float) -> None:
    """Keep the Prometheus endpoint up so that a scraper sees this run's metrics."""
    if url is None or seconds <= 0:
        return
    sys.stderr.write(f"serving metrics on {url} for {seconds:g} s (Ctrl-C stops)\n")
    sys.stderr.flush()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass


def _encode(tokenizer: Any, prompt: str, chat: bool | None) -> dict:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if chat and not has_template:
        raise CoreVitalError("--chat was given but this tokenizer has no chat template; use --no-chat")
    if has_template and chat is not False:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return dict(encoded)
    return dict(tokenizer(prompt, return_tensors="pt"))


def _greedy_kwargs(tokenizer: Any, max_new_tokens: int) -> dict[str, Any]:
    """``generate()`` keywords for greedy decoding, padding with the tokenizer's pad token when it has one."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    return kwargs


def _generate_kwargs(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    kwargs = _greedy_kwargs(tokenizer, args.max_new_tokens)
    kwargs["do_sample"] = bool(args.do_sample)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    if not args.do_sample and any(v is not None for v in sampling.values()):
        raise CoreVitalError("--temperature, --top-p and --top-k only apply with --do-sample")
    kwargs.update({k: v for k, v in sampling.items() if v is not None})
    if args.repetition_penalty is not None:
        kwargs["repetition_penalty"] = args.repetition_penalty
    return kwargs
