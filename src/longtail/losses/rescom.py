"""Rebalanced siamese contrastive mining (ResCom)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from longtail.losses.contrastive import _check_temperature, contrastive_loss, similarities
from longtail.losses.rebalancing import class_counts_tensor


class ResComLoss(nn.Module):
    """ResCom's class-balanced supervised contrast with hard mining on a class-balanced queue.

    - [0] Zhong et al., "Rebalanced Siamese Contrastive Mining for Long-Tailed
      Recognition", 2022, https://arxiv.org/abs/2203.11506 (Sec. 3)

    For anchor ``i`` (an L2-normalised embedding) of class ``y``, the contrast set is the
    batch's views (the anchor left out) and, from the class-balanced queue, its
    ``hard_positives`` least similar keys of class ``y`` and its ``hard_negatives`` most
    similar keys of the other classes; the rest of the queue is left out. Its loss is
    SupCon's over that set, ``-1/|P(i)| sum_{p in P(i)} log s_p`` with ``P(i)`` its batch
    positives and mined positives, and the loss is the mean over the anchors of
    ``w_y L_i``, with ``w_y = mean_c(E_c) / E_y`` and ``E_c = (1 - beta^{n_c}) / (1 - beta)``
    the effective number of class ``c``'s ``n_c`` images (Cui et al., CVPR 2019), so the
    tail's anchors weigh more; ``beta`` 0 or equal counts weigh every anchor 1.

    Args:
        class_counts: training images per class, for the weights.
        temperature: T of the softmax.
        hard_positives: mined positives per anchor (fewer when its class has fewer keys).
        hard_negatives: mined negatives per anchor (at most the other classes' keys).
        beta: the effective number's beta; 0 weighs every class the same.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).

    Shapes:
        ``anchors [N, D]``, ``labels [N]``, ``references [M, D]``, ``reference_labels [M]``,
        ``own [N]``, ``queue_keys [Q, D]``, ``queue_labels [Q]`` -> scalar.
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, temperature: float = 0.2, hard_positives: int = 1,
                 hard_negatives: int = 400, beta: float = 0.999999, decoupled: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        if hard_positives < 0 or hard_negatives < 0:
            raise ValueError(f"hard_positives and hard_negatives must be non-negative, "
                             f"got {hard_positives} and {hard_negatives}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        counts = class_counts_tensor(class_counts)
        effective = (1 - torch.tensor(beta, dtype=torch.float64) ** counts) / (1 - beta)
        self.register_buffer("class_weights", (effective.mean() / effective).float())
        self.temperature, self.decoupled = temperature, decoupled
        self.hard_positives, self.hard_negatives = hard_positives, hard_negatives

    def mined(self, anchors: Tensor, labels: Tensor, queue_keys: Tensor, queue_labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(kept, positive)``, ``[N, Q]`` masks: each anchor's mined keys, and which of them
        are of its class."""
        similarity = similarities(anchors, queue_keys)
        same = labels[:, None] == queue_labels[None, :]
        kept = torch.zeros_like(same)
        for mask, count, lowest in ((same, self.hard_positives, True), (~same, self.hard_negatives, False)):
            count = min(count, queue_keys.shape[0])
            if count == 0:
                continue
            excluded = float("inf") if lowest else float("-inf")
            chosen = similarity.masked_fill(~mask, excluded).topk(count, dim=1, largest=not lowest).indices
            kept |= torch.zeros_like(same).scatter_(1, chosen, True) & mask
        return kept, kept & same

    def forward(self, anchors: Tensor, labels: Tensor, references: Tensor, reference_labels: Tensor, own: Tensor,
                queue_keys: Tensor, queue_labels: Tensor) -> Tensor:
        kept, positive = self.mined(anchors, labels, queue_keys, queue_labels)
        queue_logits = (similarities(anchors, queue_keys) / self.temperature).masked_fill(~kept, float("-inf"))
        return contrastive_loss(anchors, labels, references, reference_labels, self.temperature, own=own,
                                decoupled=self.decoupled, extra_logits=queue_logits, extra_positives=positive,
                                anchor_weights=self.class_weights[labels])
