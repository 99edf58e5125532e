"""`corevital run --backend openai` against a real `vllm serve` (the session's `vllm_url`), the default model of
`--backend vllm`, and the one clear line for every flag a backend does not honour.

Greedy decoding (temperature 0): the server answers the CLI's request exactly as it answers the same request sent
here without instrumentation, so the expected values come from that plain request.
"""

from __future__ import annotations

import json
import math
import sys

import openai
import pytest

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital._errors import ModelLoadError
from opentelemetry_instrumentation_corevital.cli import _models, _vllm_run

from ._services import free_port
from .test_cli import attribute, corevital, jsonl, spans_of

PROMPT = "Name three colours."
TOKENS = 12
OPENAI_RUN = ("run", "--backend", "openai", "--base-url")


@pytest.fixture(scope="module")
def served(vllm_url):
    """(base URL, the model it serves, a plain client)."""
    client = openai.OpenAI(base_url=vllm_url, api_key="none")
    return vllm_url, client.models.list().data[0].id, client


def _report(out):
    (line,) = jsonl(out / "logs.jsonl")
    (record,) = line["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert record["eventName"] == "corevital.generation.report"
    report = json.loads(record["body"]["stringValue"])
    validate_report(report)
    return record, report


@pytest.mark.slow
def test_openai_backend_sends_one_chat_request_and_prints_its_report(served, tmp_path):
    url, model, client = served
    plain = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=TOKENS,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
    )
    out = tmp_path / "data"
    result = corevital(
        *OPENAI_RUN, url, "--prompt", PROMPT, "--max-new-tokens", str(TOKENS), "--out", str(out), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    new_tokens = plain.usage.completion_tokens
    assert stdout.splitlines()[0] == (
        f"corevital · {model} · chat · greedy_search · {new_tokens} new tokens · served by {url}"
    )
    assert " ".join(plain.choices[0].message.content.split()) in " ".join(stdout.split())

    (span,) = spans_of(jsonl(out / "traces.jsonl"))
    assert span["kind"] == 3  # CLIENT
    assert span["name"] == f"chat {model}"
    assert attribute(span, "gen_ai.provider.name") == {"stringValue": "openai"}
    assert attribute(span, "gen_ai.operation.name") == {"stringValue": "chat"}
    assert attribute(span, "gen_ai.request.model") == {"stringValue": model}
    assert attribute(span, "gen_ai.usage.input_tokens") == {"intValue": str(plain.usage.prompt_tokens)}
    assert attribute(span, "gen_ai.usage.output_tokens") == {"intValue": str(new_tokens)}

    record, report = _report(out)
    assert record["traceId"] == span["traceId"] and record["spanId"] == span["spanId"]
    assert report["model"]["name"] == model
    assert report["request"]["operation"] == "chat" and report["request"]["temperature"] == 0
    assert report["usage"]["input_tokens"] == plain.usage.prompt_tokens
    assert report["usage"]["output_tokens"] == new_tokens
    # The CLI asked for the top 5 log-probabilities (request_logprobs); the signals are those the server returned.
    steps = plain.choices[0].logprobs.content
    assert report["sequences"][0]["timeline"]["surprisal"] == [-t.logprob / math.log(2) for t in steps]
    assert "top 5 log-probabilities" in report["capture"]["unavailable"]["full_distribution"]
    assert f"risk      {report['summary']['risk_score']:.2f} (" in stdout
    for name in ("traces.jsonl", "metrics.jsonl", "logs.jsonl"):
        assert f"\n  {out / name}" in stdout


@pytest.mark.slow
def test_openai_backend_completion_and_the_users_request_logprobs(served, tmp_path):
    url, model, client = served
    plain = client.completions.create(model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0, logprobs=2)
    flags = ["--model", model, "--no-chat", "--prompt", PROMPT, "--max-new-tokens", str(TOKENS), "--json", "--quiet"]
    result = corevital(
        *OPENAI_RUN, url, *flags, "--out", str(tmp_path), env={"OTEL_INSTRUMENTATION_COREVITAL_REQUEST_LOGPROBS": "2"}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    validate_report(report)
    assert report["request"]["operation"] == "text_completion"
    assert report["usage"]["output_tokens"] == plain.usage.completion_tokens
    chosen = plain.choices[0].logprobs.token_logprobs
    assert report["sequences"][0]["timeline"]["surprisal"] == [-lp / math.log(2) for lp in chosen]
    assert "top 2 log-probabilities" in report["capture"]["unavailable"]["full_distribution"]


OPENAI = ["--backend", "openai", "--base-url", "http://h/v1"]
HF_ONLY = "(only to --backend hf)"
HF_VLLM = "(only to --backend hf and --backend vllm)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "openai"], "--backend openai needs --base-url, the server's OpenAI API root such as .../v1"),
        (["--base-url", "http://h/v1"], "--base-url does not apply to --backend hf (only to --backend openai)"),
        (["--backend", "vllm", "--gguf-file", "x.gguf"], f"--gguf-file does not apply to --backend vllm {HF_ONLY}"),
        (["--backend", "vllm", "--device", "cpu"], f"--device does not apply to --backend vllm {HF_ONLY}"),
        (["--backend", "vllm", "--perf", "strict"], f"--perf does not apply to --backend vllm {HF_ONLY}"),
        (["--backend", "vllm", "--stop-on", "nan_or_inf"], f"--stop-on does not apply to --backend vllm {HF_ONLY}"),
        ([*OPENAI, "--layers", "0"], f"--layers does not apply to --backend openai {HF_ONLY}"),
        ([*OPENAI, "--dtype", "float32"], f"--dtype does not apply to --backend openai {HF_VLLM}"),
        ([*OPENAI, "--top-k", "5"], f"--top-k does not apply to --backend openai {HF_VLLM}"),
        ([*OPENAI, "--temperature", "1"], "--temperature, --top-p and --top-k only apply with --do-sample"),
    ],
)
def test_a_flag_the_backend_does_not_honour_is_one_clear_line(args, message, tmp_path):
    result = corevital("run", "--out", str(tmp_path), *args, timeout=60)
    assert result.returncode == 1
    assert result.stderr == f"corevital run: error: {message}\n"


def test_unreachable_server_and_missing_vllm(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = corevital("run", "--backend", "openai", "--base-url", url, "--out", str(tmp_path), timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"corevital run: error: cannot reach {url}: [Errno 111] Connection refused\n"
    # This environment has no vLLM (tests/vllm run in .venv-vllm).
    result = corevital("run", "--backend", "vllm", "--out", str(tmp_path), timeout=60)
    assert result.returncode == 1
    assert result.stderr == "corevital run: error: " + _vllm_run.MISSING_VLLM.format(python=sys.executable) + "\n"


def test_vllm_default_model_is_the_converted_smollm2_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "corevital" / "smollm2-135m-instruct-hf"
    folder.mkdir(parents=True)
    (folder / ".converted").touch()
    (folder / "config.json").write_text("{}")
    assert _vllm_run.model_folder(None) == _models.ModelSource(str(folder), None, "SmolLM2-135M-Instruct")
    assert _vllm_run.model_folder(str(folder)) == _models.ModelSource(str(folder), None, folder.name)
    with pytest.raises(ModelLoadError, match=r"--backend vllm needs a model folder with a config.json"):
        _vllm_run.model_folder(str(tmp_path))


@pytest.mark.slow
def test_vllm_default_model_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = _models.converted_smollm2()
    folder = tmp_path / "corevital" / "smollm2-135m-instruct-hf"
    assert source == _models.ModelSource(str(folder), None, "SmolLM2-135M-Instruct")
    assert sorted(p.name for p in (tmp_path / "corevital").iterdir()) == ["smollm2-135m-instruct-hf"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert {"model.safetensors", "tokenizer.json", ".converted"} <= {p.name for p in folder.iterdir()}
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert _models.converted_smollm2() == source
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
