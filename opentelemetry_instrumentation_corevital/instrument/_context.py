"""Context variables shared by the wrappers, kept free of torch so importing the package stays light."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..report import Report
    from ._call import GenerationCall

#: The instrumented call in progress in this context, if any.
ACTIVE_CALL: contextvars.ContextVar[GenerationCall | None] = contextvars.ContextVar(
    "corevital_active_call", default=None
)


def active_call(model: Any = None) -> GenerationCall | None:
    """The instrumented call in progress in this context (only if it runs ``model``, when given), else None."""
    call = ACTIVE_CALL.get()
    return call if call is not None and (model is None or call.model is model) else None


REQUEST_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "corevital_request_context", default=None
)


class Watcher(Protocol):
    """What a monitor is to the calls it watches: option overrides in, reports out."""

    @property
    def overrides(self) -> Mapping[str, Any]:
        """The options this monitor sets for the generations it watches."""

    def receive(self, report: Report) -> None:
        """Take one watched generation's finished report."""


#: Monitors watching generations started in this context (innermost last): option overrides and report sinks.
WATCHERS: contextvars.ContextVar[tuple[Watcher, ...]] = contextvars.ContextVar("corevital_watchers", default=())


@contextmanager
def generation_context(
    *, seed: int | None = None, attributes: Mapping[str, Any] | None = None, perf: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Tell the instrumentation what ``generate`` cannot see.

    ``seed`` becomes ``gen_ai.request.seed``; ``attributes`` are added to every
    generation span started inside the block (never to metrics, so their
    cardinality is the caller's business); ``perf`` (``method``, ``runs``,
    ``plain_s``, ``instrumented_s``, ``ratio``) is an overhead measurement made
    beforehand, recorded in the report and as ``corevital.perf.*`` attributes.
    """
    token = REQUEST_CONTEXT.set(
        {"seed": seed, "attributes": dict(attributes or {}), "perf": dict(perf) if perf else None}
    )
    try:
        yield
    finally:
        REQUEST_CONTEXT.reset(token)
