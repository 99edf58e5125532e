"""`corevital run --backend vllm` on the session's in-process engine: one short generation, its span, report and
text view, and the run list of the viewer reading the files it wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.cli import _vllm_run, build_parser, main
from opentelemetry_instrumentation_corevital.viewer import build_index, runlist

from .conftest import VLLM_MODEL

#: The model folder's name: spans and reports never carry its path (its config.json names no hub repo).
VLLM_NAME = os.path.basename(VLLM_MODEL)

pytestmark = pytest.mark.slow

PROMPT = "Name three colours."


def _records(path: Path, key: str, scopes: str, items: str) -> list[dict]:
    return [
        item
        for line in path.read_text(encoding="utf-8").splitlines()
        for block in json.loads(line)[key]
        for scope in block[scopes]
        for item in scope[items]
    ]


def _attributes(span: dict) -> dict:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in span["attributes"]}


def test_vllm_backend_generates_once_and_prints_the_report(llm, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "corevital-cli")  # the CLI sets it when unset; restored afterwards
    out = tmp_path / "data"
    argv = ["run", "--backend", "vllm", "--prompt", PROMPT, "--max-new-tokens", "8", "--out", str(out), "--quiet"]
    assert _vllm_run.run(build_parser().parse_args(argv), llm=llm) == 0
    stdout = capsys.readouterr().out

    (span,) = _records(out / "traces.jsonl", "resourceSpans", "scopeSpans", "spans")
    attrs = _attributes(span)
    messages = [{"role": "user", "content": PROMPT}]
    encoded = llm.get_tokenizer().apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    prompt_ids = encoded["input_ids"]
    assert span["name"] == f"chat {VLLM_NAME}"
    assert span["kind"] == 1  # INTERNAL: the engine runs in this process
    assert attrs["gen_ai.provider.name"] == "vllm"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == VLLM_NAME
    assert attrs["gen_ai.usage.input_tokens"] == str(len(prompt_ids))
    assert attrs["gen_ai.usage.output_tokens"] == "8"

    (record,) = [
        r
        for r in _records(out / "logs.jsonl", "resourceLogs", "scopeLogs", "logRecords")
        if r.get("eventName") == "corevital.generation.report"
    ]
    assert record["spanId"] == span["spanId"]
    report = json.loads(record["body"]["stringValue"])
    validate_report(report)
    assert report["model"]["name"] == VLLM_NAME and report["model"]["num_layers"] == 30
    assert report["usage"] == {**report["usage"], "input_tokens": len(prompt_ids), "output_tokens": 8}
    assert report["capture"]["signals"] == ["logits", "tokens", "hidden"]
    assert stdout.splitlines()[0] == f"corevital · {VLLM_NAME} · chat · greedy_search · 8 new tokens · cpu float32"
    assert f"risk      {report['summary']['risk_score']:.2f} (" in stdout
    assert sum(1 for line in stdout.splitlines() if line.startswith("  L")) == 30  # one line per decoder layer

    (run,) = build_index([str(out)]).runs
    (row,) = runlist.rows([run])
    assert (row["provider"], row["model"], row["output tokens"]) == ("vllm", VLLM_NAME, 8)


def test_vllm_backend_takes_the_model_name_given(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "corevital-cli")
    out = tmp_path / "data"
    argv = ["run", "--backend", "vllm", "--prompt", PROMPT, "--max-new-tokens", "2", "--out", str(out), "--quiet"]
    assert _vllm_run.run(build_parser().parse_args([*argv, "--model-name", "SmolLM2-135M-Instruct"]), llm=llm) == 0
    (span,) = _records(out / "traces.jsonl", "resourceSpans", "scopeSpans", "spans")
    assert span["name"] == "chat SmolLM2-135M-Instruct"
    assert _attributes(span)["gen_ai.request.model"] == "SmolLM2-135M-Instruct"


def test_vllm_backend_refuses_a_model_that_is_not_a_folder(tmp_path, capsys):
    assert main(["run", "--backend", "vllm", "--model", str(tmp_path), "--out", str(tmp_path)]) == 1
    message = f"--model {tmp_path}: --backend vllm needs a model folder with a config.json"
    assert capsys.readouterr().err == f"corevital run: error: {message}\n"
    assert os.listdir(tmp_path) == []  # nothing written before the model is known
