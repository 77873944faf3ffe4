"""Supervised contrastive losses on L2-normalised embeddings.

Each loss is a plain ``nn.Module``. Features come as ``[B, V, D]``: B images, V augmented
views of each, D-dimensional embeddings already L2-normalised. Similarities and the
softmax are computed in at least float32, whatever the autocast dtype.
"""

from __future__ import annotations

import warnings

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
    anchor_labels: Tensor,
    references: Tensor,
    reference_labels: Tensor,
    temperature: float,
    own: Tensor | None = None,
    own_is_positive: bool = False,
    class_averaged: bool = False,
) -> Tensor:
    """Negative mean log-likelihood of each anchor's positives among the references,
    averaged over the anchors that have one: the core of SupCon, BCL and the MoCo family.

    The references are any set: the anchors themselves, keys of a momentum encoder, a
    queue, class prototypes, or several of these concatenated. A reference is a positive of
    an anchor when their labels are equal and not negative (label ``-1``: unlabelled, the
    positive of no one). ``own[i]`` is the position among the references of anchor ``i``'s
    own entry (``-1``: none): the anchor itself, left out of its numerator and denominator;
    or with ``own_is_positive``, its key (another view of the same image), counted as a
    positive whatever the labels, as MoCo's is. With ``class_averaged``, each denominator
    term is divided by the number of references of its class (the anchor's own entry
    excluded when it is left out), so that every class weighs the same (BCL's
    class-averaging; it needs labels of 0 or more).

    Args:
        anchors: ``[N, D]``.
        anchor_labels: ``[N]``.
        references: ``[M, D]``.
        reference_labels: ``[M]``.
        temperature: softmax temperature.
        own: ``[N]`` positions in the references, or ``None``.
        own_is_positive: the own entry is a positive (a key), not the anchor itself.
        class_averaged: divide each term of the denominator by its class's size.

    Returns:
        A scalar; with no anchor that has a positive, 0 (connected to the graph) and a warning.
    """
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, references.dtype), torch.float32)
    # autocast would run the matmul in its low-precision dtype despite the upcast
    with torch.autocast(anchors.device.type, enabled=False):
        logits = anchors.to(dtype) @ references.to(dtype).T / temperature
    same_class = (anchor_labels[:, None] == reference_labels[None, :]) & (anchor_labels[:, None] >= 0)
    is_own = torch.zeros_like(same_class)
    if own is not None:
        has_own = own >= 0
        is_own[has_own.nonzero().flatten(), own[has_own]] = True
    if own_is_positive:
        positives, left_out = same_class | is_own, torch.zeros_like(is_own)
    else:
        positives, left_out = same_class & ~is_own, is_own

    denominator_logits = logits.masked_fill(left_out, float("-inf"))
    if class_averaged:
        if (reference_labels < 0).any():
            raise ValueError("class averaging needs every reference labelled (0 or more)")
        others_in_class = torch.bincount(reference_labels)[reference_labels].expand_as(logits)
        if own is not None and not own_is_positive:  # the anchor left out of its own class
            own_label = torch.where(own >= 0, reference_labels[own.clamp(min=0)], -1)
            others_in_class = others_in_class - (reference_labels[None, :] == own_label[:, None]).long()
        denominator_logits = denominator_logits - torch.log(others_in_class.clamp(min=1).to(dtype))
    log_prob = logits - torch.logsumexp(denominator_logits, dim=1, keepdim=True)
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    if not has_positive.any():
        warnings.warn("no anchor of the batch has a positive: the contrastive loss is 0", stacklevel=2)
        return logits.sum() * 0
    mean_log_prob = (log_prob * positives).sum(dim=1)[has_positive] / num_positives[has_positive]
    return -mean_log_prob.mean()


def _itself(count: int, device: torch.device) -> Tensor:
    """``own`` for anchors that are the first ``count`` references."""
    return torch.arange(count, device=device)


class SupConLoss(nn.Module):
    """Supervised contrastive loss.

    - [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362 (eq. 2, L_out)

    For each anchor view ``i`` with positives ``P(i)`` (the other views of its class):
    ``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/T) / sum_{k != i} exp(z_i.z_k/T) )``,
    averaged over the anchors that have a positive (with none, 0 and a warning).

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
        return contrastive_loss(anchors, labels, anchors, labels, self.temperature,
                                own=_itself(len(anchors), anchors.device))


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
        dtype = torch.promote_types(torch.promote_types(anchors.dtype, prototypes.dtype), torch.float32)
        references = torch.cat([anchors.to(dtype), prototypes.to(dtype)])
        prototype_labels = torch.arange(self.num_classes, device=labels.device)
        return contrastive_loss(
            anchors,
            labels,
            references,
            torch.cat([labels, prototype_labels]),
            self.temperature,
            own=_itself(len(anchors), anchors.device),
            class_averaged=True,
        )
