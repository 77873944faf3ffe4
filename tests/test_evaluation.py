"""Calibration, test-agnostic accuracy and post-hoc adjustment, against hand computations."""

import math

import numpy as np
import pytest
import torch

from longtail.evaluation import (
    adjust_logits,
    agnostic_accuracy,
    calibration,
    expected_calibration_error,
    prior,
    resampled_accuracy,
    shifted_distributions,
)


def test_a_perfectly_calibrated_predictor_has_ece_near_zero():
    rng = np.random.default_rng(0)
    n = 200_000
    confidence = rng.uniform(0.5, 1.0, n)
    right = rng.uniform(size=n) < confidence  # right exactly as often as it is confident
    probabilities = torch.tensor(np.stack([confidence, 1 - confidence], axis=1))
    targets = torch.tensor(np.where(right, 0, 1))
    assert expected_calibration_error(probabilities, targets) < 0.005


def test_ece_of_a_known_miscalibrated_predictor_matches_the_hand_value():
    # 10 predictions at confidence 0.9, 6 right; 10 at 0.65 (bin 10 of 15), 5 right
    probabilities = torch.tensor([[0.9, 0.1]] * 10 + [[0.65, 0.35]] * 10)
    targets = torch.tensor([0] * 6 + [1] * 4 + [0] * 5 + [1] * 5)
    expected = 10 / 20 * abs(0.6 - 0.9) + 10 / 20 * abs(0.5 - 0.65)
    assert expected_calibration_error(probabilities, targets) == pytest.approx(expected)


def test_nll_and_brier_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    targets = torch.tensor([0, 2])
    result = calibration(logits, targets)
    nll, brier = 0.0, 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        z = sum(math.exp(v) for v in row)
        p = [math.exp(v) / z for v in row]
        nll -= math.log(p[y]) / 2
        brier += sum((q - (c == y)) ** 2 for c, q in enumerate(p)) / 2
    assert result["nll"] == pytest.approx(nll)
    assert result["brier"] == pytest.approx(brier)


def test_test_distributions_run_forward_uniform_backward():
    distributions = shifted_distributions(100, 10)
    names = list(distributions)
    assert names[0] == "forward-50" and names[5] == "uniform" and names[-1] == "backward-50"
    assert distributions["forward-50"][0] == 100 and distributions["forward-50"][-1] == 2
    assert distributions["backward-50"] == distributions["forward-50"][::-1]
    assert distributions["uniform"] == [100] * 10


def test_weighted_accuracy_equals_resampled_accuracy_in_expectation():
    rng = np.random.default_rng(1)
    num_classes, per_class = 5, 40
    targets = np.repeat(np.arange(num_classes), per_class)
    hit_rate = np.array([0.95, 0.8, 0.6, 0.4, 0.2])  # a head-biased model
    right = rng.uniform(size=len(targets)) < hit_rate[targets]
    predictions = np.where(right, targets, (targets + 1) % num_classes)
    per_class_accuracy = [100 * right[targets == c].mean() for c in range(num_classes)]
    exact = agnostic_accuracy(per_class_accuracy, per_class)
    for name in ("forward-10", "uniform", "backward-5"):
        counts = shifted_distributions(per_class, num_classes)[name]
        draws = [resampled_accuracy(predictions, targets, counts, rng) for _ in range(4000)]
        assert np.mean(draws) == pytest.approx(exact[name], abs=0.15)
    assert exact["forward-10"] > exact["uniform"] > exact["backward-5"]


def test_posthoc_adjustment_to_the_same_prior_changes_nothing_and_to_uniform_subtracts_log_prior():
    logits = torch.randn(4, 3, dtype=torch.float64)
    train = prior([50, 30, 20])
    assert torch.allclose(adjust_logits(logits, train, train), logits)
    uniform = prior([1, 1, 1])
    expected = logits - torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)) + math.log(1 / 3)
    assert torch.allclose(adjust_logits(logits, train, uniform), expected)
    with pytest.raises(ValueError):
        prior([1, 0, 2])
