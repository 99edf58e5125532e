"""Signal definitions against hand-computed values, on the host and on the device."""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import signals as sig
from opentelemetry_instrumentation_corevital.capture import chosen_surprisal, logit_stats
from opentelemetry_instrumentation_corevital.capture._stats import finish_stats


def device_stats(logits):
    """The device kernel's packed values finished on the host: [(entropy, top1, margin, mass)] per row."""
    packed, logp, _ = logit_stats(logits)
    return [finish_stats(row) for row in packed.tolist()], logp


TWO_WAY_ENTROPY = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # 0.8112781244591328


class TestHostDefinitions:
    def test_uniform(self):
        probs = [1 / 8] * 8
        assert sig.entropy_bits(probs) == pytest.approx(3.0, abs=1e-12)
        assert sig.perplexity(3.0) == 8.0
        assert sig.top1_prob(probs) == 0.125
        assert sig.top_k_margin(probs) == 0.0
        assert sig.top_k_mass(probs) == pytest.approx(1.0)

    def test_one_hot(self):
        probs = [0.0, 1.0, 0.0, 0.0]
        assert sig.entropy_bits(probs) == 0.0
        assert sig.perplexity(0.0) == 1.0
        assert sig.top_k_margin(probs) == 1.0
        assert sig.surprisal_bits(1.0) == 0.0

    def test_two_way_split(self):
        probs = [0.25, 0.75]
        assert TWO_WAY_ENTROPY == pytest.approx(0.8112781244591328, abs=1e-15)
        assert sig.entropy_bits(probs) == pytest.approx(TWO_WAY_ENTROPY, abs=1e-12)
        assert sig.top_k_margin(probs) == 0.5
        assert sig.surprisal_bits(0.25) == 2.0
        assert sig.surprisal_bits(0.0) == math.inf

    def test_softmax(self):
        assert sig.softmax([math.log(3.0), 0.0]) == pytest.approx([0.75, 0.25])


class TestDeviceStats:
    """The batched torch kernel must agree with the definitions exactly (float32 tolerance)."""

    def test_uniform_row(self):
        stats, logp = device_stats(torch.zeros(1, 1024))
        entropy, top1, margin, mass = stats[0]
        assert entropy == pytest.approx(10.0, abs=1e-5)  # log2(1024)
        assert top1 == pytest.approx(1 / 1024, rel=1e-6)
        assert margin == pytest.approx(0.0, abs=1e-9)
        assert mass == pytest.approx(10 / 1024, rel=1e-5)
        assert logp.shape == (1, 1024)

    def test_one_hot_row_with_masked_tokens(self):
        logits = torch.full((1, 50), float("-inf"))
        logits[0, 7] = 3.0
        stats, _ = device_stats(logits)
        assert stats[0] == (0.0, 1.0, 1.0, 1.0)

    def test_two_way_split_row(self):
        logits = torch.full((1, 6), float("-inf"))
        logits[0, 2] = math.log(3.0)
        logits[0, 4] = 0.0
        stats, logp = device_stats(logits)
        entropy, top1, margin, mass = stats[0]
        assert entropy == pytest.approx(TWO_WAY_ENTROPY, abs=1e-6)
        assert top1 == pytest.approx(0.75, abs=1e-7)
        assert margin == pytest.approx(0.5, abs=1e-7)
        assert mass == pytest.approx(1.0, abs=1e-7)
        assert chosen_surprisal(logp, torch.tensor([4]))[0, 0].item() == pytest.approx(2.0, abs=1e-6)
        assert chosen_surprisal(logp, torch.tensor([2]))[0, 0].item() == pytest.approx(-math.log2(0.75), abs=1e-6)

    def test_batch_rows_are_independent(self):
        logits = torch.stack([torch.zeros(16), torch.arange(16.0)])
        stats, _ = device_stats(logits)
        assert len(stats) == 2
        assert stats[0][0] == pytest.approx(4.0, abs=1e-5)
        expected = sig.entropy_bits(sig.softmax(list(range(16))))
        assert stats[1][0] == pytest.approx(expected, abs=1e-5)
        assert stats[1][3] == pytest.approx(sig.top_k_mass(sig.softmax(list(range(16)))), abs=1e-6)

    def test_nan_logit_poisons_the_row_only(self):
        logits = torch.zeros(2, 8)
        logits[1, 3] = float("nan")
        stats, _ = device_stats(logits)
        assert all(math.isfinite(v) for v in stats[0])
        assert all(math.isnan(v) for v in stats[1])

    def test_bfloat16_logits_are_upcast(self):
        packed, logp, _ = logit_stats(torch.zeros(1, 8, dtype=torch.bfloat16))
        assert packed.dtype == torch.float32 and logp.dtype == torch.float32
        assert finish_stats(packed[0].tolist())[0] == pytest.approx(3.0, abs=1e-6)


class TestAggregates:
    def test_mean_max_min_skip_nonfinite(self):
        values = [1.0, None, 3.0, float("nan"), float("inf")]
        assert sig.mean(values) == 2.0
        assert sig.maximum(values) == 3.0
        assert sig.minimum(values) == 1.0
        assert sig.count_nonfinite(values) == 3
        assert sig.mean([None]) is None

    def test_percentile_matches_numpy_linear(self):
        assert sig.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
        assert sig.percentile([5.0], 95) == 5.0
        assert sig.percentile([], 95) is None


class TestRepetition:
    def test_single_token_loop(self):
        loop = sig.find_repetition_loop([5] * 12)
        assert (loop.onset_step, loop.period, loop.length, loop.share) == (0, 1, 12, 1.0)

    def test_single_token_near_miss(self):
        assert sig.find_repetition_loop([5] * 11) is None

    def test_phrase_said_three_times(self):
        loop = sig.find_repetition_loop([1, 2, 3, 4] * 3)
        assert (loop.onset_step, loop.period, loop.length) == (0, 4, 12)

    def test_phrase_near_miss(self):
        assert sig.find_repetition_loop([1, 2, 3, 4] * 2 + [1, 2, 3]) is None

    def test_loop_after_a_prefix(self):
        tokens = [9, 8, 7] + [1, 2] * 6
        loop = sig.find_repetition_loop(tokens)
        assert (loop.onset_step, loop.period, loop.length) == (3, 2, 12)
        assert loop.share == pytest.approx(12 / 15)

    def test_long_period_needs_three_cycles(self):
        sentence = list(range(20, 30))
        assert sig.find_repetition_loop(sentence * 2 + [1]) is None
        loop = sig.find_repetition_loop([1] + sentence * 3)
        assert (loop.onset_step, loop.period, loop.length) == (1, 10, 30)

    def test_no_loop_in_distinct_tokens(self):
        assert sig.find_repetition_loop(list(range(100))) is None


class TestFlags:
    def test_high_entropy_counts_strictly_above(self):
        result = sig.high_entropy_steps([1.0, 5.0, 5.0, 4.0, 4.5, None], 4.0)
        assert (result.count, result.longest_run, result.first_step, result.fired) == (3, 2, 1, True)

    def test_high_entropy_quiet(self):
        assert not sig.high_entropy_steps([4.0, 3.9], 4.0).fired

    def test_nan_or_inf(self):
        result = sig.nan_or_inf([1.0, None, 2.0], [1.0, 1.0, float("inf")])
        assert (result.count, result.first_step, result.fired) == (2, 1, True)
        assert not sig.nan_or_inf([1.0, 2.0]).fired


class TestRisk:
    def test_factor_score_is_half_at_midpoint_and_monotone(self):
        spec = sig.FactorSpec(midpoint=2.0, scale=0.5, weight=0.4)
        assert spec.score(2.0) == 0.5
        assert spec.score(2.5) == pytest.approx(1 / (1 + math.exp(-1)))
        low = sig.FactorSpec(midpoint=0.2, scale=0.1, weight=0.3, higher_is_riskier=False)
        assert low.score(0.1) > low.score(0.2) > low.score(0.3)

    def test_noisy_or(self):
        factors = [sig.Factor("a", 0, 1.0, 0.5), sig.Factor("b", 0, 1.0, 0.5)]
        assert sig.combine(factors) == 0.75
        assert sig.combine([]) == 0.0

    def test_monotone_in_every_factor_of_every_profile(self):
        from opentelemetry_instrumentation_corevital.signals.profiles import builtin_names, load_profile

        for profile in map(load_profile, builtin_names()):
            specs = profile.factors
            base = {name: spec.midpoint for name, spec in specs.items()}
            reference = sig.risk_score(base, specs=specs).score
            for name, spec in specs.items():
                step = spec.scale if spec.higher_is_riskier else -spec.scale
                riskier = sig.risk_score(dict(base, **{name: base[name] + step}), specs=specs).score
                safer = sig.risk_score(dict(base, **{name: base[name] - step}), specs=specs).score
                assert safer < reference < riskier, (profile.name, name)

    def test_nonfinite_forces_one(self):
        risk = sig.risk_score({"entropy_mean": 0.1}, nonfinite=True)
        assert risk.score == 1.0 and risk.forced_by == "nan_or_inf"

    def test_missing_signals_are_skipped_not_zero(self):
        risk = sig.risk_score({"entropy_mean": None, "margin_mean": 0.25})
        assert [f.name for f in risk.factors] == ["margin_mean"]
        assert risk.score == pytest.approx(0.3 * 0.5)

    def test_levels(self):
        assert sig.risk_level(0.29) == "low"
        assert sig.risk_level(0.3) == "medium" and sig.risk_level(0.7) == "high"


def test_truncated_stats_bound_entropy_from_the_top_k():
    from opentelemetry_instrumentation_corevital.signals.logits import truncated_stats

    # p = 0.5, 0.25 shown, 0.25 hidden: H_k = 0.5*1 + 0.25*2 = 1.0; each hidden token has p <= 0.25 -> >= 2 bits
    entropy, top1, margin, mass = truncated_stats([math.log(0.25), math.log(0.5)])
    assert (entropy, top1, margin, mass) == pytest.approx((1.5, 0.5, 0.25, 0.75), rel=1e-12)
    # the whole distribution shown: the exact entropy
    assert truncated_stats([math.log(0.5), math.log(0.5)])[0] == pytest.approx(1.0, rel=1e-12)
