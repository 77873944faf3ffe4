"""Supervised contrastive losses on L2-normalised embeddings.

Each loss is a plain ``nn.Module``. Features come as ``[B, V, D]``: B images, V augmented
views of each, D-dimensional embeddings already L2-normalised. Similarities and the
softmax are computed in at least float32, whatever the autocast dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _flatten_views(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, V, D]`` features and ``[B]`` targets -> ``[V*B, D]`` and ``[V*B]``, view-major."""
    if features.dim() != 3:
        raise ValueError(f"features must be [B, V, D], got shape {tuple(features.shape)}")
    if targets.shape != features.shape[:1]:
        raise ValueError(
            f"targets must be [B] = [{features.shape[0]}], got shape {tuple(targets.shape)}"
        )
    views = features.shape[1]
    return features.transpose(0, 1).reshape(-1, features.shape[-1]), targets.repeat(views)


def contrastive_loss(
    anchors: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    temperature: float,
    class_averaged: bool,
) -> Tensor:
    """Negative mean log-likelihood of each anchor's positives, averaged over the anchors
    that have one: the core of SupCon and BCL.

    The anchors are the first ``N`` rows of ``contrast``; an anchor is never its own
    positive nor a term of its own denominator. With ``class_averaged``, each
    denominator term is divided by the number of contrast members of its class (the
    anchor excluded), so that every class weighs the same (BCL's class-averaging).

    Args:
        anchors: ``[N, D]``.
        contrast: ``[M, D]`` with ``M >= N``, beginning with the anchors.
        contrast_labels: ``[M]`` class of each contrast member.
        temperature: softmax temperature.
        class_averaged: divide each term of the denominator by its class's size.

    Returns:
        A scalar.
    """
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    num_anchors = anchors.shape[0]
    # autocast would run the matmul in its low-precision dtype despite the upcast
    with torch.autocast(anchors.device.type, enabled=False):
        logits = anchors.to(dtype) @ contrast.to(dtype).T / temperature
    anchor_labels = contrast_labels[:num_anchors]
    same_class = anchor_labels[:, None] == contrast_labels[None, :]
    is_self = torch.zeros_like(same_class)
    is_self[:, :num_anchors] = torch.eye(num_anchors, dtype=torch.bool, device=anchors.device)
    positives = same_class & ~is_self

    denominator_logits = logits.masked_fill(is_self, float("-inf"))
    if class_averaged:
        class_sizes = torch.bincount(contrast_labels)[contrast_labels]
        others_in_class = (class_sizes[None, :] - same_class.long()).clamp(min=1)
        denominator_logits = denominator_logits - torch.log(others_in_class.to(dtype))
    log_prob = logits - torch.logsumexp(denominator_logits, dim=1, keepdim=True)
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    mean_log_prob = (log_prob * positives).sum(dim=1)[has_positive] / num_positives[has_positive]
    return -mean_log_prob.mean()


class SupConLoss(nn.Module):
    """Supervised contrastive loss.

    - [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362 (eq. 2, L_out)

    For each anchor view ``i`` with positives ``P(i)`` (the other views of its class):
    ``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/T) / sum_{k != i} exp(z_i.z_k/T) )``,
    averaged over the anchors that have a positive.

    Args:
        temperature: softmax temperature T.

    Shapes:
        features ``[B, V, D]`` L2-normalised, targets ``[B]`` -> scalar.

    Examples:
        >>> z = torch.nn.functional.normalize(torch.randn(8, 2, 16), dim=-1)
        >>> SupConLoss()(z, torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        anchors, labels = _flatten_views(features, targets)
        return contrastive_loss(anchors, anchors, labels, self.temperature, class_averaged=False)


class BalancedContrastiveLoss(nn.Module):
    """Balanced contrastive loss (BCL): SupCon with class-averaging and class-complement.

    - [0] Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual Recognition",
      CVPR 2022, https://arxiv.org/abs/2207.09052 (Sec. 3, the BCL loss)

    The C class prototypes join every batch as one extra member of each class
    (class-complement), so every class appears. For anchor view ``i`` of class ``y``,
    with ``B_j`` the members of class ``j`` other than ``i`` (views and prototype):
    ``L_i = -1/|B_y| sum_{p in B_y} log( exp(z_i.z_p/T) / sum_j 1/|B_j| sum_{k in B_j} exp(z_i.z_k/T) )``.
    Averaging each class's share of the denominator (class-averaging) stops the head
    classes from dominating the negatives. Anchors are the views; prototypes are
    contrast members only. The loss is the mean over the ``B*V`` anchors.

    Args:
        num_classes: C, the number of prototypes expected.
        temperature: softmax temperature T.

    Shapes:
        features ``[B, V, D]`` L2-normalised, targets ``[B]``, prototypes ``[C, D]``
        L2-normalised -> scalar.

    Examples:
        >>> loss = BalancedContrastiveLoss(num_classes=3)
        >>> z = torch.nn.functional.normalize(torch.randn(8, 2, 16), dim=-1)
        >>> c = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
        >>> loss(z, torch.randint(0, 3, (8,)), c).shape
        torch.Size([])
    """

    def __init__(self, num_classes: int, temperature: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        _check_temperature(temperature)
        self.num_classes = num_classes
        self.temperature = temperature

    def forward(self, features: Tensor, targets: Tensor, prototypes: Tensor) -> Tensor:
        if prototypes.dim() != 2 or prototypes.shape[0] != self.num_classes:
            raise ValueError(
                f"prototypes must be [num_classes={self.num_classes}, D], "
                f"got shape {tuple(prototypes.shape)}"
            )
        anchors, labels = _flatten_views(features, targets)
        contrast = torch.cat([anchors, prototypes.to(anchors.dtype)])
        prototype_labels = torch.arange(self.num_classes, device=labels.device)
        return contrastive_loss(
            anchors,
            contrast,
            torch.cat([labels, prototype_labels]),
            self.temperature,
            class_averaged=True,
        )
