"""The one-vs-rest losses and IIF against their papers' equations, one sample and one class
at a time in plain Python, and against their degenerate cases.

* Bal-BCE -- Xu et al., CVPR 2023 (LiVT): BCE of z + log pi - log(1 - pi).
* EQL -- Tan et al., CVPR 2020: w_j = 1 - T_lambda(f_j)(1 - y_j).
* EFL -- Li et al., CVPR 2022: gamma_j = gamma_b + s(1 - g_j), factor gamma_j / gamma_b.
* GOL -- Alexandridis et al., ECCV 2022: eta(z) = exp(-exp(-z)).
* DB -- Wu et al., ECCV 2020: r_hat = alpha + sigmoid(beta(r - mu)), negative-tolerant terms.
* IIF -- Alexandridis et al., TIP 2023: CE(w * z), w from the inverse image frequency.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from references import batch, gradient, numerical_gradient, sigmoid, softmax_row

from longtail.losses import (
    BalancedBCELoss,
    DistributionBalancedLoss,
    EqualizationLoss,
    EqualizedFocalLoss,
    GumbelLoss,
    IIFLoss,
)
from longtail.losses.rebalancing import inverse_image_frequency

COUNTS = [500, 120, 40, 9, 3]
TOTAL = sum(COUNTS)


def bce_terms(z, positive):
    """-log p_t of one binary problem."""
    return -math.log(sigmoid(z)) if positive else -math.log(1 - sigmoid(z))


def check(loss_module, reference, logits, atol=1e-7):
    loss = loss_module(logits, reference.targets)
    assert loss.item() == pytest.approx(reference(logits), rel=1e-6)
    torch.testing.assert_close(gradient(loss, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=atol)


def reference_of(targets):
    def wrap(function):
        function.targets = targets
        return function
    return wrap


def test_balanced_bce_matches_the_equation_and_on_equal_counts_is_bce_with_a_constant_shift():
    logits, targets = batch(0)

    @reference_of(targets)
    def reference(z):
        total = 0.0
        for row, y in zip(z.tolist(), targets.tolist()):
            for j, value in enumerate(row):
                prior = COUNTS[j] / TOTAL
                total += bce_terms(value + math.log(prior) - math.log(1 - prior), j == y)
        return total / len(targets)

    check(BalancedBCELoss(COUNTS), reference, logits)
    equal = BalancedBCELoss([4] * 5)(logits, targets)
    shift = math.log(1 / 5) - math.log(4 / 5)
    plain = F.binary_cross_entropy_with_logits(logits + shift, F.one_hot(targets, 5).double(), reduction="sum")
    assert equal.item() == pytest.approx(plain.item() / len(targets), rel=1e-9)


@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.1])
def test_equalization_loss_drops_the_rare_classes_negative_terms(threshold):
    logits, targets = batch(1)

    @reference_of(targets)
    def reference(z):
        total = 0.0
        for row, y in zip(z.tolist(), targets.tolist()):
            for j, value in enumerate(row):
                rare = COUNTS[j] / TOTAL < threshold
                weight = 1 - (1 if rare else 0) * (0 if j == y else 1)
                total += weight * bce_terms(value, j == y)
        return total / len(targets)

    check(EqualizationLoss(COUNTS, frequency_threshold=threshold, drop_probability=1.0), reference, logits)
    if threshold == 0.0:  # no class is rare: the sigmoid cross-entropy
        plain = F.binary_cross_entropy_with_logits(logits, F.one_hot(targets, 5).double(), reduction="sum")
        assert EqualizationLoss(COUNTS, 0.0)(logits, targets).item() == pytest.approx(plain.item() / 7, rel=1e-9)


def test_equalization_loss_drops_each_rare_negative_term_with_its_probability():
    logits, targets = batch(11)
    threshold = 0.1  # the three rarest classes are rare
    loss = EqualizationLoss(COUNTS, threshold, drop_probability=0.3)
    mean = sum(loss(logits, targets).item() for _ in range(4000)) / 4000
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        for j, value in enumerate(row):
            rare_negative = COUNTS[j] / TOTAL < threshold and j != y
            expected += (0.7 if rare_negative else 1.0) * bce_terms(value, j == y)
    assert mean == pytest.approx(expected / len(targets), rel=0.01)
    assert int(loss.calls) == 4000
    again = EqualizationLoss(COUNTS, threshold, drop_probability=0.3)
    again.load_state_dict(loss.state_dict())  # the draws go on where the saved loss left them
    assert again(logits, targets).item() == loss(logits, targets).item()
    plain = F.binary_cross_entropy_with_logits(logits, F.one_hot(targets, 5).double(), reduction="sum") / 7
    assert EqualizationLoss(COUNTS, threshold, 0.0)(logits, targets).item() == pytest.approx(plain.item(), rel=1e-9)


def efl_reference(z, targets, ratio, focusing, scale, alpha):
    total = 0.0
    for row, y in zip(z.tolist(), targets.tolist()):
        for j, value in enumerate(row):
            gamma = focusing + scale * (1 - ratio[j])
            p_t = sigmoid(value) if j == y else 1 - sigmoid(value)
            alpha_t = alpha if j == y else 1 - alpha
            total += -alpha_t * gamma / focusing * (1 - p_t) ** gamma * math.log(p_t)
    return total / len(targets)


def test_equalized_focal_loss_value_and_its_accumulated_gradient_ratio():
    loss = EqualizedFocalLoss(COUNTS, focusing=2.0, scale=8.0, alpha=0.25)
    logits, targets = batch(2)
    # before any gradient, g = 1: the alpha-balanced sigmoid focal loss
    assert loss(logits, targets).item() == pytest.approx(efl_reference(logits, targets, [1] * 5, 2, 8, 0.25), rel=1e-6)
    value = loss(logits, targets)
    value.backward()  # accumulates |dL/dz| of the positive and negative terms, class by class
    grad = logits.grad
    positive = F.one_hot(targets, 5).bool()
    expected_ratio = [min(1.0, grad[:, j][positive[:, j]].abs().sum().item() / grad[:, j][~positive[:, j]].abs().sum().item())
                      for j in range(5)]
    torch.testing.assert_close(loss.gradient_ratio(), torch.tensor(expected_ratio, dtype=torch.float64))
    second, targets2 = batch(3)
    assert loss(second, targets2).item() == pytest.approx(
        efl_reference(second, targets2, expected_ratio, 2, 8, 0.25), rel=1e-6)
    state = loss.state_dict()  # the accumulated gradients are kept in checkpoints
    assert set(state) == {"positive_gradient", "negative_gradient"}


def test_equalized_focal_loss_gradient_is_the_focal_losss_at_the_accumulated_ratio():
    loss = EqualizedFocalLoss(COUNTS, focusing=2.0, scale=8.0, alpha=0.25)
    warm, warm_targets = batch(12)
    loss(warm, warm_targets).backward()  # some accumulated ratio, below 1 for some classes
    ratio = loss.gradient_ratio().tolist()
    assert min(ratio) < 1
    logits, targets = batch(4)
    reference = lambda z: efl_reference(z, targets, ratio, 2.0, 8.0, 0.25)  # noqa: E731
    value = loss.eval()(logits, targets)  # in eval mode: nothing accumulated by this check
    torch.testing.assert_close(gradient(value, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=1e-7)
    assert loss.gradient_ratio().tolist() == ratio


def test_gumbel_loss_matches_the_equation_and_reads_gumbel_probabilities_at_inference():
    logits, targets = batch(5, scale=1.5)

    @reference_of(targets)
    def reference(z):
        total = 0.0
        for row, y in zip(z.tolist(), targets.tolist()):
            for j, value in enumerate(row):
                eta = math.exp(-math.exp(-value))
                total += -math.log(eta) if j == y else -math.log(1 - eta)
        return total / len(targets)

    assert logits.abs().max() < 4  # inside the clamp
    check(GumbelLoss(), reference, logits, atol=1e-6)
    eta = torch.exp(-torch.exp(-logits.detach()))
    torch.testing.assert_close(GumbelLoss().inference_logits(logits.detach()).softmax(1), eta / eta.sum(1, keepdim=True))
    extreme = torch.tensor([[-50.0, 80.0]], requires_grad=True)
    value = GumbelLoss()(extreme, torch.tensor([0]))
    assert torch.isfinite(value) and torch.isfinite(gradient(value, extreme)).all()


def db_reference(z, labels, counts, alpha, beta, mu, tolerance, kappa, gamma):
    total, terms = 0.0, 0
    for row, positives in zip(z.tolist(), labels.tolist()):
        instance = sum(1 / counts[j] for j, on in enumerate(positives) if on)
        for i, value in enumerate(row):
            r = (1 / counts[i]) / instance
            r_hat = alpha + sigmoid(beta * (r - mu))
            prior = counts[i] / sum(counts)
            shifted = value + kappa * math.log(prior / (1 - prior))
            if positives[i]:
                term = math.log(1 + math.exp(-shifted))
                p_t = sigmoid(shifted)
            else:
                term = math.log(1 + math.exp(tolerance * shifted)) / tolerance
                p_t = 1 - sigmoid(shifted)
            total += r_hat * term * (1 - p_t) ** gamma
            terms += 1
    return total / terms


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_distribution_balanced_loss_on_multi_label_targets(gamma):
    logits, _ = batch(6)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0],
                           [1, 0, 0, 0, 1], [0, 0, 1, 1, 0], [0, 1, 0, 0, 0]])
    module = DistributionBalancedLoss(COUNTS, gamma=gamma)
    reference = lambda z: db_reference(z, labels, COUNTS, 0.1, 10.0, 0.2, 2.0, 0.05, gamma)  # noqa: E731
    loss = module(logits, labels)
    assert loss.item() == pytest.approx(reference(logits), rel=1e-6)
    torch.testing.assert_close(gradient(loss, logits), numerical_gradient(reference, logits), rtol=1e-5, atol=1e-7)


def test_distribution_balanced_loss_reduces_to_scaled_bce_and_reads_class_indices():
    logits, targets = batch(7)
    plain = DistributionBalancedLoss(COUNTS, alpha=1.0, beta=0.0, tolerance=1.0, bias=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(targets, 5).double())
    assert plain(logits, targets).item() == pytest.approx(1.5 * bce.item(), rel=1e-9)
    single = DistributionBalancedLoss(COUNTS)
    assert single(logits, targets).item() == pytest.approx(single(logits, F.one_hot(targets, 5)).item(), rel=1e-12)


@pytest.mark.parametrize("variant,formula", [
    ("raw", lambda n: math.log(TOTAL / n)),
    ("smooth", lambda n: math.log((TOTAL + 1) / (n + 1)) + 1),
    ("relative", lambda n: math.log((TOTAL - n) / n)),
    ("normit", lambda n: -statistics.NormalDist().inv_cdf(n / TOTAL)),
    ("gombit", lambda n: -math.log(-math.log(1 - n / TOTAL))),
    ("base2", lambda n: math.log2(TOTAL / n)),
    ("base10", lambda n: math.log10(TOTAL / n)),
])
def test_iif_weights_and_loss_follow_each_variant(variant, formula):
    weights = [formula(n) for n in COUNTS]
    torch.testing.assert_close(inverse_image_frequency(COUNTS, variant), torch.tensor(weights, dtype=torch.float64))
    logits, targets = batch(9)

    @reference_of(targets)
    def reference(z):
        return sum(-math.log(softmax_row([w * v for w, v in zip(weights, row)])[y])
                   for row, y in zip(z.tolist(), targets.tolist())) / len(targets)

    check(IIFLoss(COUNTS, variant=variant), reference, logits)
    torch.testing.assert_close(IIFLoss(COUNTS, variant).inference_logits(logits.detach()),
                               logits.detach() * torch.tensor(weights, dtype=torch.float64), rtol=1e-6, atol=1e-7)


def test_iif_on_equal_counts_is_cross_entropy_of_scaled_logits_and_norm_divides():
    logits, targets = batch(10)
    loss = IIFLoss([6] * 5, variant="raw")(logits, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(math.log(5) * logits, targets).item(), rel=1e-6)
    normed = IIFLoss(COUNTS, variant="smooth", norm=2.0).scale.double()
    raw = inverse_image_frequency(COUNTS, "smooth")
    torch.testing.assert_close(normed, raw / raw.norm(), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="variant"):
        IIFLoss(COUNTS, variant="log")


def test_a_method_evaluates_with_the_losses_inference_logits():
    from torch import nn

    from longtail.methods import Supervised

    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    backbone.num_features = 4
    method = Supervised(backbone=backbone, classifier=nn.Linear(4, 5), loss=IIFLoss(COUNTS))
    images = torch.randn(3, 3, 2, 2)
    plain = method(images)
    outputs = method.evaluation_outputs(images)
    smooth = torch.tensor([math.log((TOTAL + 1) / (n + 1)) + 1 for n in COUNTS])
    torch.testing.assert_close(outputs["logits"], plain * smooth)


def test_gol_and_ldam_are_read_at_inference_as_they_were_trained():
    from longtail.losses import LDAMLoss

    logits = torch.tensor([[-100.0, -95.0, 3.0], [0.2, -0.4, 0.1]])
    gumbel = GumbelLoss().inference_logits(logits).softmax(1)
    assert torch.isfinite(gumbel).all()
    torch.testing.assert_close(LDAMLoss([5, 3, 1], scale=30.0).inference_logits(logits), 30.0 * logits)


@pytest.mark.parametrize("make", [
    lambda: BalancedBCELoss(COUNTS), lambda: EqualizationLoss(COUNTS, 0.1, 1.0), lambda: EqualizedFocalLoss(COUNTS),
    lambda: GumbelLoss(), lambda: DistributionBalancedLoss(COUNTS), lambda: IIFLoss(COUNTS),
])
def test_under_bf16_autocast_they_compute_in_float32(make):
    logits, targets = batch(13, scale=1.0)
    expected = make()(logits.detach().float(), targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = make()(logits.detach().bfloat16(), targets)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=3e-2)
