"""``corevital run --backend openai``: one request to an OpenAI-compatible server through the instrumented client.

The ``openai`` client is instrumented as ``generate`` is for ``hf``: the
request becomes a CLIENT span and a report built from the log-probabilities
the server returns. The command asks for the top :data:`REQUEST_LOGPROBS` of
them per token (the ``request_logprobs`` option) unless that option was set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._config import Options, given
from .._errors import CoreVitalError
from . import _backends, _telemetry
from ._flags import parsed
from ._progress import progress

#: Top log-probabilities per token the command asks for unless the request_logprobs option says otherwise.
REQUEST_LOGPROBS = 5
MISSING_OPENAI = (
    "--backend openai needs the openai client: pip install 'opentelemetry-instrumentation-corevital[openai]'"
)


def run(args: argparse.Namespace) -> int:
    """Send the prompt as one request (chat unless ``--no-chat``) and print the report of its CLIENT span."""
    try:
        import openai
    except ImportError:
        raise CoreVitalError(MISSING_OPENAI) from None
    options = parsed(args, Options)
    if not given(Options, "request_logprobs", options):
        options["request_logprobs"] = REQUEST_LOGPROBS
    settings = _telemetry.settings(args)
    url = args.base_url
    client = openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY") or "none")
    with _server_errors(url):
        model = args.model or first_model(client, url)
    chat, kwargs = request_kwargs(args, model)

    from ._session import instrumented

    with instrumented(settings, options) as session:
        with progress(f"asking {model} at {url} for up to {args.max_new_tokens} tokens", enabled=not args.quiet):
            with _server_errors(url):
                if chat:
                    response = client.chat.completions.create(**kwargs)
                    text = response.choices[0].message.content if response.choices else None
                else:
                    response = client.completions.create(**kwargs)
                    text = response.choices[0].text if response.choices else None
        session.show(args, text, served_by=url)
    return 0


def first_model(client: Any, url: str) -> str:
    """The first model the server lists at ``/models``: what it serves when the user names none."""
    models = client.models.list().data
    if not models:
        raise CoreVitalError(f"{url}/models lists no model; name one with --model")
    return str(models[0].id)


def request_kwargs(args: argparse.Namespace, model: str) -> tuple[bool, dict[str, Any]]:
    """(chat or not, the keywords of ``create()``): the request to send; greedy (temperature 0) unless --do-sample."""
    chat = args.chat is not False
    kwargs: dict[str, Any] = {"model": model, "max_tokens": args.max_new_tokens}
    if chat:
        kwargs["messages"] = [{"role": "user", "content": args.prompt}]
    else:
        kwargs["prompt"] = args.prompt
    kwargs.update(_backends.sampling(args) if args.do_sample else {"temperature": 0})
    if args.seed is not None:
        kwargs["seed"] = args.seed
    return chat, kwargs


@contextmanager
def _server_errors(url: str) -> Iterator[None]:
    """The client's connection and HTTP errors as one line naming the server."""
    import openai

    try:
        yield
    except openai.APIConnectionError as exc:
        raise CoreVitalError(f"cannot reach {url}: {exc.__cause__ or exc}") from exc
    except openai.APIStatusError as exc:
        raise CoreVitalError(f"{url} answered HTTP {exc.status_code}: {_message(exc)}") from exc


def _message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return str(body or exc.message).splitlines()[0]
