"""The run list holds runs of every backend, read from files that real `corevital run`s wrote: a Hugging Face
generation (an INTERNAL span, provider huggingface) and a request to a real `vllm serve` through the instrumented
openai client (a CLIENT span, provider openai). vLLM's own spans are read in tests/vllm (in-process) and by the
`make demo-vllm` test (the server's SERVER span)."""

from __future__ import annotations

import json

import openai
import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index, load_run, runlist

from .conftest import corevital_run

pytestmark = pytest.mark.slow


def test_runs_of_the_hf_and_openai_backends_share_one_list(vllm_url, tmp_path):
    model = openai.OpenAI(base_url=vllm_url, api_key="none").models.list().data[0].id
    out = tmp_path / "corevital-data"
    corevital_run(out, "--max-new-tokens", "4")
    corevital_run(out, "--backend", "openai", "--base-url", vllm_url, "--max-new-tokens", "6")
    index = build_index([str(out)])
    assert index.problems == []
    assert index.counts["spans"] == 2 and index.counts["reports"] == 2
    kinds = {
        span["spanId"]: span["kind"]
        for line in (out / "traces.jsonl").read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    }
    openai_run, hf_run = index.runs  # newest first
    assert (openai_run.provider, openai_run.model, openai_run.operation) == ("openai", model, "chat")
    assert (hf_run.provider, hf_run.model, hf_run.operation) == ("huggingface", "SmolLM2-135M-Instruct.Q4_1", "chat")
    assert (kinds[openai_run.span_id], kinds[hf_run.span_id]) == (3, 1)  # CLIENT, INTERNAL
    rows = runlist.rows(index.runs)
    assert [(r["provider"], r["output tokens"], r["service"]) for r in rows] == [
        ("openai", 6, "corevital-cli"),
        ("huggingface", 4, "corevital-cli"),
    ]
    assert [r.model for r in runlist.filter_runs(index.runs, text="OPENAI")] == [model]
    for run in index.runs:
        detail = load_run(run)
        assert detail.problems == []
        assert detail.report is not None and detail.report["usage"]["output_tokens"] == run.output_tokens
        assert detail.span is not None and detail.span["gen_ai.provider.name"] == run.provider
