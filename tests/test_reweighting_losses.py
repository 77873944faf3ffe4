"""The re-weighting losses against their papers' equations, one sample and one class at a
time in float64 with Python's math module, and against their degenerate cases.

* Focal -- Lin et al., ICCV 2017, eq. 4-5.
* Class-balanced -- Cui et al., CVPR 2019, eq. 3-7 (weights summing to C).
* LDAM -- Cao et al., NeurIPS 2019, eq. 13 (margins C / n^{1/4}, scale s).
* Label smoothing -- Szegedy et al., CVPR 2016, Sec. 7.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longtail.losses import ClassBalancedLoss, CrossEntropyLoss, FocalLoss, LDAMLoss
from longtail.losses.reweighting import effective_number_weights
from references import batch, gradient, numerical_gradient, sigmoid, softmax_row

COUNTS = [500, 120, 40, 9, 3]


def cb_weights(counts, beta):
    inverse = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w * len(counts) / sum(inverse) for w in inverse]


def focal_reference(logits, targets, gamma, alpha=None):
    total, norm = 0.0, 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = softmax_row(row)[y]
        a = 1.0 if alpha is None else alpha[y]
        total += a * -((1 - p) ** gamma) * math.log(p)
        norm += a
    return total / norm


def class_balanced_reference(logits, targets, counts, beta, base, gamma):
    weights = cb_weights(counts, beta)
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        if base == "softmax":
            loss = -math.log(softmax_row(row)[y])
        else:
            loss = 0.0
            for j, z in enumerate(row):
                p_t = sigmoid(z) if j == y else 1 - sigmoid(z)
                factor = (1 - p_t) ** gamma if base == "focal" else 1.0
                loss += -factor * math.log(p_t)
        total += weights[y] * loss
    return total / len(targets)


def ldam_reference(logits, targets, counts, max_margin, scale):
    margins = [1 / n**0.25 for n in counts]
    margins = [m * max_margin / max(margins) for m in margins]
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        shifted = [scale * (z - (margins[j] if j == y else 0.0)) for j, z in enumerate(row)]
        total += -math.log(softmax_row(shifted)[y])
    return total / len(targets)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_focal_matches_the_equation_in_value_and_gradient(gamma, seed):
    logits, targets = batch(seed)
    alpha = [0.1, 0.2, 0.3, 0.25, 0.15]
    loss = FocalLoss(COUNTS, gamma=gamma, weight=alpha)(logits, targets)
    reference = lambda z: focal_reference(z, targets, gamma, alpha)  # noqa: E731
    assert loss.item() == pytest.approx(reference(logits), rel=1e-6)  # weights are float32 buffers
    torch.testing.assert_close(gradient(loss, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=1e-7)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, targets = batch(3)
    assert FocalLoss(gamma=0.0)(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item())


def test_focal_weighs_confident_samples_down():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]], dtype=torch.float64)
    per_sample = [FocalLoss(gamma=2.0)(logits[i : i + 1], torch.tensor([0])).item() for i in range(2)]
    plain = [F.cross_entropy(logits[i : i + 1], torch.tensor([0])).item() for i in range(2)]
    assert per_sample[0] / plain[0] < per_sample[1] / plain[1] < 1


@pytest.mark.parametrize("base,gamma", [("softmax", 0.0), ("sigmoid", 0.0), ("focal", 0.5), ("focal", 2.0)])
@pytest.mark.parametrize("beta", [0.9, 0.999])
def test_class_balanced_matches_the_equation_in_value_and_gradient(base, gamma, beta):
    logits, targets = batch(4)
    loss = ClassBalancedLoss(COUNTS, beta=beta, base=base, gamma=gamma)(logits, targets)
    reference = lambda z: class_balanced_reference(z, targets, COUNTS, beta, base, gamma)  # noqa: E731
    assert loss.item() == pytest.approx(reference(logits), rel=1e-6)  # weights are float32 buffers
    torch.testing.assert_close(gradient(loss, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("base", ClassBalancedLoss.BASES)
def test_class_balanced_with_beta_zero_or_equal_counts_is_the_plain_loss(base):
    logits, targets = batch(5)
    plain = class_balanced_reference(logits, targets, [1] * 5, 0.0, base, 1.0)
    assert ClassBalancedLoss(COUNTS, beta=0.0, base=base)(logits, targets).item() == pytest.approx(plain, rel=1e-9)
    assert ClassBalancedLoss([7] * 5, beta=0.999, base=base)(logits, targets).item() == pytest.approx(plain, rel=1e-9)
    if base == "softmax":
        assert plain == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-12)


def test_effective_number_weights_sum_to_the_classes_and_near_inverse_frequency():
    weights = effective_number_weights(COUNTS, 0.9999)
    assert weights.sum().item() == pytest.approx(5, rel=1e-6)
    assert torch.all(weights[1:] > weights[:-1])  # rarer classes weigh more
    near_one = effective_number_weights(COUNTS, 1 - 1e-9)
    inverse = torch.tensor([1 / n for n in COUNTS])
    torch.testing.assert_close(near_one, inverse * 5 / inverse.sum(), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(COUNTS, 1.0)


@pytest.mark.parametrize("max_margin,scale", [(0.5, 30.0), (0.3, 10.0)])
def test_ldam_matches_the_equation_in_value_and_gradient(max_margin, scale):
    logits, targets = batch(6, scale=0.3)  # cosine-like logits
    loss = LDAMLoss(COUNTS, max_margin=max_margin, scale=scale)(logits, targets)
    reference = lambda z: ldam_reference(z, targets, COUNTS, max_margin, scale)  # noqa: E731
    assert loss.item() == pytest.approx(reference(logits), rel=1e-6)  # weights are float32 buffers
    torch.testing.assert_close(gradient(loss, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=1e-6)


def test_ldam_margins_follow_the_quarter_power_and_zero_margin_is_scaled_cross_entropy():
    loss = LDAMLoss(COUNTS, max_margin=0.5)
    assert loss.margins[-1].item() == pytest.approx(0.5)
    assert loss.margins[0].item() == pytest.approx(0.5 * (3 / 500) ** 0.25, rel=1e-6)
    logits, targets = batch(7, scale=0.3)
    zero = LDAMLoss(COUNTS, max_margin=0.0, scale=30.0)(logits, targets)
    assert zero.item() == pytest.approx(F.cross_entropy(30.0 * logits, targets).item(), rel=1e-12)


def test_label_smoothing_matches_the_mixed_target():
    logits, targets = batch(8)
    smoothing = 0.1
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = softmax_row(row)
        expected += (1 - smoothing) * -math.log(p[y]) + smoothing / 5 * sum(-math.log(q) for q in p)
    loss = CrossEntropyLoss(label_smoothing=smoothing)(logits, targets)
    assert loss.item() == pytest.approx(expected / len(targets), rel=1e-9)
    assert CrossEntropyLoss(label_smoothing=0.0)(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-12)


@pytest.mark.parametrize("make", [
    lambda: FocalLoss(COUNTS, gamma=-1.0),
    lambda: ClassBalancedLoss(COUNTS, base="tanh"),
    lambda: ClassBalancedLoss(COUNTS, beta=1.5),
    lambda: LDAMLoss(COUNTS, scale=0.0),
    lambda: LDAMLoss([10, 0, 3]),
    lambda: CrossEntropyLoss(label_smoothing=1.5),
])
def test_bad_arguments_are_refused(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("make", [
    lambda: FocalLoss(COUNTS), lambda: ClassBalancedLoss(COUNTS, base="focal"), lambda: LDAMLoss(COUNTS),
])
def test_under_bf16_autocast_they_compute_in_float32(make):
    logits, targets = batch(9)
    expected = make()(logits.detach().float(), targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = make()(logits.detach().bfloat16(), targets)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=2e-2)
