"""The openai client's methods are wrapped while instrumented and exactly restored after (no server needed)."""

from __future__ import annotations

from openai.resources import chat, completions

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.instrument._openai_call import add_logprobs

METHODS = [
    (chat.Completions, "create"),
    (chat.AsyncCompletions, "create"),
    (completions.Completions, "create"),
    (completions.AsyncCompletions, "create"),
]


def test_instrument_wraps_the_four_create_methods_and_uninstrument_restores_them():
    originals = [owner.__dict__[name] for owner, name in METHODS]
    CoreVitalInstrumentor().instrument()
    try:
        assert [owner.__dict__[name].__wrapped__ for owner, name in METHODS] == originals
    finally:
        CoreVitalInstrumentor().uninstrument()
    assert [owner.__dict__[name] for owner, name in METHODS] == originals


def test_request_logprobs_adds_only_what_a_request_lacks():
    chat_kwargs = {"model": "m", "messages": []}
    assert add_logprobs(chat_kwargs, chat=True, top_k=0) is chat_kwargs
    assert add_logprobs(chat_kwargs, chat=True, top_k=4) == {**chat_kwargs, "logprobs": True, "top_logprobs": 4}
    asked = {**chat_kwargs, "logprobs": True, "top_logprobs": 2}
    assert add_logprobs(asked, chat=True, top_k=4) is asked
    assert add_logprobs({"prompt": "x"}, chat=False, top_k=3) == {"prompt": "x", "logprobs": 3}
    assert add_logprobs({"prompt": "x", "logprobs": 0}, chat=False, top_k=3) == {"prompt": "x", "logprobs": 0}
