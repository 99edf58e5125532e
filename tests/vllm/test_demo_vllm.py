"""`make demo-vllm` end to end (tools/demo_vllm.py): a `vllm serve` with CoreVital's plugin on, one chat request
from `corevital run --backend openai`, both spans and reports in the files, and what the demo prints about them.

It starts a server of its own (about a minute on the CPU): the price of checking the SERVER span that only a
served request makes.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital.viewer import build_index, load_run

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "tools" / "demo_vllm.py"


def _demo():
    spec = importlib.util.spec_from_file_location("demo_vllm", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_serves_one_request_and_prints_both_reports(tmp_path, capfd):
    demo = _demo()
    out = tmp_path / "corevital-data"
    assert demo.main(["--out", str(out)]) == 0
    printed = capfd.readouterr().out
    lines = printed.splitlines()

    index = build_index([str(out)])
    assert index.problems == []
    by_provider = {run.provider: run for run in index.runs}
    client, server = by_provider["openai"], by_provider["vllm"]
    assert len(index.runs) == 2
    assert (client.service, server.service) == ("corevital-cli", "vllm-serve")
    assert client.model == server.model == demo.SERVED_NAME
    # The server counted the tokens the client was told about.
    assert (client.input_tokens, client.output_tokens) == (server.input_tokens, server.output_tokens)
    assert client.output_tokens == 64
    server_detail, client_detail = load_run(server), load_run(client)
    assert server_detail.report is not None and client_detail.report is not None
    assert server_detail.report["capture"]["signals"] == ["logits", "tokens", "hidden"]

    header = f"corevital · {demo.SERVED_NAME} · chat · greedy_search · 64 new tokens"
    (client_header,) = [line for line in lines if line.startswith(header + " · served by ")]
    assert re.fullmatch(re.escape(header) + r" · served by http://127\.0\.0\.1:\d+/v1", client_header)
    assert f"{header} · cpu float32" in lines  # the server's report, rendered from the files
    assert f"risk      {server_detail.report['summary']['risk_score']:.2f} (low)   profile smollm2" in lines
    assert f"risk      {client_detail.report['summary']['risk_score']:.2f} (low)   profile smollm2" in lines
    at = lines.index("=== one request, two spans ===")
    assert client.trace_id == server.trace_id  # the client sent its traceparent: one trace
    assert lines[at + 2 : at + 5] == demo.trace_lines(client, server)
    assert lines[at + 4] == "one trace: the server's span continues the client's (traceparent header)"
    assert lines[at + 6 :] == [
        f"files: {out.resolve()} (traces.jsonl, logs.jsonl, metrics.jsonl; the server's log vllm-serve.log)",
        f"open them in the viewer: .venv/bin/corevital view {out}   (then http://127.0.0.1:8577)",
    ]
    assert re.search(r"^vllm serve \(pid \d+\) stopped with exit code 0$", printed, re.M)
    assert (out / "vllm-serve.log").is_file()
