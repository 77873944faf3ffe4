"""Parametric contrastive learning: class centres in the contrast set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail.losses.contrastive import contrastive_loss
from longtail.losses.rebalancing import class_counts_tensor


class ParametricContrastiveLoss(nn.Module):
    """The PaCo loss: supervised contrast with learnable class centres.

    - [0] Cui et al., "Parametric Contrastive Learning", ICCV 2021,
      https://arxiv.org/abs/2107.12028 (Sec. 3.2, the PaCo loss; Sec. 3.3, rebalancing)
    - [1] Cui et al., "Generalized Parametric Contrastive Learning", TPAMI 2023,
      https://arxiv.org/abs/2209.12400 (GPaCo: the same loss without a momentum encoder)

    For anchor ``i`` (an L2-normalised embedding) of class ``y``, its positives ``P(i)``
    (the references of its class) and the C class centres ``c_j`` (the classifier's
    weights, through its logits ``l_ij``):

    ``L_i = -( alpha sum_{p in P(i)} log s_p + log s_{c_y} ) / ( alpha |P(i)| + 1 )``

    where ``s`` is one softmax over the references, ``z_i . z_k / T`` for every ``k`` of the
    contrast set ``A(i)`` (the anchor left out), and the centres, ``l_ij + log pi_j`` with
    ``pi`` the training prior and no temperature (the balanced-softmax rebalancing of [0]).
    ``alpha`` rebalances the samples against the centres: small, so that a head class's
    many positives do not outweigh its centre. With ``centres=False`` the loss is SupCon's
    over the same references (``alpha`` cancels). The loss is the mean over the anchors.

    The caller assembles the references: under a momentum encoder (PaCo) the queries, the
    keys and the queue; without (GPaCo) both views and the queue; gathered across
    processes in a distributed run (``longtail.losses.distributed``).

    Args:
        class_counts: training images per class, for the prior ``pi``.
        alpha: the weight of a sample positive against the centre's 1.
        temperature: T of the sample similarities.
        centres: whether the class centres join the softmax.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).

    Shapes:
        ``anchors [N, D]``, ``labels [N]``, ``logits [N, C]``, ``references [M, D]``,
        ``reference_labels [M]``, ``own [N]`` (each anchor's position among the references,
        ``-1``: none) -> scalar.
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, alpha: float = 0.02, temperature: float = 0.05,
                 centres: bool = True, decoupled: bool = False) -> None:
        super().__init__()
        if alpha < 0 or not temperature > 0:
            raise ValueError(f"alpha must be non-negative and temperature positive, got {alpha} and {temperature}")
        counts = class_counts_tensor(class_counts)
        self.register_buffer("log_prior", (counts / counts.sum()).log().float())
        self.alpha, self.temperature, self.centres, self.decoupled = alpha, temperature, centres, decoupled

    def forward(self, anchors: Tensor, labels: Tensor, logits: Tensor, references: Tensor,
                reference_labels: Tensor, own: Tensor) -> Tensor:
        extra = {}
        if self.centres:
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            extra = {"extra_logits": logits + self.log_prior.to(logits.dtype),
                     "extra_positives": F.one_hot(labels, len(self.log_prior)).bool()}
        return contrastive_loss(anchors, labels, references, reference_labels, self.temperature, own=own,
                                decoupled=self.decoupled, positive_weight=self.alpha if self.centres else 1.0,
                                **extra)
