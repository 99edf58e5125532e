"""Seeing attention without changing it: wrap the attention functions transformers dispatches to.

Every supported architecture calls ``ALL_ATTENTION_FUNCTIONS.get_interface(...)``
and then the returned function with ``(module, query, key, value, mask, **kwargs)``.
While instrumented, each non-eager entry of the global registry (sdpa, flash,
flex, ...) is replaced by a wrapper that calls the original *first*, returns
its result untouched, and only then hands ``query``, ``key`` and the mask to
the attention listener of the taps bound to this context, if any. Eager
attention is not in the registry; its weights come from a forward hook on the
attention module instead (see ``_model_taps``). Inside a compiled forward the
wrapper is the original call alone (see ``_compiled``).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, Protocol

import torch


class AttentionListener(Protocol):
    """Receives each intercepted attention call, after the model's own attention ran."""

    def on_attention(self, module: Any, query: Any, key: Any, mask: Any, kwargs: dict) -> None:
        """Keep (or reduce) what the attention call was handed; never raises."""


class BoundTaps(Protocol):
    """The taps of the call running in a context: None as listener when no attention is captured."""

    @property
    def attention_listener(self) -> AttentionListener | None:
        """The listener to hand attention calls to, or None when no attention is captured."""


#: The taps of the generation running in this context.
ACTIVE_TAPS: contextvars.ContextVar[BoundTaps | None] = contextvars.ContextVar("corevital_active_taps", default=None)

_installed: dict[str, Callable] = {}


@functools.cache
def _wrap(original: Callable) -> Callable:
    """One wrapper per original for the process's life: instrumenting again puts the same object back, so a compiled
    forward (whose guards name it) finds the graph compiled for it instead of recompiling."""

    @functools.wraps(original)
    def corevital_attention(
        module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *args: Any, **kwargs: Any
    ) -> Any:
        result = original(module, query, key, value, attention_mask, *args, **kwargs)
        if torch.compiler.is_compiling():  # traced into a compiled forward: add nothing to its graph
            return result
        taps = ACTIVE_TAPS.get()
        if taps is not None:
            listener = taps.attention_listener
            if listener is not None:
                listener.on_attention(module, query, key, attention_mask, kwargs)
        return result

    corevital_attention.__corevital_original__ = original  # type: ignore[attr-defined]
    return corevital_attention


def _registry() -> dict[str, Any]:
    """transformers' global attention registry (its values inferred as plain ``function``, so typed Any here)."""
    from transformers.modeling_utils import AttentionInterface

    return AttentionInterface._global_mapping


def install() -> None:
    """Wrap every registered attention function (once), so attention is seen whatever the implementation."""
    mapping = _registry()
    for name, function in list(mapping.items()):
        if name in _installed or getattr(function, "__corevital_original__", None) is not None:
            continue
        _installed[name] = function
        mapping[name] = _wrap(function)


def uninstall() -> None:
    """Put the original attention functions back."""
    mapping = _registry()
    for name, original in list(_installed.items()):
        current = mapping.get(name)
        if getattr(current, "__corevital_original__", None) is original:
            mapping[name] = original
        _installed.pop(name, None)


def installed() -> bool:
    """Whether the wrappers are in place (without them only eager attention can be seen)."""
    return bool(_installed)
