"""Diagnosis signals on constructed inputs with exact values: each flag fires on its case and stays quiet on the
near miss; compound signals, early warnings, blame, fingerprint and narrative reproduce hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from opentelemetry_instrumentation_corevital import signals as sig
from opentelemetry_instrumentation_corevital.signals import blame, compound, layers, narrative, trend
from opentelemetry_instrumentation_corevital.signals.fingerprint import (
    FINGERPRINT_FIELDS,
    FINGERPRINT_NAMES,
    FINGERPRINT_VERSION,
    fingerprint,
)

LN3 = math.log(3.0)


def smooth_norms(layer_count: int = 5, steps: int = 6) -> list[list[float]]:
    """Norms growing with depth (10, 20, 30, ...), the same at every step."""
    return [[10.0 * (i + 1)] * steps for i in range(layer_count)]


class TestRepetitionTokens:
    def test_two_cycles_of_a_six_token_phrase(self):
        loop = sig.find_repetition_loop([1, 2, 3, 4, 5, 6] * 2, min_cycles=2, min_tokens=12)
        assert (loop.onset_step, loop.period, loop.length, loop.share) == (0, 6, 12, 1.0)

    def test_near_miss_one_token_short(self):
        assert sig.find_repetition_loop([1, 2, 3, 4, 5, 6] * 2 + [9], min_cycles=2, min_tokens=13) is None
        assert sig.find_repetition_loop([1, 2, 3, 4, 5] * 2, min_cycles=2, min_tokens=12) is None  # 10 tokens

    def test_ngram_repeat_rate_is_seq_rep_n(self):
        # 4-grams of [1,2,3,4,1,2,3,4]: (1234)(2341)(3412)(4123)(1234) -> 4 unique of 5
        assert sig.ngram_repeat_rate([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 - 4 / 5)
        assert sig.ngram_repeat_rate(list(range(10)), 4) == 0.0
        assert sig.ngram_repeat_rate([1, 2, 3], 4) is None

    def test_copied_steps(self):
        assert sig.copied_steps([7, 8, 7, 8, 7], 2) == [False, False, False, True, True]


class TestHiddenLoop:
    @staticmethod
    def geometric(d: float, steps: int = 20) -> list[float]:
        """Norms whose log rises by exactly d per step: |ln n(t) - ln n(t-1)| = d."""
        return [100.0 * math.exp(d * t) for t in range(steps)]

    def test_fires_when_the_state_repeats_within_tolerance(self):
        loop = layers.hidden_loop(
            self.geometric(0.014), None, window=12, max_period=4, norm_tolerance=0.015, cos_tolerance=0.015
        )
        assert loop is not None and loop.period == 1
        assert loop.recurrence == pytest.approx(0.014)
        assert loop.onset_step == 0  # first window ends at step 12: starts at 1, minus one period

    def test_near_miss_just_outside_tolerance(self):
        assert (
            layers.hidden_loop(
                self.geometric(0.016), None, window=12, max_period=4, norm_tolerance=0.015, cos_tolerance=0.015
            )
            is None
        )

    def test_period_three_pattern_picks_three_not_six(self):
        norms = [10.0, 20.0, 40.0] * 8
        loop = layers.hidden_loop(norms, None, window=12, max_period=8, norm_tolerance=0.015, cos_tolerance=0.015)
        assert (loop.period, loop.onset_step, loop.end_step, loop.recurrence) == (3, 0, 23, 0.0)

    def test_full_capture_needs_the_cosine_series_to_repeat_too(self):
        norms = [10.0, 20.0, 40.0] * 8
        cos = [0.5, 0.6, 0.7] * 8
        assert (
            layers.hidden_loop(norms, cos, window=12, max_period=4, norm_tolerance=0.015, cos_tolerance=0.015).period
            == 3
        )
        drifting = [0.5 + 0.016 * t for t in range(24)]  # |c(t) - c(t-3)| = 0.048 everywhere
        assert (
            layers.hidden_loop(norms, drifting, window=12, max_period=4, norm_tolerance=0.015, cos_tolerance=0.015)
            is None
        )

    def test_missing_steps_never_complete_a_window(self):
        norms: list[float | None] = [10.0, None] * 12
        assert layers.hidden_loop(norms, None, window=4, max_period=2, norm_tolerance=1.0, cos_tolerance=1.0) is None


class TestMidLayerAnomaly:
    def test_spike_at_one_layer_fires(self):
        norms = smooth_norms()
        norms[2][4] *= 3.1
        result = layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0)
        assert result.fired and result.layers == [2] and result.first_step == 4
        (anomaly,) = result.anomalies
        assert anomaly.log_ratio == pytest.approx(math.log(3.1))
        assert anomaly.ratio == pytest.approx(3.1)

    def test_near_miss_spike(self):
        norms = smooth_norms()
        norms[2][4] *= 2.9
        result = layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0)
        assert not result.fired
        assert math.exp(result.max_log_ratio) == pytest.approx(2.9)

    def test_jump_that_persists_to_the_last_layer_fires_at_its_entry_layer(self):
        norms = smooth_norms()
        for i in (2, 3, 4):
            norms[i][3] *= 8.0
        result = layers.mid_layer_anomalies(norms, [0, 4, 8, 12, 16], list(range(6)), 3.0)
        assert result.layers == [8] and result.first_step == 3
        (anomaly,) = result.anomalies
        assert anomaly.kind == "jump" and anomaly.ratio == pytest.approx(8.0)

    def test_near_miss_jump(self):
        norms = smooth_norms()
        for i in (2, 3, 4):
            norms[i][3] *= 2.9
        result = layers.mid_layer_anomalies(norms, [0, 4, 8, 12, 16], list(range(6)), 3.0)
        assert not result.fired and math.exp(result.max_log_ratio) == pytest.approx(2.9)

    def test_jump_fading_with_depth_still_counts_while_it_is_carried(self):
        norms = smooth_norms(6)
        for i, factor in zip((2, 3, 4, 5), (8.0, 4.0, 2.0, 1.33)):  # 1.33 >= 3 ** 0.25 = 1.316 at the last layer
            norms[i][3] *= factor
        result = layers.mid_layer_anomalies(norms, list(range(6)), list(range(6)), 3.0)
        assert result.layers == [2] and result.anomalies[0].ratio == pytest.approx(8.0)
        norms[5][3] *= 1.3 / 1.33  # the last layer keeps less than a quarter of ln 3: not carried to the output
        assert not layers.mid_layer_anomalies(norms, list(range(6)), list(range(6)), 3.0).fired

    def test_band_cancelled_before_the_last_layer_is_healthy(self):
        # Massive activations: written at layer 1, carried through 1-3, gone at the last layer.
        norms = smooth_norms()
        for i in (1, 2, 3):
            norms[i][3] *= 20.0
        result = layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0)
        assert not result.fired

    def test_a_layer_always_far_above_its_neighbours_is_its_normal(self):
        norms = smooth_norms()
        norms[2] = [v * 50.0 for v in norms[2]]
        assert not layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0).fired

    def test_nonfinite_inner_layer(self):
        norms: list[list[float | None]] = smooth_norms()  # type: ignore[assignment]
        norms[3][1] = None
        result = layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0)
        assert result.anomalies[0].nonfinite and result.anomalies[0].layer == 3

    def test_needs_three_layers_for_a_spike(self):
        assert not layers.mid_layer_anomalies(smooth_norms(2), [0, 1], list(range(6)), 3.0).fired


class TestAttentionCollapse:
    def test_fires_on_three_consecutive_steps_at_the_share(self):
        collapsed = [[0.0, 0.0, 0.3, 0.3, 0.3, 0.0], [0.0, 0.0, 0.3, 0.3, 0.3, 0.0]]
        result = layers.attention_collapse(collapsed, [0, 1], [0, 1, 2, 3, 4, 5], 0.25, 3)
        assert (result.fired, result.onset_step, result.steps_above) == (True, 2, 3)
        assert result.sustained_share == pytest.approx(0.3) and result.peak_share == pytest.approx(0.3)
        assert result.worst_layer == 0 and result.worst_layer_share == pytest.approx(0.15)

    def test_near_miss_broken_run(self):
        collapsed = [[0.0, 0.0, 0.3, 0.3, 0.2, 0.3]]
        result = layers.attention_collapse(collapsed, [0], [0, 1, 2, 3, 4, 5], 0.25, 3)
        assert not result.fired and result.sustained_share == pytest.approx(0.2)

    def test_share_is_the_mean_over_layers(self):
        assert layers.collapsed_share_per_step([[1.0, 0.0], [0.0, None]]) == [0.5, 0.0]


class TestHighEntropyRun:
    def test_longest_run_reaches_the_minimum(self):
        result = sig.high_entropy_steps([1.0, 8.0, 8.0, 8.0], 7.0)
        assert result.longest_run >= 3

    def test_near_miss(self):
        assert sig.high_entropy_steps([8.0, 8.0, 6.0, 8.0], 7.0).longest_run == 2


class TestTrend:
    def test_cusum_hand_computed(self):
        # baseline 1; excess 3 - 1 - 0.5 = 1.5 per step: S = 1.5, 3.0, 4.5 >= 4 at index 6; onset after index 3
        alarm = trend.cusum([1, 1, 1, 1, 3, 3, 3, 3], window=4, slack=0.5, threshold=4.0)
        assert (alarm.detected_step, alarm.onset_step, alarm.baseline, alarm.shift) == (6, 4, 1.0, 2.0)

    def test_reference_level_raises_the_baseline(self):
        # baseline max(1, 2) = 2: excess 0.5 per step reaches only 2.0
        assert trend.cusum([1, 1, 1, 1, 3, 3, 3, 3], window=4, slack=0.5, threshold=4.0, reference=2.0) is None

    def test_single_spike_does_not_alarm(self):
        assert trend.cusum([1, 1, 1, 1, 5, 1, 1, 1], window=4, slack=0.5, threshold=4.0) is None

    def test_margin_collapse(self):
        warning = trend.margin_collapse([0.8] * 4 + [0.2] * 4, window=4, slack=0.1, threshold=1.0)
        # excess 0.8 - 0.1 - 0.2 = 0.5: S = 0.5, 1.0 at index 5
        assert (warning.onset_step, warning.detected_step) == (4, 5)
        assert warning.value == pytest.approx(0.6)
        assert warning.severity == pytest.approx(1 - math.exp(-2.0))

    def test_entropy_acceleration_severity(self):
        warning = trend.entropy_acceleration([1.0] * 4 + [5.0] * 4, window=4, slack_bits=1.0, threshold_bits=5.0)
        assert (warning.onset_step, warning.detected_step, warning.value) == (4, 5, 4.0)
        assert warning.severity == pytest.approx(1 - math.exp(-2.0))

    def test_slopes(self):
        assert trend.slope([0.0, 1.0, None, 3.0]) == pytest.approx(1.0)
        slopes = trend.suffix_slopes([0.0, 2.0, 1.0, 3.0])
        assert slopes[0] == pytest.approx(trend.slope([0.0, 2.0, 1.0, 3.0]))
        assert slopes[1] == pytest.approx(trend.slope([2.0, 1.0, 3.0]))
        assert slopes[3] is None

    def test_rolling_mean(self):
        assert trend.rolling_mean([1.0, 3.0, None, 5.0], 2) == [None, 2.0, 3.0, 5.0]


class TestCompound:
    def test_confident_repetition(self):
        copied = [False] * 4 + [True] * 8
        entropy = [3.0] * 4 + [1.0] * 8
        top1 = [0.5] * 4 + [0.9] * 8
        signal = compound.confident_repetition(
            entropy, top1, copied, window=4, max_entropy_bits=1.5, min_copied_share=0.75
        )
        # the first window with 3 of 4 copied steps starts at 1 (steps 1-4, entropy mean (3+3+3+1)/4 = 2.5: no);
        # at 2: 2 copied of 4; at 3: 3 of 4 copied, entropy (3+1+1+1)/4 = 1.5 (not below); at 4: all copied, 1.0
        assert signal.onset_step == 4 and signal.severity == pytest.approx(0.9)

    def test_confident_repetition_near_miss_unsure(self):
        assert (
            compound.confident_repetition(
                [1.6] * 8, [0.9] * 8, [True] * 8, window=4, max_entropy_bits=1.5, min_copied_share=0.75
            )
            is None
        )

    def test_context_loss(self):
        share = [1.0] + [0.8] * 4 + [0.3] * 8
        entropy = [2.0] + [1.0] * 4 + [4.0] * 8
        signal = compound.context_loss(share, entropy, window=4, min_ratio=0.5, entropy_rise_bits=2.0)
        # opening (steps 1-4): share 0.8, entropy 1.0; first window from step 5: share 0.3 < 0.4, entropy 4 >= 3
        assert signal.onset_step == 5
        assert signal.severity == pytest.approx(1 - 0.3 / 0.8)

    def test_context_loss_near_miss_entropy_did_not_rise_enough(self):
        share = [1.0] + [0.8] * 4 + [0.3] * 8
        entropy = [2.0] + [1.0] * 4 + [2.9] * 8
        assert compound.context_loss(share, entropy, window=4, min_ratio=0.5, entropy_rise_bits=2.0) is None

    def test_degeneration(self):
        n = 16
        entropy = [0.1 * t for t in range(n)]
        margin = [0.9 - 0.02 * t for t in range(n)]
        surprisal = [0.2 * t for t in range(n)]
        signal = compound.degeneration(
            entropy, margin, surprisal, window=4, entropy_slope=0.05, margin_slope=0.01, surprisal_slope=0.1
        )
        assert signal.onset_step == 0
        assert signal.evidence["entropy_slope"] == pytest.approx(0.1)
        assert signal.severity == pytest.approx(1 - math.exp(-0.1 * 16 / 2.0))

    def test_degeneration_near_miss_flat_surprisal(self):
        n = 16
        assert (
            compound.degeneration(
                [0.1 * t for t in range(n)],
                [0.9 - 0.02 * t for t in range(n)],
                [0.09 * t for t in range(n)],
                window=4,
                entropy_slope=0.05,
                margin_slope=0.01,
                surprisal_slope=0.1,
            )
            is None
        )

    def test_attention_bottleneck(self):
        signal = compound.attention_bottleneck(
            [0.0, 0.2, 0.2, 0.2], [5.0] * 4, window=2, min_share=0.125, min_entropy_bits=4.0
        )
        assert signal.onset_step == 1 and signal.severity == pytest.approx(0.8)
        assert (
            compound.attention_bottleneck(
                [0.0, 0.2, 0.2, 0.2], [3.9] * 4, window=2, min_share=0.125, min_entropy_bits=4.0
            )
            is None
        )


class TestBlame:
    def test_spike_severity(self):
        assert blame.spike_severity(3.0, 3.0) == pytest.approx(0.5)
        assert blame.spike_severity(9.0, 3.0) == pytest.approx(0.75)
        assert blame.spike_severity(2.9, 3.0) == 0.0
        assert blame.spike_severity(math.inf, 3.0) == 1.0

    def test_nonfinite_blames_the_layer_where_it_enters(self):
        norms: list[list[float | None]] = smooth_norms()  # type: ignore[assignment]
        for i in (2, 3, 4):
            norms[i][4] = None
        (first,) = blame.blame_layers(indices=[0, 1, 2, 3, 4], steps=list(range(6)), hidden_norm=norms, norm_ratio=3.0)
        assert (first.layer, first.severity, first.reasons[0].code, first.reasons[0].step) == (2, 1.0, "nonfinite", 4)

    def test_norm_spike_and_collapse_ranked_worst_first(self):
        norms = smooth_norms()
        norms[2][4] *= 9.0
        result = layers.mid_layer_anomalies(norms, [0, 1, 2, 3, 4], list(range(6)), 3.0)
        collapsed = [[0.0] * 6, [0.6] * 6, [0.0] * 6, [0.0] * 6, [0.0] * 6]
        ranked = blame.blame_layers(
            indices=[0, 1, 2, 3, 4],
            steps=list(range(6)),
            hidden_norm=norms,
            anomalies=result.anomalies,
            norm_ratio=3.0,
            collapsed=collapsed,
            collapse_share=0.5,
        )
        assert [(b.layer, round(b.severity, 4)) for b in ranked] == [(2, 0.75), (1, 0.6)]
        assert ranked[0].reasons[0].detail == "norm 9.0x above both neighbours at step 4"

    def test_healthy_run_blames_nothing(self):
        assert (
            blame.blame_layers(
                indices=[0, 1, 2, 3, 4],
                steps=list(range(6)),
                hidden_norm=smooth_norms(),
                norm_ratio=3.0,
                collapsed=[[0.1] * 6] * 5,
            )
            == []
        )


class TestFingerprint:
    def test_fixed_length_and_exact_values(self):
        vector = fingerprint(
            entropy=[1.0, 3.0, 2.0, 2.0],
            margin=[0.5, 0.1, 0.3, 0.3],
            surprisal=[1.0, 1.0, 2.0, 2.0],
            topk_mass=[0.9, 0.9, 0.8, 0.8],
            high_entropy_bits=2.5,
            ngram_repeat_rate=0.25,
            distinct_token_ratio=0.75,
            loop_share=0.0,
            last_layer_norms=[10.0, 30.0],
            first_layer_norms=[5.0, 5.0],
        )
        assert len(vector) == len(FINGERPRINT_FIELDS) == len(FINGERPRINT_NAMES) == 18 and FINGERPRINT_VERSION == 1
        named = dict(zip(FINGERPRINT_NAMES, vector))
        assert named["entropy_mean"] == 2.0
        assert named["entropy_std"] == pytest.approx(math.sqrt(0.5))
        assert named["entropy_max"] == 3.0
        assert named["entropy_slope"] == pytest.approx(0.2)  # sum (x - 1.5)(y - 2) = 1.0 over sum (x - 1.5)^2 = 5
        assert named["entropy_late_minus_early"] == 1.0  # last quarter [2.0] minus first quarter [1.0]
        assert named["margin_mean"] == pytest.approx(0.3)
        assert named["tail_mass_mean"] == pytest.approx(0.15)
        assert named["high_entropy_fraction"] == 0.25
        assert named["entropy_margin_correlation"] == pytest.approx(-1.0)
        assert named["log2_output_tokens"] == 2.0
        assert named["last_layer_norm_cv"] == pytest.approx(0.5)
        assert named["depth_norm_growth"] == pytest.approx(math.log(4.0))

    def test_no_finite_step_gives_none(self):
        assert (
            fingerprint(
                entropy=[None],
                margin=[None],
                surprisal=[None],
                topk_mass=[None],
                high_entropy_bits=4.0,
                ngram_repeat_rate=None,
                distinct_token_ratio=None,
                loop_share=0.0,
                last_layer_norms=None,
                first_layer_norms=None,
            )
            is None
        )


class TestNarrative:
    def facts(self, **overrides):
        base = dict(
            steps=40,
            risk=0.91,
            level="high",
            factors=[
                narrative.FactorFact("repetition_share", 0.8, 0.99, 0.89),
                narrative.FactorFact("entropy_mean", 1.2, 0.05, 0.02),
            ],
            peak_entropy=6.42,
            peak_step=0,
            peak_token="Hello",
            high_entropy_steps=1,
            high_entropy_bits=4.0,
            loop_onset=3,
            loop_period=2,
            loop_share=0.8,
            loop_hidden=0.004,
            fired=["repetition_loop"],
        )
        base.update(overrides)
        return narrative.NarrativeFacts(**base)

    def test_mentions_the_runs_values(self):
        text = narrative.narrative(self.facts())
        for fragment in (
            "Risk 0.91 (high)",
            "a repetition loop covering 80% of the output",
            "6.42 bits at step 0",
            "token 'Hello'",
            "From step 3",
            "2-token cycle",
            "recurrence 0.004",
            "stopping at step 7 would have saved 33 tokens",
        ):
            assert fragment in text, fragment
        assert 2 <= text.count(". ") + 1 <= 5

    def test_a_run_stop_on_stopped_is_not_advised_to_stop(self):
        text = narrative.narrative(self.facts(steps=8, stopped_step=7, stopped_by="repetition_loop"))
        assert text.endswith(
            "stop_on stopped the loop at step 7, 4 steps after its onset; to avoid it altogether, penalise "
            "repetition (repetition_penalty of 1.1-1.3 or no_repeat_ngram_size=4)."
        )
        assert "would have saved" not in text and "stop the loop" not in text
        unsure = self.facts(
            loop_onset=None,
            loop_period=None,
            fired=["high_entropy"],
            factors=[narrative.FactorFact("attention_collapse_share", 0.2, 0.3, 0.3)],
            findings=[narrative.Finding("margin_collapse", "The margin fell.", 5)],
        )
        assert narrative.narrative(unsure).endswith(
            "Consider stopping earlier: the trend warnings fired before the end of the output."
        )
        stopped = narrative.narrative(dataclasses.replace(unsure, stopped_step=11, stopped_by="high_entropy"))
        assert stopped.endswith("stop_on stopped it at step 11 (high_entropy): review the output up to there.")

    def test_different_runs_different_words(self):
        healthy = narrative.narrative(
            self.facts(
                risk=0.08,
                level="low",
                loop_onset=None,
                loop_period=None,
                loop_share=None,
                fired=[],
                factors=[narrative.FactorFact("entropy_mean", 1.21, 0.12, 0.05)],
            )
        )
        assert healthy.startswith("Risk 0.08 (low) over 40 tokens; its largest part, a mean entropy of 1.21 bits")
        assert healthy.endswith(
            "No action needed: no flag fired and the highest factor score is 0.12 "
            "(0.5 is a factor's calibrated midpoint)."
        )

    def test_forced_by_nan(self):
        text = narrative.narrative(
            self.facts(
                risk=1.0,
                forced_by="nan_or_inf",
                nonfinite_steps=3,
                nonfinite_first_step=5,
                nonfinite_layer=7,
                loop_onset=None,
            )
        )
        assert "non-finite values appeared at 3 of 40 steps, first at step 5" in text
        assert text.endswith("inspect layer 7, where they first appear.")

    def test_at_most_five_sentences(self):
        findings = [narrative.Finding(f"x{i}", f"Finding number {i}.", 4) for i in range(6)]
        text = narrative.narrative(self.facts(findings=findings, blamed=[(3, "norm 4.0x above its neighbours")]))
        assert len([s for s in text.split(". ") if s]) <= 5
