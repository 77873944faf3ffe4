"""Supervised contrastive losses on L2-normalised embeddings.

Each loss is a plain ``nn.Module``. Features come as ``[B, V, D]``: B images, V augmented
views of each, D-dimensional embeddings already L2-normalised. Similarities and the
softmax are computed in at least float32, whatever the autocast dtype.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from longtail.losses.distributed import gather, global_mean, own_positions


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


def similarities(anchors: Tensor, references: Tensor) -> Tensor:
    """``anchors @ references.T`` in at least float32, whatever the autocast dtype."""
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, references.dtype), torch.float32)
    # autocast would run the matmul in its low-precision dtype despite the upcast
    with torch.autocast(anchors.device.type, enabled=False):
        return anchors.to(dtype) @ references.to(dtype).T


def contrastive_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    references: Tensor,
    reference_labels: Tensor,
    temperature: float,
    own: Tensor | None = None,
    own_is_positive: bool = False,
    class_averaged: bool = False,
    decoupled: bool = False,
    extra_logits: Tensor | None = None,
    extra_positives: Tensor | None = None,
    positive_weight: float = 1.0,
    anchor_weights: Tensor | None = None,
    kept_positives: Tensor | None = None,
) -> Tensor:
    """Negative weighted mean log-likelihood of each anchor's positives among the
    references, averaged over the anchors that have one: the core of SupCon, BCL, PaCo,
    TSC and the MoCo family.

    The references are any set: the anchors themselves, keys of a momentum encoder, a
    queue, class prototypes, or several of these concatenated. A reference is a positive of
    an anchor when their labels are equal and not negative (label ``-1``: unlabelled, the
    positive of no one). ``own[i]`` is the position among the references of anchor ``i``'s
    own entry (``-1``: none): the anchor itself, left out of its numerator and denominator;
    or with ``own_is_positive``, its key (another view of the same image), counted as a
    positive whatever the labels, as MoCo's is. With ``class_averaged``, each denominator
    term is divided by the number of references of its class (the anchor's own entry
    excluded when it is left out), so that every class weighs the same (BCL's
    class-averaging; it needs labels of 0 or more). With ``decoupled``, the positives
    are left out of the denominator, which holds the negatives only (DCL: Yeh et al.,
    ECCV 2022, https://arxiv.org/abs/2110.06848, eq. 6).

    ``extra_logits`` ``[N, E]`` join every anchor's softmax as they are, not divided by
    the temperature (PaCo's class centres: the classifier's logits; TSC's targets, scaled
    by the caller); ``extra_positives`` ``[N, E]`` marks the anchor's positives among them.
    A reference positive weighs ``positive_weight``, an extra one 1, and each anchor's
    loss is ``-sum_p w_p log softmax_p / sum_p w_p`` (PaCo's normalisation; SupCon's
    ``1/|P(i)|`` when nothing else is set).

    Args:
        anchors: ``[N, D]``.
        anchor_labels: ``[N]``.
        references: ``[M, D]``.
        reference_labels: ``[M]``.
        temperature: softmax temperature of the anchor-reference similarities.
        own: ``[N]`` positions in the references, or ``None``.
        own_is_positive: the own entry is a positive (a key), not the anchor itself.
        class_averaged: divide each term of the denominator by its class's size.
        decoupled: leave the positives out of the denominator.
        extra_logits: ``[N, E]`` further logits of each anchor's softmax, or ``None``.
        extra_positives: ``[N, E]`` bool, the positives among them.
        positive_weight: the weight of a reference positive (PaCo's alpha).
        anchor_weights: ``[N]`` weights of the anchors' losses in the mean (a weighted
            sum over the count), or ``None``.
        kept_positives: ``[N, M]`` bool, the reference positives that count as such (KCL's
            sample of k); the others stay in the denominator only. ``None``: all of them.

    In a distributed run the anchors are this process's and the mean runs over the anchors
    of every process (``longtail.losses.distributed.global_mean``); the caller gathers the
    references.

    Returns:
        A scalar; with no anchor that has a positive, 0 (connected to the graph) and a warning.
    """
    logits = similarities(anchors, references) / temperature
    dtype = logits.dtype
    same_class = (anchor_labels[:, None] == reference_labels[None, :]) & (anchor_labels[:, None] >= 0)
    is_own = torch.zeros_like(same_class)
    if own is not None:
        has_own = own >= 0
        is_own[has_own.nonzero().flatten(), own[has_own]] = True
    if own_is_positive:
        positives, left_out = same_class | is_own, torch.zeros_like(is_own)
    else:
        positives, left_out = same_class & ~is_own, is_own
    if kept_positives is not None:
        positives = positives & kept_positives

    denominator_logits = logits.masked_fill(left_out | positives if decoupled else left_out, float("-inf"))
    if class_averaged:
        if (reference_labels < 0).any():
            raise ValueError("class averaging needs every reference labelled (0 or more)")
        others_in_class = torch.bincount(reference_labels)[reference_labels].expand_as(logits)
        if own is not None and not own_is_positive:  # the anchor left out of its own class
            own_label = torch.where(own >= 0, reference_labels[own.clamp(min=0)], -1)
            others_in_class = others_in_class - (reference_labels[None, :] == own_label[:, None]).long()
        denominator_logits = denominator_logits - torch.log(others_in_class.clamp(min=1).to(dtype))
    weights = positives.to(dtype) * positive_weight
    if extra_logits is not None:
        extra_logits = extra_logits.to(dtype)
        extra_positives = torch.zeros_like(extra_logits, dtype=torch.bool) if extra_positives is None \
            else extra_positives
        logits = torch.cat([logits, extra_logits], dim=1)
        extra_denominator = extra_logits.masked_fill(extra_positives, float("-inf")) if decoupled else extra_logits
        denominator_logits = torch.cat([denominator_logits, extra_denominator], dim=1)
        weights = torch.cat([weights, extra_positives.to(dtype)], dim=1)
    normaliser = torch.logsumexp(denominator_logits, dim=1, keepdim=True)
    log_prob = logits - normaliser
    total_weight = weights.sum(dim=1)
    # decoupled, an anchor whose references are all positives has an empty denominator
    has_positive = (total_weight > 0) & torch.isfinite(normaliser.squeeze(1))
    if not has_positive.any():
        warnings.warn("no anchor of the batch has a positive: its contrastive loss is 0", stacklevel=2)
    # a masked sum, not a product: an anchor's non-positives contribute 0, whatever their log-probability
    losses = -log_prob.masked_fill(weights == 0, 0).mul(weights).sum(dim=1) / total_weight.clamp(min=1e-12)
    if anchor_weights is not None:
        losses = losses * anchor_weights.to(dtype)
    return global_mean(losses[has_positive])


class SupConLoss(nn.Module):
    """Supervised contrastive loss.

    - [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362 (eq. 2, L_out)

    For each anchor view ``i`` with positives ``P(i)`` (the other views of its class):
    ``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/T) / sum_{k != i} exp(z_i.z_k/T) )``,
    averaged over the anchors that have a positive (with none, 0 and a warning).

    In a distributed run the references are the views of every process (see
    ``longtail.losses.distributed``).

    Args:
        temperature: softmax temperature T.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).

    Shapes:
        features ``[B, V, D]`` L2-normalised, targets ``[B]`` -> scalar.

    Examples:
        >>> z = torch.nn.functional.normalize(torch.randn(8, 2, 16), dim=-1)
        >>> SupConLoss()(z, torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, decoupled: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature, self.decoupled = temperature, decoupled

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        anchors, labels = _flatten_views(features, targets)
        return contrastive_loss(anchors, labels, gather(anchors), gather(labels), self.temperature,
                                own=own_positions(len(anchors), anchors.device), decoupled=self.decoupled)


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

    In a distributed run the views of every process are members (see
    ``longtail.losses.distributed``); the prototypes join once.

    Args:
        num_classes: C, the number of prototypes expected.
        temperature: softmax temperature T.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).

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

    def __init__(self, num_classes: int, temperature: float = 0.1, decoupled: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        _check_temperature(temperature)
        self.num_classes = num_classes
        self.temperature, self.decoupled = temperature, decoupled

    def forward(self, features: Tensor, targets: Tensor, prototypes: Tensor) -> Tensor:
        if prototypes.dim() != 2 or prototypes.shape[0] != self.num_classes:
            raise ValueError(
                f"prototypes must be [num_classes={self.num_classes}, D], "
                f"got shape {tuple(prototypes.shape)}"
            )
        anchors, labels = _flatten_views(features, targets)
        dtype = torch.promote_types(torch.promote_types(anchors.dtype, prototypes.dtype), torch.float32)
        references = torch.cat([gather(anchors).to(dtype), prototypes.to(dtype)])
        prototype_labels = torch.arange(self.num_classes, device=labels.device)
        return contrastive_loss(
            anchors,
            labels,
            references,
            torch.cat([gather(labels), prototype_labels]),
            self.temperature,
            own=own_positions(len(anchors), anchors.device),
            class_averaged=True,
            decoupled=self.decoupled,
        )
