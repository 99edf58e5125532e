"""``corevital run --backend``: which engine generates, and which flags apply to which engine.

``hf`` loads a Hugging Face model in this process (the default); ``vllm`` runs
an in-process ``vllm.LLM``; ``openai`` sends one request to an
OpenAI-compatible server through the instrumented ``openai`` client. A flag
given to a backend it does not apply to is an error naming both, never
silently ignored.
"""

from __future__ import annotations

import argparse

from .._errors import ConfigurationError

HF = "hf"
VLLM = "vllm"
OPENAI = "openai"
BACKENDS = (HF, VLLM, OPENAI)

#: Flags that only some backends honour: (argparse dest, flag) -> those backends. Every other flag applies to all.
ONLY: dict[tuple[str, str], tuple[str, ...]] = {
    ("gguf_file", "--gguf-file"): (HF,),
    ("device", "--device"): (HF,),
    ("perf", "--perf"): (HF,),
    ("perf_runs", "--perf-runs"): (HF,),
    # vLLM and the OpenAI API have no layer selection, step stride or on-device stop.
    ("layers", "--layers"): (HF,),
    ("step_stride", "--step-stride"): (HF,),
    ("stop_on", "--stop-on"): (HF,),
    ("dtype", "--dtype"): (HF, VLLM),
    # Not parameters of the OpenAI API.
    ("top_k", "--top-k"): (HF, VLLM),
    ("repetition_penalty", "--repetition-penalty"): (HF, VLLM),
    ("base_url", "--base-url"): (OPENAI,),
}


def check_flags(args: argparse.Namespace) -> None:
    """Raise one clear error for a flag given to a backend that does not honour it (flags left out are None)."""
    for (dest, flag), backends in ONLY.items():
        if getattr(args, dest, None) is not None and args.backend not in backends:
            where = " and ".join(f"--backend {b}" for b in backends)
            raise ConfigurationError(f"{flag} does not apply to --backend {args.backend} (only to {where})")
    if args.backend == OPENAI and args.base_url is None:
        raise ConfigurationError("--backend openai needs --base-url, the server's OpenAI API root such as .../v1")


def sampling(args: argparse.Namespace) -> dict[str, float | int]:
    """The sampling flags the user gave (greedy unless --do-sample); they only apply with --do-sample."""
    given = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if given and not args.do_sample:
        raise ConfigurationError("--temperature, --top-p and --top-k only apply with --do-sample")
    return given
