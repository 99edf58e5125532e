"""``vllm serve`` with CoreVital's plugin on: the server's own span per request, joined to the caller's trace.

The session's server (``vllm_service``: CPU build, SmolLM2-135M-Instruct, float32, greedy here) runs with
``OTEL_INSTRUMENTATION_COREVITAL_VLLM=true`` and writes OTLP JSON lines; the engine process reports each request
from the full next-token distribution and the decoder layers, where the model runs.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from opentelemetry_instrumentation_corevital import names

pytestmark = pytest.mark.slow

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _value(v):
    (kind, inner), *_ = v.items()
    if kind == "arrayValue":
        return [_value(x) for x in inner.get("values", [])]
    return int(inner) if kind == "intValue" else inner


def _spans(folder):
    path = os.path.join(folder, "traces.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        span["attrs"] = {a["key"]: _value(a["value"]) for a in span.get("attributes", [])}
                        out.append(span)
    return out


def _wait_for(folder, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [s for s in _spans(folder) if predicate(s)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no matching span in {folder} after {timeout} s")


def _post(url, path, body, headers=None):
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def model(vllm_url):
    with urllib.request.urlopen(vllm_url + "/models", timeout=30) as response:
        return json.loads(response.read())["data"][0]["id"]


def test_chat_request_gets_a_server_span_under_the_callers_traceparent(vllm_service, model):
    url, folder = vllm_service
    parent = "b7ad6b7169203331"
    body = {"model": model, "messages": [{"role": "user", "content": "Name three colours."}]}
    response = _post(
        url,
        "/chat/completions",
        {**body, "max_tokens": 20, "temperature": 0},
        {"traceparent": f"00-{TRACE}-{parent}-01"},
    )
    (span,) = _wait_for(folder, lambda s: s["attrs"].get("gen_ai.response.id") == response["id"])
    attrs = span["attrs"]
    assert span["traceId"] == TRACE and span["parentSpanId"] == parent
    assert span["kind"] == 2  # SERVER
    assert span["name"] == f"chat {os.path.basename(model)}"  # the served path named as its folder, never the path
    assert attrs["gen_ai.provider.name"] == "vllm"
    assert attrs["gen_ai.usage.input_tokens"] == response["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == response["usage"]["completion_tokens"] == 20
    assert attrs["gen_ai.response.finish_reasons"] == [response["choices"][0]["finish_reason"]] == ["length"]
    assert 0.0 <= attrs["corevital.risk.score"] <= 1.0
    assert len(attrs["corevital.step.entropy"]) == len(attrs["corevital.step.surprisal"]) == 20
    assert attrs["corevital.layers.indices"] == list(range(30))  # hidden-state norms of every decoder layer
    assert attrs["corevital.timing.time_to_first_token"] > 0


def test_completion_without_traceparent_is_a_root_server_span(vllm_service, model):
    url, folder = vllm_service
    response = _post(
        url, "/completions", {"model": model, "prompt": "Water boils at", "max_tokens": 6, "temperature": 0}
    )
    # the engine runs each prompt of a completion request as a request of its own: "<response id>-<prompt index>"
    (span,) = _wait_for(folder, lambda s: s["attrs"].get("gen_ai.response.id") == response["id"] + "-0")
    assert not span.get("parentSpanId")
    assert span["kind"] == 2
    assert span["name"] == f"text_completion {os.path.basename(model)}"
    assert span["attrs"]["gen_ai.usage.output_tokens"] == 6


def _client_and_server(telemetry, folder):
    """(our CLIENT span, the server's span under it) of the one request just made."""
    (client,) = telemetry.spans()
    trace_id = f"{client.context.trace_id:032x}"
    (server,) = _wait_for(folder, lambda s: s["traceId"] == trace_id)
    return client, server


@pytest.mark.parametrize("stream", [False, True])
def test_instrumented_client_and_server_are_one_trace_both_with_signals(vllm_service, model, stream):
    import openai

    from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

    url, folder = vllm_service
    client = openai.OpenAI(base_url=url, api_key="none")
    messages = [{"role": "user", "content": "Name three colours."}]
    with TelemetryCapture(capture="summary", request_logprobs=5) as telemetry:
        response = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if stream:
            for _ in response:
                pass
    span, server = _client_and_server(telemetry, folder)
    assert span.kind.name == "CLIENT" and server["kind"] == 2
    assert server["parentSpanId"] == f"{span.context.span_id:016x}"
    (report,) = telemetry.reports
    assert span.attributes[names.RISK_SCORE] == report.summary.risk_score
    assert 0.0 <= server["attrs"][names.RISK_SCORE] <= 1.0
    # the client's steps come from the top-5 log-probabilities, the server's from the full distribution: the
    # chosen tokens' surprisal is the same number seen from both sides
    assert server["attrs"]["corevital.step.surprisal"] == pytest.approx(
        report.sequences[0].timeline.surprisal, abs=1e-3
    )
    assert server["attrs"][names.USAGE_OUTPUT_TOKENS] == report.sequences[0].output_tokens == 12


def test_a_traceparent_the_caller_sets_wins(vllm_service, model):
    import openai

    from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

    url, folder = vllm_service
    mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with TelemetryCapture(capture="summary"):
        response = openai.OpenAI(base_url=url, api_key="none").chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=3,
            temperature=0,
            extra_headers={"Traceparent": mine},
        )
    (server,) = _wait_for(folder, lambda s: s["attrs"].get("gen_ai.response.id") == response.id)
    assert server["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736" and server["parentSpanId"] == "00f067aa0ba902b7"
