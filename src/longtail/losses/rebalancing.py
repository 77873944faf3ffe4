"""Re-balancing losses: softmax cross-entropy corrected for the training label prior.

Each loss is a plain ``nn.Module`` with ``forward(logits, targets)``, usable in any
training loop. Class counts are given at construction, and per-class weights ``weight``
(``[C]``) optionally: each sample's loss is weighted by its class's weight and the mean
is taken over the weights, as ``torch.nn.functional.cross_entropy`` does. A method may
set ``loss.weight`` during training (deferred re-weighting); it is not part of the
module's saved state, since it is a function of the counts and the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def class_counts_tensor(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Return ``class_counts`` as a 1-D float64 tensor, raising ``ValueError`` unless all positive."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    bad = (counts <= 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"class_counts must be positive; class {bad[0]} has count {counts[bad[0]].item():g}"
        )
    return counts


def at_least_float32(logits: Tensor) -> Tensor:
    """``logits`` in float32, or float64 when they are: the family's losses never compute
    in bf16 or fp16, even under autocast."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def one_hot_like(targets: Tensor, logits: Tensor) -> Tensor:
    """Class indices ``[B]`` as one-hot rows ``[B, C]`` of the logits' dtype."""
    return F.one_hot(targets, logits.shape[1]).to(logits.dtype)


def shifted_cross_entropy(logits: Tensor, shift: Tensor | None, targets: Tensor,
                          weight: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits + shift`` (``shift`` ``[C]``, or none), in at least float32,
    with optional per-class weights ``[C]`` and label smoothing."""
    logits = at_least_float32(logits)
    dtype = logits.dtype
    logits = logits if shift is None else logits + shift.to(dtype)
    return F.cross_entropy(logits, targets, weight=None if weight is None else weight.to(dtype),
                           label_smoothing=label_smoothing)


class WeightedLoss(nn.Module):
    """The base of the family: optional per-class weights ``weight`` ``[C]``, a buffer
    that follows the module's device and is left out of its state."""

    def __init__(self, weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32).flatten()
            if (weight < 0).any() or not weight.sum() > 0:
                raise ValueError(f"weight must be non-negative and not all zero, got {weight.tolist()}")
        self.register_buffer("weight", weight, persistent=False)


class CrossEntropyLoss(WeightedLoss):
    """Softmax cross-entropy, optionally label-smoothed: the baseline of the family.

    - [0] Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
      CVPR 2016, https://arxiv.org/abs/1512.00567 (Sec. 7, label smoothing)

    With ``label_smoothing = e`` the target distribution is ``(1 - e)`` on the label plus
    ``e / C`` on every class: ``L = (1 - e)(-log p_y) + e/C sum_j (-log p_j)``.

    Accepts (and ignores) ``class_counts`` so that every loss of the family is built alike.
    Its logits model the training set's label prior: ``logits_prior = "train"``.

    Args:
        class_counts: unused; training images per class.
        label_smoothing: ``e`` in ``[0, 1]``; 0 is plain cross-entropy.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "train"

    def __init__(self, class_counts: Sequence[int] | Tensor | None = None, label_smoothing: float = 0.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return shifted_cross_entropy(logits, None, targets, self.weight, self.label_smoothing)


class LogitAdjustedLoss(WeightedLoss):
    """Logit-adjusted softmax cross-entropy.

    - [0] Menon et al., "Long-tail learning via logit adjustment", ICLR 2021,
      https://arxiv.org/abs/2007.07314 (eq. 10)

    The loss adds ``tau * log(pi_y)`` to every logit before the softmax, where ``pi`` is
    the training label prior (class counts over their sum):
    ``loss = -log( exp(f_y + tau log pi_y) / sum_j exp(f_j + tau log pi_j) )``.
    With ``tau = 0`` or equal counts it is plain cross-entropy. With ``tau > 0`` the
    logits model the uniform prior: ``logits_prior = "uniform"``.

    Args:
        class_counts: training images per class, length C.
        tau: strength of the adjustment; 1 is Fisher-consistent for the balanced error.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` (class indices) -> scalar.

    Examples:
        >>> loss = LogitAdjustedLoss([500, 50, 5])
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).shape
        torch.Size([])
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, tau: float = 1.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        counts = class_counts_tensor(class_counts)
        self.tau = tau
        self.logits_prior = "uniform" if tau > 0 else "train"
        self.register_buffer("adjustment", tau * torch.log(counts / counts.sum()))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return shifted_cross_entropy(logits, self.adjustment, targets, self.weight)


class BalancedSoftmaxLoss(WeightedLoss):
    """Balanced softmax cross-entropy.

    - [0] Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
      NeurIPS 2020, https://arxiv.org/abs/2007.10740 (eq. 4)

    The softmax is weighted by the class counts ``n_j``:
    ``loss = -log( n_y exp(f_y) / sum_j n_j exp(f_j) )``, that is cross-entropy on
    ``f + log n``. With equal counts it is plain cross-entropy. The logits model the
    uniform prior: ``logits_prior = "uniform"``.

    Args:
        class_counts: training images per class, length C.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.

    Examples:
        >>> loss = BalancedSoftmaxLoss([500, 50, 5])
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).shape
        torch.Size([])
    """

    logits_prior = "uniform"

    def __init__(self, class_counts: Sequence[int] | Tensor,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        self.register_buffer("log_counts", torch.log(class_counts_tensor(class_counts)))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return shifted_cross_entropy(logits, self.log_counts, targets, self.weight)


def inverse_image_frequency(class_counts: Sequence[int] | Tensor, variant: str = "smooth") -> Tensor:
    """The IIF weight of every class from its count ``n_j`` among ``N`` training images.

    - [0] Alexandridis et al., "Inverse Image Frequency for Long-tailed Image Recognition",
      IEEE TIP 2023, https://arxiv.org/abs/2209.04861 (Sec. 3, the IIF variants)

    ``raw``: ``log(N / n_j)``; ``smooth``: ``log((N + 1) / (n_j + 1)) + 1``; ``relative``:
    ``log((N - n_j) / n_j)``; ``normit``: ``-Phi^-1(n_j / N)``; ``gombit``:
    ``-log(-log(1 - n_j / N))``; ``base2`` and ``base10``: ``raw`` in those bases.
    """
    counts = class_counts_tensor(class_counts)
    total, frequency = counts.sum(), counts / counts.sum()
    variants = {
        "raw": lambda: torch.log(total / counts),
        "smooth": lambda: torch.log((total + 1) / (counts + 1)) + 1,
        "relative": lambda: torch.log((total - counts) / counts),
        "normit": lambda: -torch.special.ndtri(frequency),
        "gombit": lambda: -torch.log(-torch.log1p(-frequency)),
        "base2": lambda: torch.log2(total / counts),
        "base10": lambda: torch.log10(total / counts),
    }
    if variant not in variants:
        raise ValueError(f"variant must be one of {', '.join(variants)}, got {variant!r}")
    return variants[variant]()


class IIFLoss(WeightedLoss):
    """Inverse image frequency, IIF: the logits scaled class by class.

    - [0] Alexandridis et al., "Inverse Image Frequency for Long-tailed Image Recognition",
      IEEE TIP 2023, https://arxiv.org/abs/2209.04861 (Sec. 3)

    A multiplicative margin: every logit is multiplied by its class's IIF weight ``w_j``
    (``inverse_image_frequency``), which is larger for the rarer classes, before the
    softmax cross-entropy, ``L = -log softmax(w * z)_y``, and at inference
    (``inference_logits``). With ``norm = p > 0`` the weights are divided by their
    p-norm. On equal counts every class has the same weight: cross-entropy of scaled logits.

    Args:
        class_counts: training images per class, length C.
        variant: ``raw``, ``smooth``, ``relative``, ``normit``, ``gombit``, ``base2`` or
            ``base10`` (see ``inverse_image_frequency``).
        norm: ``p`` of the normalisation; 0: none.
        weight: per-class weights ``[C]``.

    Shapes:
        logits ``[B, C]``, targets ``[B]`` -> scalar.
    """

    logits_prior = "uniform"

    def __init__(self, class_counts: Sequence[int] | Tensor, variant: str = "smooth", norm: float = 0.0,
                 weight: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(weight)
        if norm < 0:
            raise ValueError(f"norm must be non-negative (0: none), got {norm}")
        scale = inverse_image_frequency(class_counts, variant)
        if norm > 0:
            scale = scale / torch.linalg.vector_norm(scale, ord=norm)
        self.register_buffer("scale", scale.float())

    def inference_logits(self, logits: Tensor) -> Tensor:
        return logits * self.scale.to(logits.dtype)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return shifted_cross_entropy(self.inference_logits(at_least_float32(logits)), None, targets, self.weight)
