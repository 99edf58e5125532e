"""``corevital run``: generate once with a real model and show what CoreVital saw.

The parser and the ``hf`` backend (a Hugging Face model in this process) live
here; ``--backend vllm`` and ``--backend openai`` are :mod:`._vllm_run` and
:mod:`._openai_run`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._config import Options
from .._errors import CoreVitalError
from . import _backends, _models, _telemetry
from ._flags import add_flags, non_negative_float, parsed, positive_int
from ._progress import progress

DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."
DEFAULT_PERF_RUNS = 3


def add_parser(subparsers: Any) -> None:
    """Register ``corevital run`` with a flag for every option."""
    p = subparsers.add_parser(
        "run",
        help="generate with a model and print CoreVital's report",
        description="Generate once, instrumented, and print the report: with a Hugging Face model (--backend hf), "
        "an in-process vLLM engine (--backend vllm) or an OpenAI-compatible server (--backend openai). "
        "Telemetry goes to OTLP JSON lines files in --out unless --exporter says otherwise. "
        "A flag that does not apply to the chosen backend is an error.",
    )
    p.add_argument(
        "--backend",
        choices=_backends.BACKENDS,
        default=_backends.HF,
        help="hf: a Hugging Face model in this process; vllm: an in-process vllm.LLM (needs vLLM installed); "
        "openai: one request to the server at --base-url (default: %(default)s)",
    )
    p.add_argument("--base-url", help="openai: the server's OpenAI API root, such as http://127.0.0.1:8000/v1")
    p.add_argument(
        "--model",
        help="hf: model folder, .gguf file or hub id (default: the embedded SmolLM2-135M-Instruct GGUF); "
        "vllm: model folder (default: the embedded SmolLM2 converted to safetensors, cached in "
        f"{_models.CONVERTED_HOME}); openai: model name (default: the server's first)",
    )
    p.add_argument("--gguf-file", help="hf: GGUF file name inside the --model folder")
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
    # hf-only flags default to None, so that giving one to another backend is seen (and refused).
    p.add_argument(
        "--perf",
        choices=("off", "strict"),
        default=None,
        help="hf: strict: warm up, time plain and instrumented generate in this process, and record the ratio",
    )
    p.add_argument(
        "--perf-runs",
        type=positive_int,
        default=None,
        help=f"timed runs of each kind with --perf strict (default: {DEFAULT_PERF_RUNS})",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="hf (default: auto)")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default=None,
        help="hf: (default: float32 on CPU, bfloat16 on CUDA); vllm: (default: float32)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed, for reproducible sampling")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=non_negative_float, default=None)
    p.add_argument("--top-p", type=non_negative_float, default=None)
    p.add_argument("--top-k", type=positive_int, default=None, help="hf, vllm")
    p.add_argument("--repetition-penalty", type=non_negative_float, default=None, help="hf, vllm")
    _telemetry.add_arguments(p, non_negative_float)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the text view")
    p.add_argument("--quiet", action="store_true", help="no progress indicator")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate once with the chosen backend, instrumented, and print the report; the exit code."""
    _backends.check_flags(args)
    _backends.sampling(args)
    if args.backend == _backends.OPENAI:
        from . import _openai_run

        return _openai_run.run(args)
    if args.backend == _backends.VLLM:
        from . import _vllm_run

        return _vllm_run.run(args)
    return _run_hf(args)


def _run_hf(args: argparse.Namespace) -> int:
    """Generate once with a Hugging Face model in this process."""
    # tqdm reads this when transformers imports it; our own progress indicator is enough.
    os.environ.setdefault("TQDM_DISABLE", "1")
    options = parsed(args, Options)
    settings = _telemetry.settings(args)
    source = _models.resolve_model(args.model, args.gguf_file)
    device = _models.resolve_device(args.device or "auto")
    dtype = _models.resolve_dtype(args.dtype or "auto", device)

    from ..instrument import generation_context
    from ._perf import measure_overhead
    from ._session import instrumented

    with instrumented(settings, options) as session:
        show = not args.quiet
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
            runs = args.perf_runs or DEFAULT_PERF_RUNS
            with progress(f"timing plain and instrumented generate ({runs} runs each)", enabled=show):
                perf = measure_overhead(model, inputs, generate_kwargs, runs, args.seed, options)
            session.instrument()
        if args.seed is not None:
            torch.manual_seed(args.seed)
        with progress(f"generating up to {args.max_new_tokens} tokens", enabled=show):
            with generation_context(seed=args.seed, perf=perf):
                output = model.generate(**inputs, **generate_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        session.show(args, tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True))
    return 0


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
    kwargs.update(_backends.sampling(args))
    if args.repetition_penalty is not None:
        kwargs["repetition_penalty"] = args.repetition_penalty
    return kwargs
