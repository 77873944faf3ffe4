"""One-vs-rest losses: a sigmoid (or Gumbel) per class instead of one softmax.

Each sample's loss is the sum over the C binary problems, averaged over the batch (with
the family's per-class ``weight``, a weighted mean by the sample's class: see
``longtail.losses.reweighting.weighted_mean``). Targets are class indices ``[B]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from longtail.losses.rebalancing import WeightedLoss, at_least_float32, class_counts_tensor, one_hot_like
from longtail.losses.reweighting import weighted_mean


class BalancedBCELoss(WeightedLoss):
    """Balanced binary cross-entropy, Bal-BCE, of LiVT.

    - [0] Xu et al., "Learning Imbalanced Data with Vision Transformers", CVPR 2023,
      https://arxiv.org/abs/2212.02015 (Sec. 4, Bal-BCE)

    The sigmoid's unbiased extension to a long-tailed prior ``pi``: every logit is moved
    by the log-odds of its class's prior, ``z'_j = z_j + log pi_j - log(1 - pi_j)``, and the
    loss is the binary cross-entropy of ``z'`` summed over the classes:
    ``L = -sum_j [y_j log s(z'_j) + (1 - y_j) log(1 - s(z'_j))]``. Inference reads the
    plain logits, which model the balanced prior.

    Args:
        class_counts: training images per class, length C.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "uniform"

    def __init__(self, class_counts: Sequence[int] | Tensor, weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        counts = class_counts_tensor(class_counts)
        prior = counts / counts.sum()
        self.register_buffer("shift", (torch.log(prior) - torch.log1p(-prior)).float())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits)
        shifted = logits + self.shift.to(logits.dtype)
        losses = F.binary_cross_entropy_with_logits(shifted, one_hot_like(targets, logits), reduction="none").sum(1)
        return weighted_mean(losses, targets, self.weight)


class EqualizationLoss(WeightedLoss):
    """Equalization loss, EQL, on sigmoid classification.

    - [0] Tan et al., "Equalization Loss for Long-Tailed Object Recognition", CVPR 2020,
      https://arxiv.org/abs/2003.05176 (Sec. 3.2, eq. 7-8; Sec. 5, image classification)

    ``L = -sum_j w_j log p_t^j`` over the one-vs-rest sigmoids, with
    ``w_j = 1 - beta T_lambda(f_j) (1 - y_j)``: the negative terms of the rare classes,
    those whose frequency ``f_j = n_j / N`` is under ``lambda``, are left out, so a rare
    class is not pushed down by every image of the others. In detection ``beta`` is 1 on
    the objects; in image classification, where every image is an object, the paper makes
    it random: each such term is left out with probability ``drop_probability`` (else a
    rare class would never be pushed down at all). The draws come from a generator seeded
    by the number of calls, a buffer, so a resumed run draws as the uninterrupted one.
    ``lambda = 0`` or ``drop_probability = 0`` is the sigmoid cross-entropy.

    Args:
        class_counts: training images per class, length C.
        frequency_threshold: ``lambda``; the classes under it are the rare ones (the
            paper sets it from the tail's share of the data; 5e-3 here).
        drop_probability: the probability ``gamma`` that ``beta`` is 1 (0.9).
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor, frequency_threshold: float = 5e-3,
                 drop_probability: float = 0.9, weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if frequency_threshold < 0 or not 0 <= drop_probability <= 1:
            raise ValueError(f"need frequency_threshold >= 0 and drop_probability in [0, 1], got "
                             f"{frequency_threshold} and {drop_probability}")
        counts = class_counts_tensor(class_counts)
        self.drop_probability = drop_probability
        self.register_buffer("rare", (counts / counts.sum() < frequency_threshold).float())
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits)
        positive = one_hot_like(targets, logits)
        generator = torch.Generator().manual_seed(int(self.calls))
        self.calls += 1
        beta = (torch.rand(logits.shape, generator=generator) < self.drop_probability).to(logits)
        kept = 1 - beta * self.rare.to(logits.dtype) * (1 - positive)
        terms = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
        return weighted_mean((kept * terms).sum(1), targets, self.weight)


class EqualizedFocalLoss(WeightedLoss):
    """Equalized focal loss, EFL, on sigmoid classification.

    - [0] Li et al., "Equalized Focal Loss for Dense Long-Tailed Object Detection", CVPR
      2022, https://arxiv.org/abs/2201.02593 (Sec. 3.3)

    A focal loss whose focusing factor grows for the classes that get little positive
    gradient: ``EFL = -sum_j alpha_t (gamma_j / gamma_b) (1 - p_t)^gamma_j log p_t`` with
    ``gamma_j = gamma_b + s (1 - g_j)``, where ``g_j`` in ``[0, 1]`` is the ratio of the
    accumulated positive to negative gradient magnitude of class ``j``'s logit since the
    start of training (1 before any). ``gamma_j`` comes from the buffers and takes no
    gradient; ``(1 - p_t)^gamma_j`` does, as in any focal loss. The accumulated gradients
    are buffers, saved in checkpoints and summed over the processes of a distributed run
    (a non-finite step, which fp16's loss scaling skips, is left out). With ``scale = 0``
    it is the alpha-balanced sigmoid focal loss (Lin et al., eq. 5).

    Args:
        class_counts: unused; training images per class.
        focusing: ``gamma_b``, the focusing factor every class has (2).
        scale: ``s``, how far a class's factor grows (8).
        alpha: the balance of positive terms (``alpha``) to negative (``1 - alpha``).
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor, focusing: float = 2.0, scale: float = 8.0,
                 alpha: float = 0.25, weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if focusing <= 0 or scale < 0 or not 0 <= alpha <= 1:
            raise ValueError(f"need focusing > 0, scale >= 0 and alpha in [0, 1], got {focusing}, {scale}, {alpha}")
        self.focusing, self.scale, self.alpha = focusing, scale, alpha
        classes = len(class_counts_tensor(class_counts))
        self.register_buffer("positive_gradient", torch.zeros(classes, dtype=torch.float64))
        self.register_buffer("negative_gradient", torch.zeros(classes, dtype=torch.float64))

    def gradient_ratio(self) -> Tensor:
        """``g_j``: accumulated positive over negative gradient, clipped to [0, 1]; 1 where
        class ``j`` has had no negative gradient yet."""
        ratio = self.positive_gradient / self.negative_gradient.clamp_min(1e-12)
        return torch.where(self.negative_gradient > 0, ratio.clamp(0, 1), torch.ones_like(ratio))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits)
        positive = one_hot_like(targets, logits)
        gamma = (self.focusing + self.scale * (1 - self.gradient_ratio())).to(logits.dtype)
        log_p_t = -F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
        alpha_t = self.alpha * positive + (1 - self.alpha) * (1 - positive)
        terms = alpha_t * gamma / self.focusing * torch.pow(1 - log_p_t.exp(), gamma) * log_p_t
        if logits.requires_grad and self.training:
            logits.register_hook(lambda grad: self._accumulate(grad, positive))
        return weighted_mean(-terms.sum(1), targets, self.weight)

    @torch.no_grad()
    def _accumulate(self, grad: Tensor, positive: Tensor) -> None:
        if not torch.isfinite(grad).all():  # a step that fp16's loss scaling will skip
            return
        magnitude = grad.abs().to(torch.float64)
        sums = torch.stack([(magnitude * positive).sum(0), (magnitude * (1 - positive)).sum(0)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        self.positive_gradient += sums[0]
        self.negative_gradient += sums[1]


def gumbel_log_cdf(logits: Tensor) -> Tensor:
    """``log eta(z) = -exp(-z)``, ``eta(z) = exp(-exp(-z))`` the Gumbel distribution's CDF."""
    return -torch.exp(-logits)


class GumbelLoss(WeightedLoss):
    """Gumbel optimised loss, GOL: the Gumbel activation in place of the sigmoid.

    - [0] Alexandridis et al., "Long-tailed Instance Segmentation using Gumbel Optimized
      Loss", ECCV 2022, https://arxiv.org/abs/2207.10936 (Sec. 3)

    Each class's probability is ``eta(z) = exp(-exp(-z))``, the CDF of the Gumbel
    distribution, whose asymmetric tail suits the rare classes' small probabilities better
    than the sigmoid: ``L = -sum_j [y_j log eta(z_j) + (1 - y_j) log(1 - eta(z_j))]``. The
    logits are clamped to ``[-4, 10]`` inside the loss, where ``eta`` is within 1e-23 of 0
    and 5e-5 of 1, so the double exponential cannot overflow. Inference reads the Gumbel
    probabilities too: ``inference_logits`` gives ``log eta(z)``, whose softmax is ``eta``
    normalised over the classes (the argmax is the logits').

    Args:
        class_counts: unused; training images per class.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor | None = None,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits).clamp(-4, 10)
        positive = one_hot_like(targets, logits)
        log_eta = gumbel_log_cdf(logits)
        log_not_eta = torch.log(-torch.expm1(log_eta))
        losses = -(positive * log_eta + (1 - positive) * log_not_eta).sum(1)
        return weighted_mean(losses, targets, self.weight)

    def inference_logits(self, logits: Tensor) -> Tensor:
        return gumbel_log_cdf(at_least_float32(logits).clamp(min=-80))  # -exp(80) still finite in float32


class DistributionBalancedLoss(WeightedLoss):
    """Distribution-balanced loss, DB, for multi-label classification.

    - [0] Wu et al., "Distribution-Balanced Loss for Multi-Label Classification in
      Long-Tailed Datasets", ECCV 2020, https://arxiv.org/abs/2007.09654 (Sec. 3.2-3.4)

    Two corrections of the sigmoid cross-entropy for multi-hot targets ``y`` ``[B, C]``:

    - re-balanced weighting: a sample with labels ``S`` is drawn by class-aware sampling
      with probability ``P^I ~ sum_{j in S} 1/n_j``, while class ``i`` expects
      ``P^C_i ~ 1/n_i``; every term of class ``i`` is weighted by the smoothed ratio
      ``r_hat = alpha + sigmoid(beta (r - mu))``, ``r = (1/n_i) / sum_{j in S} 1/n_j``;
    - negative-tolerant regularisation: with the logits moved by ``nu_i = kappa b_i``,
      ``b_i = log(p_i / (1 - p_i))`` the log-odds of the class prior (down for the rare
      classes, as a classifier whose bias learned the prior), the negative terms are
      sharpened by ``lambda``:
      ``y log(1 + e^{-(z + nu)}) + (1/lambda)(1 - y) log(1 + e^{lambda (z + nu)})``,

    optionally times the focal factor ``(1 - p_t)^gamma`` (DB-Focal); the mean is taken over
    the classes and the batch. With ``alpha = 1, beta = 0`` (``r_hat = 1.5``, a constant),
    ``lambda = 1``, ``kappa = 0`` and ``gamma = 0`` it is 1.5 times the mean binary
    cross-entropy.

    Args:
        class_counts: training images per class (images that hold it), length C.
        alpha, beta, mu: the smoothing of the re-balancing weight (0.1, 10, 0.2).
        tolerance: ``lambda`` of the negative terms (2).
        bias: ``kappa`` (0.05).
        gamma: the focal factor's exponent (0: none; 2 for DB-Focal).
        weight: per-class weights ``[C]``, on each class's terms.

    Shapes:
        logits ``[B, C]``, targets ``[B, C]`` multi-hot (or ``[B]`` class indices) -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor, alpha: float = 0.1, beta: float = 10.0,
                 mu: float = 0.2, tolerance: float = 2.0, bias: float = 0.05, gamma: float = 0.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if tolerance <= 0 or gamma < 0:
            raise ValueError(f"tolerance must be positive and gamma non-negative, got {tolerance} and {gamma}")
        counts = class_counts_tensor(class_counts)
        prior = counts / counts.sum()
        self.alpha, self.beta, self.mu, self.tolerance, self.gamma = alpha, beta, mu, tolerance, gamma
        self.register_buffer("inverse_counts", (1 / counts).float())
        self.register_buffer("shift", (bias * (torch.log(prior) - torch.log1p(-prior))).float())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits)
        labels = one_hot_like(targets, logits) if targets.dim() == 1 else targets.to(logits.dtype)
        inverse = self.inverse_counts.to(logits.dtype)
        per_sample = (labels * inverse).sum(1, keepdim=True)  # sum of 1/n_j over the sample's labels
        ratio = inverse / per_sample.clamp_min(torch.finfo(logits.dtype).tiny)
        rebalance = self.alpha + torch.sigmoid(self.beta * (ratio - self.mu))
        z = logits + self.shift.to(logits.dtype)
        positive_terms = F.softplus(-z)
        negative_terms = F.softplus(self.tolerance * z) / self.tolerance
        terms = labels * positive_terms + (1 - labels) * negative_terms
        if self.gamma:
            p_t = torch.where(labels > 0, torch.sigmoid(z), torch.sigmoid(-z))
            terms = terms * torch.pow(1 - p_t, self.gamma)
        terms = rebalance * terms
        if self.weight is not None:
            terms = terms * self.weight.to(logits.dtype)
        return terms.mean()
