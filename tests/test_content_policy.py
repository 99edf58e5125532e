"""Content leaves only when turned on, and only by the routes its mode allows.

A secret word is planted in the prompt and forced as the output of a real SmolLM2 generation; every exported byte
of every route (OTLP JSON files, console, SQLite, W&B offline run, DogStatsD datagrams, the report handed to
``on_report``) is read back at each content-capture mode and searched for the secret's text, its token ids and a
quoted token. The CLI's W&B run must not record the answer it prints, and the files we create are owner-only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sqlite3
import stat
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from opentelemetry_instrumentation_corevital import ContentMode, CoreVitalInstrumentor, configure, names
from opentelemetry_instrumentation_corevital._content_switch import GENAI_LATEST
from opentelemetry_instrumentation_corevital.exporters.otlp_json import OTLPJsonSpanExporter
from opentelemetry_instrumentation_corevital.exporters.rotation import Rotation, append_line
from opentelemetry_instrumentation_corevital.exporters.sqlite import SQLiteReportExporter
from opentelemetry_instrumentation_corevital.exporters.wandb import TIMELINE_COLUMNS
from opentelemetry_instrumentation_corevital.report import ContentPolicy, SequenceReport, without_content

from .test_cli import corevital
from .test_report_handoff import build

SECRET = "Zorbulaxite"
TEXT, IDS, QUOTE, TOKENS = "text", "token ids", "quoted token", "token texts"


class ForceTokens(LogitsProcessor):
    """Makes the model write exactly ``ids`` (a real transformers extension point): the secret becomes the output."""

    def __init__(self, ids: list[int], prompt_len: int) -> None:
        self.ids, self.prompt_len = ids, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, -torch.inf)
        forced[:, self.ids[input_ids.shape[1] - self.prompt_len]] = 0.0
        return forced


def found(data: bytes, text: str, ids: list[int], pieces: list[str]) -> set[str]:
    """What content ``data`` carries: the secret ``text``, its token ``ids`` (attribute or sequence), a quoted token,
    its tokens' texts (``pieces``, as the report's ``token_texts`` list, quotes escaped or not)."""
    kinds = set()
    if re.search(rb'\\*"\s*,\s*\\*"'.join(re.escape(json.dumps(p)[1:-1].encode()) for p in pieces), data):
        kinds.add(TOKENS)
    if text.encode() in data:
        kinds.add(TEXT)
    sequence = rb"[,\s]+".join(str(i).encode() for i in ids)
    if names.TOKEN_ID.encode() in data or re.search(rb"(?<!\d)" + sequence + rb"(?!\d)", data):
        kinds.add(IDS)
    if b"(token " in data:
        kinds.add(QUOTE)
    return kinds


def console_objects(text: str) -> dict[str, bytes]:
    """The console exporters' output split by signal: each span, log record and metrics batch is one JSON object."""
    decoder, position, kinds = json.JSONDecoder(), 0, {"spans": b"", "logs": b"", "metrics": b""}
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return kinds
        obj, position = decoder.raw_decode(text, position)
        kind = "metrics" if "resource_metrics" in obj else "logs" if "body" in obj else "spans"
        kinds[kind] += json.dumps(obj, ensure_ascii=False).encode()


def expected(mode: ContentMode) -> dict[str, set[str]]:
    """Route -> what content it may carry at ``mode``: the documented table of docs/content.md."""
    span, events = mode.on_span, mode.on_event
    quote = {QUOTE} if span and events else set()
    report = {TEXT, IDS, TOKENS} | quote  # the report carries each token's text too; the span never does
    return {
        "traces file": ({TEXT, IDS} | quote) if span else set(),
        "console spans": ({TEXT, IDS} | quote) if span else set(),
        "logs file": report if events else set(),
        "console logs": report if events else set(),
        "metrics file": set(),
        "console metrics": set(),
        "sqlite file": report if events else set(),
        "wandb run": {IDS} if events else set(),  # the timeline table's token_id column; W&B never gets text
        "dogstatsd": set(),
        "on_report": report if events else set(),
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(ContentMode), ids=lambda m: m.value)
def test_every_route_carries_content_only_where_the_mode_allows(mode, smollm2, tmp_path, monkeypatch, capsys):
    import wandb

    tokenizer, model = smollm2
    ids = tokenizer.encode(" " + SECRET, add_special_tokens=False)
    assert len(ids) >= 3 and tokenizer.decode(ids).strip() == SECRET
    wandb.teardown()  # wandb reads WANDB_DIR once per process: forget the previous test's
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    out = tmp_path / "out"
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    with configure(
        exporters="otlp-json,console,sqlite,wandb,dogstatsd",
        out=str(out),
        wandb_project="corevital-content",
        dogstatsd_host="127.0.0.1",
        dogstatsd_port=statsd.getsockname()[1],
    ) as config:
        instrumentor.instrument(
            capture="full",
            capture_content=mode,
            semconv_opt_in=GENAI_LATEST,  # the modes are the newest conventions' (as in contrib)
            report_log=True,
            **config.instrument_kwargs(reports.append),
        )
        try:
            inputs = tokenizer.apply_chat_template(
                [{"role": "user", "content": f"Repeat the word {SECRET}."}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            prompt_len = inputs["input_ids"].shape[1]
            output = model.generate(
                **inputs,
                max_new_tokens=len(ids),
                do_sample=False,
                logits_processor=LogitsProcessorList([ForceTokens(ids, prompt_len)]),
            )
        finally:
            instrumentor.uninstrument()
    assert output[0, prompt_len:].tolist() == ids  # the secret is the output (and is in the prompt)
    statsd.setblocking(False)
    datagrams = b""
    while True:
        try:
            datagrams += statsd.recv(65535) + b"\n"
        except BlockingIOError:
            break
    statsd.close()
    console = console_objects(capsys.readouterr().out)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    wandb_bytes = b"".join(p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file())
    (table,) = run_dir.rglob("*.table.json")
    token_column = [row[TIMELINE_COLUMNS.index("token_id")] for row in json.loads(table.read_text())["data"]]
    assert token_column == (ids if mode.on_event else [None] * len(ids))
    sqlite_bytes = b"".join(p.read_bytes() for p in sorted(out.glob("corevital.sqlite3*")))
    conn = sqlite3.connect(out / "corevital.sqlite3")
    stored_ids = [r[0] for r in conn.execute("SELECT token_id FROM steps ORDER BY step")]
    conn.close()
    assert stored_ids == (ids if mode.on_event else [None] * len(ids))
    (report,) = reports
    routes = {
        "traces file": (out / "traces.jsonl").read_bytes(),
        "console spans": console["spans"],
        "logs file": (out / "logs.jsonl").read_bytes(),
        "console logs": console["logs"],
        "metrics file": (out / "metrics.jsonl").read_bytes(),
        "console metrics": console["metrics"],
        "sqlite file": sqlite_bytes,
        "wandb run": wandb_bytes + (str(token_column).encode() if mode.on_event else b""),
        "dogstatsd": datagrams,
        "on_report": report.to_json().encode(),
    }
    assert all(routes.values()), [route for route, data in routes.items() if not data]  # every route was read
    pieces = [tokenizer.decode([i]) for i in ids]
    assert {route: found(data, SECRET, ids, pieces) for route, data in routes.items()} == expected(mode)


@pytest.mark.parametrize("mode", list(ContentMode), ids=lambda m: m.value)
def test_in_memory_spans_logs_and_reports_follow_the_mode(mode, tiny_llama, tiny_tok):
    """The quick loop of the test above: the tiny model and the SDK's in-memory exporters (span, logs, on_report)."""
    from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

    secret = "blue moon poem"  # the tiny word-level tokenizer's words: prompt and forced output
    ids = tiny_tok.encode(secret, add_special_tokens=False)
    with TelemetryCapture(
        capture="full", capture_content=mode, semconv_opt_in=GENAI_LATEST, report_log=True
    ) as capture:
        inputs = tiny_tok.apply_chat_template(
            [{"role": "user", "content": f"write {secret}"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        prompt_len = inputs["input_ids"].shape[1]
        output = tiny_llama.generate(
            **inputs,
            max_new_tokens=len(ids),
            do_sample=False,
            logits_processor=LogitsProcessorList([ForceTokens(ids, prompt_len)]),
        )
    assert output[0, prompt_len:].tolist() == ids
    (span,) = capture.spans()
    span_bytes = span.to_json().encode()
    logs_bytes = "".join(record.to_json() for record in capture.logs()).encode()
    (report,) = capture.reports
    # the routes the files of the test above hold, here in memory
    routes = {"traces file": span_bytes, "logs file": logs_bytes, "on_report": report.to_json().encode()}
    pieces = [tiny_tok.decode([i]) for i in ids]
    assert {route: found(data, secret, ids, pieces) for route, data in routes.items()} == {
        route: expected(mode)[route] for route in routes
    }


@pytest.mark.parametrize("mode", list(ContentMode), ids=lambda m: m.value)
def test_the_policy_of_each_mode(mode):
    policy = ContentPolicy.of(mode)
    assert (policy.span, policy.events) == (mode.on_span, mode.on_event)
    assert policy.captured == mode.enabled
    assert policy.quoted_tokens == (mode is ContentMode.SPAN_AND_EVENT)


def test_the_events_route_gets_a_copy_without_content():
    report = build()
    report.input_messages = [{"role": "user", "parts": [{"type": "text", "content": SECRET}]}]
    report.sequences[0] = dataclasses.replace(
        report.sequences[0], token_ids=[1, 2], token_texts=[SECRET, SECRET], input_text=SECRET, output_text=SECRET
    )
    plain = ContentPolicy(span=True, events=False).for_events(report)
    seq: SequenceReport = plain.sequences[0]
    assert (seq.token_ids, seq.input_text, seq.output_text, plain.input_messages) == (None, None, None, None)
    assert seq.token_texts is None
    assert SECRET not in plain.to_json()
    assert report.sequences[0].token_ids == [1, 2] and report.input_messages is not None  # the original is unchanged
    assert ContentPolicy(span=False, events=True).for_events(report) is report
    assert without_content(plain) is plain  # nothing to remove: no copy


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_we_create_are_owner_only(tmp_path, tiny_llama):
    old = os.umask(0o022)  # the usual umask: before, files came out 0644
    try:
        SQLiteReportExporter(tmp_path / "history.sqlite3").export(_report_with_wal(tiny_llama))
        _one_span(OTLPJsonSpanExporter(tmp_path / "traces.jsonl"))
        rotation = Rotation(max_bytes=8, backups=2)
        append_line(tmp_path / "logs.jsonl", "first line\n", rotation)
        append_line(tmp_path / "logs.jsonl", "second line\n", rotation)  # rotates: the old file keeps its mode
    finally:
        os.umask(old)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len([f for f in files if f.startswith("logs")]) == 2 and "history.sqlite3-wal" in files
    assert {name: _mode(tmp_path / name) for name in files} == dict.fromkeys(files, 0o600)


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text("")
    path.chmod(0o640)
    append_line(path, "line\n", None)
    assert _mode(path) == 0o640 and path.read_text() == "line\n"


def _report_with_wal(model):
    from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

    with TelemetryCapture(capture="summary") as capture:
        prompt = torch.tensor([[1, 17, 42]])
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=2, do_sample=False)
    return capture.reports[0]


def _one_span(exporter) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("test").start_span("one").end()
    provider.shutdown()


@pytest.mark.slow
def test_the_cli_wandb_run_records_neither_the_answer_nor_the_prompt(tiny_model_dir, tiny_llama, tiny_tok, tmp_path):
    """`corevital run` prints the answer; the W&B run it starts must not record that console or its --prompt."""
    prompt = "tell me a short story about the blue sea"
    encoded = tiny_tok(prompt, return_tensors="pt")
    output = tiny_llama.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tiny_tok.pad_token_id)
    answer = tiny_tok.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(answer.split()) >= 2
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    result = corevital(
        *("run", "--model", str(tiny_model_dir), "--no-chat", "--prompt", prompt, "--max-new-tokens", "8"),
        *("--exporter", "wandb", "--out", str(tmp_path / "out"), "--quiet"),
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"\n{answer}\n" in result.stdout  # the CLI shows the answer to its user
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    recorded = b"".join(p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file())
    assert b"corevital/risk_score" in recorded  # the reports are there
    assert answer.encode() not in recorded and prompt.encode() not in recorded
