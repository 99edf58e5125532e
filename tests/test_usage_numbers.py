"""Usage numbers and capture under decoding that does not emit one token per step, and without input_ids.

Assisted decoding (an assistant model, or prompt lookup) verifies several proposed tokens per forward: our
per-step recorder runs zero or several times per emitted token, so counts come from the returned sequences.
``inputs_embeds`` generation has no prompt ids: the capture must still work, and say what it cannot measure.
A SQLite history at ``:memory:`` would keep no number at all: it is refused.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import ConfigurationError, configure, names
from opentelemetry_instrumentation_corevital.exporters.sqlite import SQLiteReportExporter
from opentelemetry_instrumentation_corevital.report import TIMELINE_SERIES, LayerSeries
from opentelemetry_instrumentation_corevital.testing import (
    TINY_EOS,
    TelemetryCapture,
    tiny_causal_lm,
    tiny_seq2seq_lm,
)

PROMPT = torch.tensor([[1, 5, 6, 7, 8, 5, 6, 7, 8, 5]])  # repeats: prompt lookup finds candidates in it
NEW = 12
ASSISTED_UNAVAILABLE = {
    "logits": "not captured for assisted_generation decoding",
    "layers": "not captured for assisted_generation decoding",
    "timing": "per-step times not measured for assisted_generation decoding",
}


def new_tokens(row: list[int]) -> int:
    """Generated tokens of one returned row, counted by hand: up to and including the first EOS."""
    return next((i + 1 for i, t in enumerate(row) if t == TINY_EOS), len(row))


#: Every per-layer matrix of a report (hidden-state statistics, attention, MoE).
LAYER_MATRICES = [f.name for f in dataclasses.fields(LayerSeries) if f.name not in ("indices", "steps")]


def close(a: list, b: list, tolerance: float = 1e-4) -> bool:
    """Nested lists equal within a relative tolerance, None (non-finite) in the same places."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(close, a, b))
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=1e-6)


def output_token_metric(tc: TelemetryCapture) -> int:
    (point,) = [
        p
        for p in tc.metrics()["gen_ai.client.token.usage"].data.data_points
        if p.attributes[names.TOKEN_TYPE] == "output"
    ]
    return int(point.sum)


@pytest.fixture(scope="module")
def target():
    return tiny_causal_lm("llama", seed=0)


@pytest.fixture(scope="module")
def assistant():
    return tiny_causal_lm("llama", seed=1)  # same tokenizer and vocabulary, other weights: proposals get rejected


def assisted_kwargs(kind: str, assistant) -> dict:
    return {"assistant_model": assistant} if kind == "assistant_model" else {"prompt_lookup_num_tokens": 3}


class TestAssistedDecoding:
    @pytest.mark.parametrize("kind", ["assistant_model", "prompt_lookup"])
    @pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sample"])
    def test_output_tokens_are_the_new_tokens(self, target, assistant, kind, sample):
        kwargs = {"max_new_tokens": NEW, "do_sample": sample, **assisted_kwargs(kind, assistant)}
        torch.manual_seed(3)
        plain = target.generate(PROMPT, **kwargs)
        with TelemetryCapture() as tc:
            torch.manual_seed(3)
            out = target.generate(PROMPT, **kwargs)
        assert torch.equal(out, plain)  # our taps change nothing
        (report,) = tc.reports
        expected = new_tokens(out[0, PROMPT.shape[1] :].tolist())
        assert report.request.generation_mode == "assisted_generation"
        assert report.usage.output_tokens == expected
        assert report.usage.input_tokens == PROMPT.shape[1]
        assert [s.output_tokens for s in report.sequences] == [expected]
        (span,) = tc.spans()
        assert span.attributes[names.USAGE_OUTPUT_TOKENS] == expected
        assert span.attributes[names.USAGE_INPUT_TOKENS] == PROMPT.shape[1]
        assert output_token_metric(tc) == expected

    @pytest.mark.parametrize("kind", ["assistant_model", "prompt_lookup"])
    def test_full_length_run_finishes_by_length(self, target, assistant, kind):
        with TelemetryCapture() as tc:
            out = target.generate(PROMPT, max_new_tokens=NEW, do_sample=False, **assisted_kwargs(kind, assistant))
        assert out.shape[1] - PROMPT.shape[1] == NEW and TINY_EOS not in out[0].tolist()  # the case this test needs
        (seq,) = tc.reports[0].sequences
        assert (seq.output_tokens, seq.finish_reason) == (NEW, "length")

    @pytest.mark.parametrize("kind", ["assistant_model", "prompt_lookup"])
    def test_step_timeline_is_marked_unavailable_not_invented(self, target, assistant, kind):
        """Several tokens are accepted per forward: no per-token logits, layers or step times are made up."""
        with TelemetryCapture(capture="full") as tc:
            target.generate(PROMPT, max_new_tokens=NEW, do_sample=False, **assisted_kwargs(kind, assistant))
        (report,) = tc.reports
        assert {k: report.capture.unavailable[k] for k in ASSISTED_UNAVAILABLE} == ASSISTED_UNAVAILABLE
        assert report.timings.step_end_s == []
        assert report.timings.time_to_first_token_s is None
        assert report.timings.time_per_output_token_s is None
        (seq,) = report.sequences
        assert seq.timeline.entropy == [] and seq.layers is None
        assert "corevital.timing.time_to_first_token" not in tc.spans()[0].attributes

    def test_encoder_decoder_assistant(self):
        model, helper = tiny_seq2seq_lm(seed=0), tiny_seq2seq_lm(seed=1)
        source = torch.tensor([[5, 6, 7, 8, 9, 10]])
        kwargs = {"max_new_tokens": 9, "do_sample": False, "assistant_model": helper}
        plain = model.generate(source, **kwargs)
        with TelemetryCapture() as tc:
            out = model.generate(source, **kwargs)
        assert torch.equal(out, plain)
        expected = new_tokens(out[0, 1:].tolist())  # after the decoder start token
        (report,) = tc.reports
        assert report.request.generation_mode == "assisted_generation"
        assert report.usage.output_tokens == expected
        assert tc.spans()[0].attributes[names.USAGE_OUTPUT_TOKENS] == expected


class TestInputsEmbeds:
    IDS = torch.tensor([[1, 5, 6, 7, 8, 5, 6, 7], [0, 0, 1, 9, 10, 11, 12, 13]])  # row 1 left-padded
    MASK = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])

    def run_both(self, model, capture: str):
        """(ids-run report, embeds-run report, ids-run new tokens, embeds-run output) of the same prompt."""
        embeds = model.get_input_embeddings()(self.IDS).detach()
        kwargs = {"attention_mask": self.MASK, "max_new_tokens": 6, "do_sample": False}
        plain = model.generate(inputs_embeds=embeds, **kwargs)
        with TelemetryCapture(capture=capture) as tc:
            by_ids = model.generate(self.IDS, **kwargs)
            by_embeds = model.generate(inputs_embeds=embeds, **kwargs)
        assert torch.equal(by_embeds, plain)  # output identical with and without us
        return tc.reports[0], tc.reports[1], by_ids[:, self.IDS.shape[1] :], by_embeds

    @pytest.mark.parametrize("capture", ["summary", "full"])
    def test_capture_works_and_matches_the_ids_run(self, target, capture):
        ids_report, report, ids_new, out = self.run_both(target, capture)
        assert torch.equal(out, ids_new)  # decoder-only inputs_embeds returns only the new tokens
        assert report.capture.error is None
        assert report.usage.input_tokens == 8 + 6  # the mask's tokens
        assert report.usage.output_tokens == sum(new_tokens(r) for r in out.tolist())
        assert [s.prompt_tokens for s in report.sequences] == [8, 6]
        assert report.capture.signals == ids_report.capture.signals
        for by_ids, by_embeds in zip(ids_report.sequences, report.sequences):
            assert by_embeds.output_tokens == by_ids.output_tokens
            for name in TIMELINE_SERIES:
                assert close(getattr(by_embeds.timeline, name), getattr(by_ids.timeline, name)), name
            assert by_embeds.layers.steps == by_ids.layers.steps == list(range(6))
            for name in LAYER_MATRICES:  # hidden-state norms; at full capture every statistic and attention too
                assert close(getattr(by_embeds.layers, name), getattr(by_ids.layers, name)), name
            if capture == "full":
                assert by_embeds.layers.attn_entropy is not None and by_embeds.layers.hidden_mean is not None

    def test_what_needs_the_ids_is_marked_unavailable(self, target):
        ids_report, report, _, _ = self.run_both(target, "full")
        assert "prompt_surprisal" not in ids_report.capture.unavailable
        assert report.capture.unavailable == {"prompt_surprisal": "needs input_ids and the model's output head"}
        for by_ids, by_embeds in zip(ids_report.sequences, report.sequences):
            assert by_ids.prompt.surprisal and by_embeds.prompt.surprisal == []  # the ids are what is scored
            assert by_embeds.prompt.perplexity is None
            assert by_embeds.prompt.tokens == by_ids.prompt.tokens
            assert close(by_embeds.prompt.hidden_norm, by_ids.prompt.hidden_norm)  # the prompt's layers are seen
            assert close(by_embeds.prompt.basin, by_ids.prompt.basin)


class TestSQLiteInMemory:
    """``:memory:`` would open a database that lives and dies with the exporter: every report thrown away."""

    MESSAGE = r"an in-memory SQLite database would throw every report away"

    def test_keyword_is_refused(self, tmp_path):
        with pytest.raises(ConfigurationError, match=r"^sqlite_path=':memory:': " + self.MESSAGE):
            configure(exporters="sqlite", sqlite_path=":memory:", out=tmp_path)

    def test_environment_is_refused(self, tmp_path, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_SQLITE_PATH", ":memory:")
        with pytest.raises(ConfigurationError, match=r"^OTEL_INSTRUMENTATION_COREVITAL_SQLITE_PATH=':memory:': "):
            configure(exporters="sqlite", out=tmp_path)

    def test_exporter_is_refused(self):
        with pytest.raises(ConfigurationError, match=r"^path=':memory:': " + self.MESSAGE):
            SQLiteReportExporter(":memory:")

    def test_a_file_named_like_it_in_a_folder_is_a_file(self, tmp_path):
        exporter = SQLiteReportExporter(tmp_path / ":memory:")  # a real file, kept
        exporter.shutdown()
        assert (tmp_path / ":memory:").is_file()
