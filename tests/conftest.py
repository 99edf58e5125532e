"""Shared fixtures: tiny random models, the real SmolLM2, in-memory telemetry."""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest

#: tests/vllm run in the vLLM virtualenv (`make test` runs them there); this environment has no vLLM.
collect_ignore = [] if importlib.util.find_spec("vllm") is not None else ["vllm"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from opentelemetry_instrumentation_corevital import testing  # noqa: E402
from opentelemetry_instrumentation_corevital.cli import load_smollm2  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama():
    return testing.tiny_causal_lm("llama", seed=0)


@pytest.fixture(scope="session")
def tiny_tok():
    return testing.tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """(tokenizer, model) of the real SmolLM2-135M-Instruct, loaded once per test session."""
    return load_smollm2()


@pytest.fixture
def telemetry():
    with testing.TelemetryCapture(capture="summary") as capture:
        yield capture


@pytest.fixture(autouse=True)
def _never_leave_instrumented():
    yield
    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor

    if CoreVitalInstrumentor().is_instrumented_by_opentelemetry:
        CoreVitalInstrumentor().uninstrument()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny Llama and tokenizer saved as a model folder, for `corevital run --model` in a subprocess."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    testing.tiny_causal_lm("llama", seed=0).save_pretrained(folder)
    testing.tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def vllm_service(tmp_path_factory):
    """(base URL …/v1, folder of the server's CoreVital files) of one real `vllm serve` (CPU build, SmolLM2) with
    our plugin on, for the whole test session."""
    from ._services import vllm_server

    folder = str(tmp_path_factory.mktemp("vllm"))
    with vllm_server(folder) as url:
        yield url, os.path.join(folder, "corevital")


@pytest.fixture(scope="session")
def vllm_url(vllm_service):
    """Base URL (…/v1) of the session's `vllm serve`."""
    return vllm_service[0]
