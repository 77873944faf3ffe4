"""Re-weighting losses: each sample's loss scaled by its class, or its difficulty.

Each is a plain ``nn.Module`` with ``forward(logits, targets)`` and the family's optional
per-class ``weight`` (``WeightedLoss``): the result is ``sum_i w_{y_i} l_i / sum_i w_{y_i}``
over the batch, the plain mean without ``weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail.losses.rebalancing import WeightedLoss, at_least_float32, class_counts_tensor, one_hot_like


def effective_number_weights(class_counts: Sequence[int] | Tensor, beta: float) -> Tensor:
    """Class-balanced weights by the effective number of samples, summing to C.

    - [0] Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR
      2019, https://arxiv.org/abs/1901.05555 (eq. 3 and Sec. 4)

    The effective number of ``n`` samples is ``E_n = (1 - beta^n) / (1 - beta)``; class
    ``c`` is weighted by ``1 / E_{n_c}``, normalised so that the weights sum to C. ``beta =
    0`` weights every class 1; as ``beta`` nears 1 the weights near inverse frequency.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = class_counts_tensor(class_counts)
    inverse = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (inverse * len(counts) / inverse.sum()).float()


def weighted_mean(losses: Tensor, targets: Tensor, weight: Tensor | None) -> Tensor:
    """``sum_i w_{y_i} l_i / sum_i w_{y_i}``: the batch mean with per-class weights."""
    if weight is None:
        return losses.mean()
    sample_weight = weight.to(losses.dtype)[targets]
    return (sample_weight * losses).sum() / sample_weight.sum()


def softmax_focal(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """``-(1 - p_y)^gamma log p_y`` per sample, ``p`` the softmax (Lin et al., eq. 4)."""
    log_p = F.log_softmax(at_least_float32(logits), dim=1).gather(1, targets[:, None])[:, 0]
    return -torch.pow(1 - log_p.exp(), gamma) * log_p if gamma else -log_p


def sigmoid_focal(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """``-sum_j (1 - p_t)^gamma log p_t`` per sample over the C one-vs-rest problems,
    ``p_t = sigmoid(z_j)`` for the target class and ``1 - sigmoid(z_j)`` for the others
    (Lin et al., eq. 4; ``gamma = 0`` is the sigmoid cross-entropy)."""
    logits = at_least_float32(logits)
    positive = one_hot_like(targets, logits)
    log_p_t = -F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
    focal = torch.pow(1 - log_p_t.exp(), gamma) if gamma else 1
    return -(focal * log_p_t).sum(dim=1)


class FocalLoss(WeightedLoss):
    """Focal loss on the softmax.

    - [0] Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
      https://arxiv.org/abs/1708.02002 (eq. 4, 5)

    ``FL(p_y) = -(1 - p_y)^gamma log p_y``: well-classified samples, the head's mostly,
    count less. ``gamma = 0`` is cross-entropy; the class weights ``alpha_t`` of eq. 5 are
    ``weight``.

    Args:
        class_counts: unused; training images per class.
        gamma: the focusing parameter, >= 0.
        weight: per-class weights ``[C]`` (``alpha``).

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor | None = None, gamma: float = 2.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return weighted_mean(softmax_focal(logits, targets, self.gamma), targets, self.weight)


class ClassBalancedLoss(WeightedLoss):
    """Class-balanced loss by the effective number of samples.

    - [0] Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR
      2019, https://arxiv.org/abs/1901.05555 (eq. 4; softmax eq. 5, sigmoid eq. 6,
      focal eq. 7)

    ``CB(p, y) = (1 - beta) / (1 - beta^{n_y}) L(p, y)``, the weights normalised to sum
    to C (``effective_number_weights``), on the loss ``base``:

    - ``softmax``: cross-entropy ``-log p_y``;
    - ``sigmoid``: ``-sum_j log p_t^j`` over the C one-vs-rest sigmoids;
    - ``focal``: ``-sum_j (1 - p_t^j)^gamma log p_t^j``, the sigmoid focal loss.

    ``beta = 0`` (or equal counts) is the plain ``base`` loss.

    Args:
        class_counts: training images per class, length C.
        beta: in ``[0, 1)``; the paper's CIFAR-LT choices are 0.9999 (softmax, sigmoid)
            and 0.999 or 0.9999 (focal).
        base: ``softmax``, ``sigmoid`` or ``focal``.
        gamma: the focusing parameter of ``focal`` (0.5, 1 or 2 in the paper).
        weight: further per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    BASES = ("softmax", "sigmoid", "focal")
    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor, beta: float = 0.9999, base: str = "softmax",
                 gamma: float = 1.0, weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if base not in self.BASES:
            raise ValueError(f"base must be one of {', '.join(self.BASES)}, got {base!r}")
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.beta, self.base, self.gamma = beta, base, gamma
        self.register_buffer("class_weight", effective_number_weights(class_counts, beta))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.base == "softmax":
            losses = softmax_focal(logits, targets, 0.0)
        else:
            losses = sigmoid_focal(logits, targets, self.gamma if self.base == "focal" else 0.0)
        return weighted_mean(self.class_weight[targets] * losses, targets, self.weight)


class LDAMLoss(WeightedLoss):
    """Label-distribution-aware margin loss.

    - [0] Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
      Loss", NeurIPS 2019, https://arxiv.org/abs/1906.07413 (eq. 13)

    The target logit is lowered by a margin ``Delta_y = C / n_y^{1/4}``, ``C`` such that
    the rarest class's margin is ``max_margin``, and the logits are scaled by ``scale``:
    ``L = -log( e^{s(z_y - Delta_y)} / (e^{s(z_y - Delta_y)} + sum_{j != y} e^{s z_j}) )``.
    The paper's logits are cosine similarities (a normalised linear layer, features and
    weights of unit norm) scaled here: use it with ``model.classifier=normalized``, not
    ``cosine``, which applies a scale of its own. With ``max_margin = 0`` it is
    cross-entropy of ``scale`` times the logits. Cao et al. pair it with deferred
    re-weighting (``method.drw_epoch``).

    Args:
        class_counts: training images per class, length C.
        max_margin: the rarest class's margin (0.5 in the paper).
        scale: ``s`` (30 in the paper).
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"
    #: The loss scales the logits: the classifier must not scale them again.
    scales_logits = True

    def __init__(self, class_counts: Sequence[int] | Tensor, max_margin: float = 0.5, scale: float = 30.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if max_margin < 0 or scale <= 0:
            raise ValueError(f"max_margin must be >= 0 and scale > 0, got {max_margin} and {scale}")
        counts = class_counts_tensor(class_counts)
        self.scale = scale
        self.register_buffer("margins", (max_margin * (counts.min() / counts) ** 0.25).float())

    def inference_logits(self, logits: Tensor) -> Tensor:
        """The logits scaled as training reads them (without the margins), for calibration
        and post-hoc corrections."""
        return self.scale * logits

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = at_least_float32(logits)
        margin = one_hot_like(targets, logits) * self.margins.to(logits.dtype)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(self.scale * (logits - margin), targets, weight=weight)
