"""vLLM in-process: one engine (SmolLM2-135M-Instruct, float32, eager, CPU) for the whole test session.

These tests run in the vLLM virtualenv (``make test`` runs ``.venv-vllm/bin/python -m pytest tests/vllm``); the
main test run skips this folder. The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the
in-memory exporters of ``TelemetryCapture`` see the spans the engine emits.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

from opentelemetry_instrumentation_corevital import testing  # noqa: E402

#: The converted SmolLM2 folder (``make test`` makes it); the same path as tests/_services.py's.
VLLM_MODEL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".cache", "smollm2-135m-instruct-hf"
)


@pytest.fixture(scope="session")
def llm():
    """One in-process vLLM engine, created while instrumented (so its decoder layers can be hooked later)."""
    from vllm import LLM

    if not os.path.isfile(os.path.join(VLLM_MODEL, "config.json")):
        pytest.fail(f"the converted SmolLM2 model is missing at {VLLM_MODEL}: run `make test` (it converts it)")
    with testing.TelemetryCapture(capture="summary"):
        engine = LLM(model=VLLM_MODEL, enforce_eager=True, dtype="float32", max_model_len=2048, seed=0)
    return engine
