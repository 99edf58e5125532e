"""Detection-quality maths with hand-computed values."""

import math

import pytest

from opentelemetry_instrumentation_corevital.signals import evaluation as ev


def test_auroc_counts_pairs_ordered_correctly():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered right
    assert ev.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auroc_ties_count_half_and_perfect_separation_is_one():
    assert ev.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert ev.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert ev.auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="positive and one negative"):
        ev.auroc([0.1, 0.2], [1, 1])


def test_recall_at_fpr_picks_lowest_admissible_threshold():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert ev.recall_at_fpr(scores, labels, 0.0) == (0.5, 0.8)
    assert ev.recall_at_fpr(scores, labels, 0.5) == (1.0, 0.35)


def test_expected_calibration_error_by_hand():
    # bins: 0.05 (acc 0), 0.15 (acc 1), 0.85 (acc 1), 0.95 (acc 1), each weight 1/4
    got = ev.expected_calibration_error([0.05, 0.15, 0.95, 0.85], [0, 1, 1, 1])
    assert got == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)


def test_fit_logistic_uninformative_feature_learns_base_rate():
    weights, bias, means, scales = ev.fit_logistic([[2.0], [2.0], [2.0], [2.0]], [1, 0, 0, 0])
    assert weights == [pytest.approx(0.0)]
    assert bias == pytest.approx(math.log(1 / 3))
    assert ev.predict_logistic(weights, bias, means, scales, [2.0]) == pytest.approx(0.25)


def test_fit_logistic_symmetric_data_is_even_at_the_midpoint():
    weights, bias, means, scales = ev.fit_logistic([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    assert means == [1.5]
    assert bias == pytest.approx(0.0, abs=1e-9)
    assert weights[0] > 0
    assert ev.predict_logistic(weights, bias, means, scales, [1.5]) == pytest.approx(0.5)
    assert ev.predict_logistic(weights, bias, means, scales, [3.0]) > 0.5


def test_solve_small_system():
    assert ev._solve([[2.0, 1.0], [1.0, 3.0]], [3.0, 5.0]) == [pytest.approx(0.8), pytest.approx(1.4)]


def test_sigmoid_is_stable_for_large_inputs():
    assert ev.sigmoid(0.0) == 0.5
    assert ev.sigmoid(-1000.0) == 0.0
    assert ev.sigmoid(1000.0) == 1.0
