"""Compiled generation: when the decoding forward runs under ``torch.compile``, the capture keeps to the logits.

Hooks inside a compiled forward are traced into it: our Python (the bound
call's context, the kept references) breaks the graph and changes its guards,
so dynamo recompiles every step until its limit and the forward runs slower
than without compilation. A compiled forward therefore gets no taps at all;
the logit signals come from the logits processor, which runs outside the graph,
and the report says which layer signals are missing and why.
"""

from __future__ import annotations

from typing import Any

import torch

#: ``transformers`` compiles the decoding forward itself for these caches (``_valid_auto_compile_criteria``).
_STATIC_CACHES = frozenset({"static", "offloaded_static", "sliding_window", "hybrid", "hybrid_chunked"})

USER_COMPILED = "compiled forward (torch.compile): layer capture off, logit signals only"
AUTO_COMPILED = "compiled forward ({cache} cache, compiled by transformers): layer capture off, logit signals only"


def _any_compiled(model: torch.nn.Module) -> bool:
    """Whether a module's forward or call was replaced by a ``torch.compile`` one (``m.forward = torch.compile(...)``,
    ``m.compile()``), anywhere in the model. Looked at every call (compiling needs no structural change), so
    through the modules' own dictionaries: a fifth of the time of ``modules()``, whose generators nest."""
    stack: list[torch.nn.Module | None] = [model]
    while stack:
        module = stack.pop()
        if module is None:  # a registered empty slot
            continue
        state = module.__dict__
        forward = state.get("forward")
        if state.get("_compiled_call_impl") is not None or (
            forward is not None and getattr(forward, "_torchdynamo_orig_callable", None) is not None
        ):
            return True
        stack.extend(state["_modules"].values())
    return False


def compiled_forward(model: Any, generation_config: Any, model_kwargs: dict | None) -> str | None:
    """Why the decoding forward of this ``generate`` call will run compiled, or None when it runs eagerly."""
    if isinstance(model, torch.nn.Module) and _any_compiled(model):
        return USER_COMPILED
    if generation_config is None:
        return None
    cache = getattr(generation_config, "cache_implementation", None)
    auto = getattr(model, "_valid_auto_compile_criteria", None)
    if callable(auto) and model_kwargs is not None:
        will = bool(auto(model_kwargs, generation_config))  # transformers' own decision, cache object included
    else:  # no cache object to ask about: transformers' criteria from the configuration alone
        compile_config = getattr(generation_config, "compile_config", None)
        hardware = getattr(getattr(model, "device", None), "type", "cpu") != "cpu" or bool(
            getattr(compile_config, "_compile_all_devices", False)
        )
        will = cache in _STATIC_CACHES and hardware and not getattr(generation_config, "disable_compile", False)
    if not will:
        return None
    if cache is None:  # a compileable cache passed in by the caller
        cache = "static"
    return AUTO_COMPILED.format(cache=cache)
