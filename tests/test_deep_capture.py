"""Deep capture: per-layer hidden-state and attention summaries, prompt telemetry, MoE routers,
every architecture, batches and beams, checked against reference runs of the same model.

References come from transformers itself: ``output_hidden_states=True`` and eager
``output_attentions=True`` generations, ``output_logits=True`` for beam search and
``output_router_logits=True`` for Mixtral. Tolerance: 1e-4 absolute on float32 tiny
models (both sides compute in float32; the difference is summation order).
"""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.capture import _reducer, _rows, _step_attention
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm, tiny_seq2seq_lm

TOL = 1e-4
PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
BATCH = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64], [0, 0, 0, 1, 9, 8, 7, 6]])
BATCH_MASK = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
ARCHS = ["llama", "mistral", "mixtral", "qwen2", "phi3", "gpt2", "t5"]


def model_of(arch: str, impl: str = "sdpa"):
    model = tiny_seq2seq_lm() if arch == "t5" else tiny_causal_lm(arch)
    model.set_attn_implementation(impl)
    return model


def generate(model, prompt=PROMPT, mask=None, **kwargs):
    kwargs.setdefault("max_new_tokens", 6)
    kwargs.setdefault("do_sample", False)
    return model.generate(prompt, attention_mask=torch.ones_like(prompt) if mask is None else mask, **kwargs)


def full_report(model, **kwargs):
    with TelemetryCapture(capture="full") as tc:
        out = generate(model, **kwargs)
    (report,) = tc.reports
    validate_report(report.to_dict())
    return out, report, tc


def reference(model, **kwargs):
    """A reference generation with eager attention returning hidden states, attentions and raw logits."""
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return generate(
            model,
            return_dict_in_generate=True,
            output_hidden_states=True,
            output_attentions=True,
            output_logits=True,
            **kwargs,
        )
    finally:
        model.set_attn_implementation(impl)


def attention_reference(probs: torch.Tensor, sink: int, prompt_end: int, valid: int) -> list[float]:
    """Per-layer statistics of one query row [heads, keys], written out independently of the package."""
    probs = probs.double()
    entropy = torch.tensor([-(p[p > 0] * p[p > 0].log()).sum() for p in probs], dtype=torch.float64)
    normalised = entropy / math.log(valid)
    s = probs[:, sink]
    rest = probs.clone()
    rest[:, sink] = 0
    rest = rest / rest.sum(-1, keepdim=True)
    rest_entropy = torch.tensor([-(p[p > 0] * p[p > 0].log()).sum() for p in rest], dtype=torch.float64)
    collapsed = (rest_entropy / math.log(valid - 1) < 0.03).double()
    return [
        float(normalised.mean()),
        float(normalised.min()),
        float(probs.max(-1).values.mean()),
        float(s.mean()),
        float(probs[:, :prompt_end].sum(-1).mean()),
        float(collapsed.mean()),
        float(probs[:, -2].max()),  # the previous token: the key before the query's own
    ]


class TestAgainstReferenceRuns:
    @pytest.mark.parametrize("impl", ["sdpa", "eager"])
    def test_hidden_and_attention_statistics(self, impl):
        model = model_of("llama", impl)
        model.config.num_hidden_layers  # noqa: B018 - 2 layers
        out, report, _ = full_report(model)
        ref = reference(model)
        assert torch.equal(out, ref.sequences)
        layers = report.sequences[0].layers
        assert layers.indices == [0, 1] and layers.steps == [0, 1, 2, 3, 4, 5]
        P = PROMPT.shape[1]
        for step in range(6):
            hidden = ref.hidden_states[step]  # embeddings, layer 0 output, normed last layer
            h_in, h0 = hidden[0][0, -1].double(), hidden[1][0, -1].double()
            assert layers.hidden_norm[0][step] == pytest.approx(float(h0.norm()), abs=TOL)
            assert layers.hidden_mean[0][step] == pytest.approx(float(h0.mean()), abs=TOL)
            assert layers.hidden_std[0][step] == pytest.approx(float(h0.std(correction=0)), abs=TOL)
            assert layers.hidden_max_abs[0][step] == pytest.approx(float(h0.abs().max()), abs=TOL)
            assert layers.hidden_nonfinite[0][step] == 0.0
            assert layers.update_ratio[0][step] == pytest.approx(float((h0 - h_in).norm() / h_in.norm()), abs=TOL)
            if step:
                prev = ref.hidden_states[step - 1][1][0, -1].double()
                cos = float(h0 @ prev / (h0.norm() * prev.norm()))
                assert layers.hidden_cos_prev[0][step] == pytest.approx(cos, abs=TOL)
            else:
                assert layers.hidden_cos_prev[0][step] is None
            for layer in range(2):
                probs = ref.attentions[step][layer][0, :, -1]
                expected = attention_reference(probs, sink=0, prompt_end=P, valid=probs.shape[-1])
                got = [
                    getattr(layers, name)[layer][step]
                    for name in (
                        "attn_entropy",
                        "attn_entropy_min",
                        "attn_max_weight",
                        "attn_sink_mass",
                        "attn_prompt_mass",
                        "attn_collapsed_fraction",
                        "attn_prev_token",
                    )
                ]
                assert got == pytest.approx(expected, abs=TOL), (step, layer)

    def test_prompt_telemetry(self):
        model = model_of("llama")
        _, report, _ = full_report(model)
        prompt = report.sequences[0].prompt
        with torch.no_grad():
            logits = model(PROMPT).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        expected = [float(-logp[i, PROMPT[0, i + 1]] / math.log(2)) for i in range(7)]
        assert prompt.tokens == 8
        assert prompt.surprisal == pytest.approx(expected, abs=TOL)
        assert prompt.perplexity == pytest.approx(2 ** (sum(expected) / 7), rel=1e-5)
        ref = reference(model, max_new_tokens=1)
        for layer in range(2):
            probs = ref.attentions[0][layer][0].double()  # [heads, 8 queries, 8 keys], causal
            heavy = ((probs >= 0.01) & (probs > 0)).sum(-1).double()
            visible = torch.arange(1, 9, dtype=torch.float64)
            sparsity = float((1 - heavy / visible).mean())
            middle = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0], dtype=torch.bool)  # [8/3, 16/3): positions 3, 4, 5
            basin = (probs[..., middle].sum(-1) / (probs[..., ~middle].sum(-1) + 1e-10)).mean(-1)
            assert prompt.attn_sparsity[layer] == pytest.approx(sparsity, abs=TOL)
            assert prompt.basin[layer] == pytest.approx(float(basin.mean()), abs=TOL)
            assert prompt.basin_min[layer] == pytest.approx(float(basin.min()), abs=TOL)
            hidden = ref.hidden_states[0][layer + 1][0].double() if layer == 0 else None
            if hidden is not None:
                assert prompt.hidden_norm[0] == pytest.approx(float(hidden.norm(dim=-1).mean()), abs=TOL)

    def test_beam_search_signals_follow_the_returned_beams(self):
        model = model_of("llama")
        with TelemetryCapture(capture="full") as tc:
            out = generate(model, num_beams=3, num_return_sequences=2, max_new_tokens=5)
        ref = generate(
            model,
            num_beams=3,
            num_return_sequences=2,
            max_new_tokens=5,
            return_dict_in_generate=True,
            output_logits=True,
        )
        assert torch.equal(out, ref.sequences)
        report = tc.reports[0]
        assert len(report.sequences) == 2
        for r, seq in enumerate(report.sequences):
            for t in range(seq.output_tokens):
                row = int(ref.beam_indices[r, t])
                logp = torch.log_softmax(ref.logits[t][row].double(), -1)
                entropy = float(-(logp.exp() * logp).sum() / math.log(2))
                token = int(out[r, PROMPT.shape[1] + t])
                assert seq.timeline.entropy[t] == pytest.approx(entropy, abs=TOL)
                assert seq.timeline.surprisal[t] == pytest.approx(float(-logp[token] / math.log(2)), abs=TOL)
            assert seq.layers.steps == list(range(seq.output_tokens))

    def test_mixtral_router_statistics(self):
        model = model_of("mixtral")
        out, report, _ = full_report(model, max_new_tokens=4)
        ref = generate(model, max_new_tokens=4, return_dict_in_generate=True, output_router_logits=True)
        layers = report.sequences[0].layers
        assert layers.router_entropy is not None and layers.expert_load_balance is not None
        # Recompute step 0's router entropy from a forward over the prompt (last position).
        with torch.no_grad():
            router = model(PROMPT, output_router_logits=True).router_logits
        experts = model.config.num_local_experts
        counts = torch.zeros(2, experts, dtype=torch.float64)
        for layer in range(2):
            p = torch.softmax(router[layer].view(1, 8, -1)[0, -1].double(), -1)
            entropy = float(-(p * p.log()).sum() / math.log(experts))
            assert layers.router_entropy[layer][0] == pytest.approx(entropy, abs=TOL)
            counts[layer, p.topk(2).indices] += 1
            share = counts[layer] / counts[layer].sum()
            balance = float(-(share[share > 0] * share[share > 0].log()).sum() / math.log(experts))
            assert layers.expert_load_balance[layer][0] == pytest.approx(balance, abs=TOL)
        assert ref.sequences.shape == out.shape


class TestArchitectures:
    @pytest.mark.parametrize("arch", ARCHS)
    @pytest.mark.parametrize("mode", ["summary", "full"])
    @pytest.mark.parametrize("decoding", ["greedy", "beams", "sample"])
    def test_tokens_identical_and_report_complete(self, arch, mode, decoding):
        model = model_of(arch)
        kwargs = {"greedy": {}, "beams": {"num_beams": 3}, "sample": {"do_sample": True, "top_k": 20}}[decoding]
        torch.manual_seed(11)
        plain = generate(model, prompt=BATCH, mask=BATCH_MASK, **kwargs)
        with TelemetryCapture(capture=mode) as tc:
            torch.manual_seed(11)
            out = generate(model, prompt=BATCH, mask=BATCH_MASK, **kwargs)
        assert torch.equal(plain, out)
        report = tc.reports[0]
        validate_report(report.to_dict())
        assert report.capture.error is None
        expected = {"logits", "tokens", "hidden"}
        if mode == "full":
            expected |= {"hidden_full", "attention"} | ({"encoder"} if arch == "t5" else {"prompt"})
            expected |= {"moe"} if arch == "mixtral" else set()
        assert set(report.capture.signals) == expected
        for seq in report.sequences:
            assert seq.layers.indices == [0, 1]
            assert seq.layers.steps == list(range(seq.output_tokens))
            assert all(len(row) == seq.output_tokens for row in seq.layers.hidden_norm)
            assert all(v is not None and v > 0 for row in seq.layers.hidden_norm for v in row)
            if mode == "full":
                assert all(0.0 <= v <= 1.0 for row in seq.layers.attn_entropy for v in row if v is not None)
                assert all(abs(v - 1.0) <= 1e-5 or v < 1.0 for row in seq.layers.attn_prompt_mass for v in row)

    def test_t5_encoder_summary(self):
        model = model_of("t5")
        _, report, _ = full_report(model, prompt=BATCH, mask=BATCH_MASK)
        for seq in report.sequences:
            assert seq.encoder.indices == [0, 1]
            assert all(v is not None and v > 0 for v in seq.encoder.hidden_norm)
            assert seq.prompt is None
        assert report.capture.unavailable["prompt"].startswith("prompt surprisal does not apply")
        # Encoder rows differ by input: padding is excluded from the norm means.
        assert report.sequences[0].encoder.hidden_norm != report.sequences[1].encoder.hidden_norm


class TestBatchesAndPadding:
    def test_padding_never_leaks_into_layer_statistics(self):
        model = model_of("llama")
        alone = torch.tensor([[1, 9, 8, 7, 6]])
        _, single, _ = full_report(model, prompt=alone)
        _, batched, _ = full_report(model, prompt=BATCH, mask=BATCH_MASK)
        a, b = single.sequences[0], batched.sequences[1]
        for name in (
            "hidden_norm",
            "hidden_std",
            "update_ratio",
            "attn_entropy",
            "attn_max_weight",
            "attn_sink_mass",
            "attn_prompt_mass",
            "attn_collapsed_fraction",
        ):
            for x, y in zip(getattr(a.layers, name), getattr(b.layers, name)):
                assert x == pytest.approx(y, abs=TOL), name
        assert a.prompt.surprisal == pytest.approx(b.prompt.surprisal, abs=TOL)
        assert a.prompt.tokens == b.prompt.tokens == 5
        assert a.prompt.basin == pytest.approx(b.prompt.basin, abs=TOL)
        assert a.prompt.hidden_norm == pytest.approx(b.prompt.hidden_norm, abs=TOL)


class TestConfiguration:
    def test_layer_subset_and_step_stride(self):
        model = model_of("llama")
        with TelemetryCapture(capture="full", layers="1", step_stride=2) as tc:
            generate(model, max_new_tokens=7)
        report = tc.reports[0]
        layers = report.sequences[0].layers
        assert report.capture.layers == [1] and report.capture.step_stride == 2
        assert layers.indices == [1]
        assert layers.steps == [0, 2, 4, 6]
        assert len(layers.hidden_norm) == 1 and len(layers.hidden_norm[0]) == 4
        assert len(report.sequences[0].timeline.entropy) == 7  # logits stay per step

    def test_environment_selects_layers(self, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_LAYERS", "every:2")
        model = tiny_causal_lm("llama", num_hidden_layers=5)
        with TelemetryCapture(capture="summary") as tc:
            generate(model, max_new_tokens=2)
        assert tc.reports[0].sequences[0].layers.indices == [0, 2, 4]

    def test_long_generation_keeps_only_scalars(self):
        """Memory retained per generation is O(steps x layers) numbers: counted exactly."""
        model = model_of("llama")
        seen = []
        original = _rows.StepRows.retained_values

        def spy(self):
            seen.append(original(self))
            return seen[-1]

        _rows.StepRows.retained_values = spy
        try:
            with TelemetryCapture(capture="full") as tc:
                generate(model, max_new_tokens=400, min_new_tokens=400)
        finally:
            _rows.StepRows.retained_values = original
        steps, rows, layers = 400, 1, 2
        # per row per step: sum p ln p, the top-10 log-probabilities and the previous token's log-probability;
        # per layer per row per step: 8 hidden-state moments and 7 attention statistics
        assert seen == [steps * rows * 12 + steps * rows * layers * (8 + 7)]
        assert len(tc.reports[0].sequences[0].layers.hidden_norm[0]) == 400


class TestDeviceMap:
    def test_dispatched_model_with_offloaded_layer(self, tmp_path):
        """A model split by accelerate (one layer offloaded to disk) keeps identical output and full data."""
        from accelerate import dispatch_model

        model = model_of("llama")
        plain = generate(model)
        device_map = {
            "model.embed_tokens": "cpu",
            "model.layers.0": "cpu",
            "model.layers.1": "disk",
            "model.norm": "cpu",
            "model.rotary_emb": "cpu",
            "lm_head": "cpu",
        }
        split = dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path))
        assert hasattr(split.model.layers[1], "_hf_hook")
        out, report, _ = full_report(split)
        assert torch.equal(plain, out)
        assert report.sequences[0].layers.indices == [0, 1]
        assert all(v is not None for row in report.sequences[0].layers.attn_entropy for v in row)


def test_key_cache_stacking_is_bounded_without_changing_results(monkeypatch):
    """Layers' key caches are stacked only within a memory budget; a budget of one byte means one layer
    at a time (views, no copies), and the statistics are the same."""
    model = tiny_causal_lm("llama", num_hidden_layers=5)
    prompt = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(5))
    results = []
    for floor in (1 << 30, 1):
        monkeypatch.setattr(_step_attention, "_STACK_FLOOR", floor)
        monkeypatch.setattr(_step_attention, "_STACK_FRACTION", 0.0)
        with TelemetryCapture(capture="full") as tc:
            generate(model, prompt=prompt, max_new_tokens=5)
        results.append(tc.reports[0].to_dict()["sequences"])
    for a, b in zip(*results):
        assert a["layers"] == b["layers"]


@pytest.mark.parametrize("beams", [1, 3])
def test_logits_reduced_apart_from_layers_gives_the_same_report(monkeypatch, beams):
    """Large batch x vocabulary keeps the logit part out of the CUDA graph; the split path must agree."""
    model = tiny_causal_lm("llama")
    reports = []
    for split in (False, True):
        monkeypatch.setattr(_reducer.StepReducer, "_logits_in_graph", lambda self, scores, s=split: not s)
        with TelemetryCapture(capture="full") as tc:
            generate(model, prompt=BATCH, mask=BATCH_MASK, num_beams=beams, max_new_tokens=5)
        reports.append(tc.reports[0].to_dict()["sequences"])
    for a, b in zip(*reports):
        assert a["timeline"] == b["timeline"] and a["layers"] == b["layers"]
