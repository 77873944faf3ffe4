"""Self-supervised losses that lightly does not provide."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail.losses.contrastive import similarities
from longtail.losses.distributed import gather, own_positions


def _entropy(probabilities: Tensor) -> Tensor:
    return -(probabilities * probabilities.clamp(min=1e-12).log()).sum(dim=-1)


class TwinDistributionLoss(nn.Module):
    """TWIST: twin class distributions of two views, consistent, sharp and diverse.

    - [0] Wang et al., "Self-Supervised Learning by Estimating Twin Class Distributions",
      IEEE TIP 2023, https://arxiv.org/abs/2110.07402 (Sec. 3, eq. 1-4)

    Each view's head gives a distribution ``p`` over C pseudo-classes. The loss is

    ``1/2 (KL(p1 || p2) + KL(p2 || p1))``  (the twins agree)
    ``+ 1/2 (mean_i H(p1_i) + mean_i H(p2_i))``  (each sample's distribution is sharp)
    ``- 1/2 (H(mean_i p1_i) + H(mean_i p2_i))``  (the batch uses every pseudo-class)

    averaged over the batch; the batch means run over every process's samples.

    Shapes:
        ``probabilities_1``, ``probabilities_2`` ``[B, C]`` (rows summing to 1) -> scalar.
    """

    def forward(self, probabilities_1: Tensor, probabilities_2: Tensor) -> Tensor:
        p1, p2 = probabilities_1.float(), probabilities_2.float()
        log1, log2 = p1.clamp(min=1e-12).log(), p2.clamp(min=1e-12).log()
        consistency = 0.5 * ((p1 * (log1 - log2)).sum(dim=1) + (p2 * (log2 - log1)).sum(dim=1)).mean()
        sharpness = 0.5 * (_entropy(p1).mean() + _entropy(p2).mean())
        diversity = 0.5 * (_entropy(gather(p1).mean(dim=0)) + _entropy(gather(p2).mean(dim=0)))
        return consistency + sharpness - diversity


def ntxent_per_image(first: Tensor, second: Tensor, temperature: float) -> Tensor:
    """Each image's NT-Xent: ``[B]``, the mean over its two views as anchors of
    ``-log exp(s(a, a+)/T) / sum_{r != a} exp(s(a, r)/T)``, ``s`` the cosine similarity,
    ``a+`` the image's other view, ``r`` every other embedding of the batch (of every
    process): the per-image terms whose mean is SimCLR's loss. The similarities are
    float32 whatever the autocast dtype; the gradient reaches both views (and, gathered,
    the other processes' embeddings).

    - [0] Chen et al., "A Simple Framework for Contrastive Learning of Visual
      Representations", ICML 2020, https://arxiv.org/abs/2002.05709 (Sec. 2.1, eq. 1)

    Shapes:
        ``first``, ``second`` ``[B, D]``, the two views' embeddings -> ``[B]``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if first.dim() != 2 or first.shape != second.shape:
        raise ValueError(f"expected two views' embeddings [B, D] of one shape, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    anchors = F.normalize(torch.cat([first, second]), dim=1)
    everyone = torch.cat([gather(anchors[: len(first)]), gather(anchors[len(first):])])
    own = own_positions(len(first), first.device)
    own = torch.cat([own, own + len(everyone) // 2])
    positive = torch.cat([own[len(first):], own[: len(first)]])
    logits = similarities(anchors, everyone) / temperature
    rows = torch.arange(len(anchors), device=anchors.device)
    logits[rows, own] = float("-inf")
    losses = logits.logsumexp(dim=1) - logits[rows, positive]
    return losses.view(2, -1).mean(dim=0)
