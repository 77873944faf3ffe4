"""Targeted supervised contrast: classes pulled toward targets spread over the sphere."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail.losses.contrastive import _check_temperature, _flatten_views, contrastive_loss, similarities
from longtail.losses.distributed import gather, own_positions, world


@cache
def uniform_targets(num_classes: int, dim: int, steps: int = 500, temperature: float = 0.07,
                    seed: int = 0) -> Tensor:
    """``[C, D]`` unit vectors spread as evenly as an optimiser finds: the minimiser of
    ``1/C sum_i log sum_j exp(u_i . u_j / t)`` (Li et al., CVPR 2022, Sec. 3.2), by Adam
    on the gradient's component along the sphere, from a seeded Gaussian start, projected
    back onto the sphere after every step. The terms ``j = i`` are left out: on the sphere
    they are the constant ``exp(1 / t)``, which would otherwise swamp the others' gradient.

    For ``C <= D + 1`` the optimum is a regular simplex (every pair at ``arccos(-1/(C-1))``);
    beyond, the points approach the best known packings of C points in D dimensions.
    Computed once per ``(C, D)`` in a process; a run keeps them in its checkpoints.
    """
    generator = torch.Generator().manual_seed(seed)
    points = F.normalize(torch.randn(num_classes, dim, generator=generator, dtype=torch.float64), dim=1)
    points.requires_grad_(True)
    optimizer = torch.optim.Adam([points], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        similarity = (points @ points.T / temperature).masked_fill(torch.eye(num_classes, dtype=torch.bool), -torch.inf)
        torch.logsumexp(similarity, dim=1).mean().backward()
        with torch.no_grad():  # the radial part only scales the points, which the projection undoes
            points.grad -= (points.grad * points).sum(dim=1, keepdim=True) * points
        optimizer.step()
        with torch.no_grad():
            points.copy_(F.normalize(points, dim=1))
    return points.detach().float()


class TargetedSupConLoss(nn.Module):
    """TSC: k-positive contrast with each class's target on the sphere in the contrast set.

    - [0] Li et al., "Targeted Supervised Contrastive Learning for Long-Tailed
      Recognition", CVPR 2022, https://arxiv.org/abs/2111.13998 (Sec. 3, eq. 4)
    - [1] Kang et al., "Exploring Balanced Feature Spaces for Representation Learning",
      ICLR 2021 (KCL: k positives per anchor)

    The C targets ``t`` (``uniform_targets``) join every anchor's softmax, at the same
    temperature as the views. Anchor view ``i`` of class ``y`` has as positives ``P(i)``
    the other views of its image and ``positives`` (k) views of other images of its class
    drawn at random (KCL, on which TSC is built; ``None``: all of them, SupCon's), the rest
    of the batch in its denominator only. With ``t_{a(y)}`` the target assigned to its
    class, its loss is

    ``L_i = -1/|P(i)| (sum_{p in P(i)} log s_p + lambda log s_{t_{a(y)}})``

    the target term inside the ``1/(k+1)`` of KCL, as the authors correct eq. 4's missing
    parenthesis. The views' term averages over the anchors with a view positive (all of
    them with two views or more), the targets' over every anchor (one with no view
    positive keeps its target term, at weight lambda). The tail classes, whatever their
    few samples, each hold a target as far from the others as the head's. Classes and targets are matched by
    the Hungarian algorithm on the cosine between each class's centroid (a moving average
    of its normalised mean embedding) and each target, after every step (``update``). The
    assignment, the centroids, the targets and the count of draws (which seeds the k
    positives' draw with the process's rank, so that a resumed run draws the same) are
    buffers, kept in checkpoints.

    Args:
        num_classes: C.
        dim: D, the embeddings' dimension.
        temperature: T of the softmax.
        target_weight: lambda, the weight of the target term.
        positives: k, the other images' views drawn as each anchor's positives; ``None``: all.
        centroid_momentum: the centroids' moving-average factor (the old value's weight).
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).

    Shapes:
        features ``[B, V, D]`` L2-normalised, targets ``[B]`` -> scalar.
    """

    def __init__(self, num_classes: int, dim: int, temperature: float = 0.1, target_weight: float = 0.2,
                 positives: int | None = None, centroid_momentum: float = 0.9, decoupled: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        if target_weight < 0 or not 0 <= centroid_momentum < 1 or (positives is not None and positives < 0):
            raise ValueError(f"target_weight and positives must be non-negative and centroid_momentum in [0, 1), "
                             f"got {target_weight}, {positives} and {centroid_momentum}")
        self.temperature, self.target_weight, self.decoupled = temperature, target_weight, decoupled
        self.positives, self.centroid_momentum = positives, centroid_momentum
        self.register_buffer("targets", uniform_targets(num_classes, dim).clone())
        self.register_buffer("assignment", torch.arange(num_classes))
        self.register_buffer("centroids", torch.zeros(num_classes, dim))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def kept_positives(self, labels: Tensor, images: Tensor, reference_labels: Tensor,
                       reference_images: Tensor) -> Tensor:
        """``[N, M]``: the views of each anchor's image (itself among them), and k references
        of its class from other images drawn uniformly without replacement (with
        ``positives=None``, every reference of its class)."""
        same_class = labels[:, None] == reference_labels[None, :]
        if self.positives is None:
            return same_class
        same_image = images[:, None] == reference_images[None, :]
        candidates = same_class & ~same_image
        rank, size = world()
        generator = torch.Generator().manual_seed(int(self.draws) * size + rank)
        self.draws += 1
        scores = torch.rand(candidates.shape, generator=generator).to(candidates.device)
        drawn = scores.masked_fill(~candidates, -1.0).topk(min(self.positives, scores.shape[1]), dim=1).indices
        sampled = torch.zeros_like(candidates).scatter_(1, drawn, True) & candidates
        return sampled | same_image

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        anchors, labels = _flatten_views(features, targets)
        images = own_positions(len(features), features.device).repeat(features.shape[1])
        target_logits = similarities(anchors, self.targets) / self.temperature
        assigned = F.one_hot(self.assignment[labels], len(self.targets)).bool()
        own = own_positions(len(anchors), anchors.device)
        references, reference_labels = gather(anchors), gather(labels)
        kept = self.kept_positives(labels, images, reference_labels, gather(images))
        common = dict(temperature=self.temperature, own=own, decoupled=self.decoupled, kept_positives=kept)
        # decoupled, the anchor's target leaves the views' denominator too: it is a positive
        view_target_logits = target_logits.masked_fill(assigned, -torch.inf) if self.decoupled else target_logits
        views = contrastive_loss(anchors, labels, references, reference_labels, extra_logits=view_target_logits,
                                 **common)
        positive_count = kept.sum(dim=1) - 1  # the anchor itself is kept, and is no positive
        target = contrastive_loss(anchors, labels, references, reference_labels, extra_logits=target_logits,
                                  extra_positives=assigned, positive_weight=0.0,
                                  anchor_weights=1 / positive_count.clamp(min=1), **common)
        return views + self.target_weight * target

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Move the centroids of the classes in ``embeddings [N, D]`` (their labels ``[N]``;
        every process's, in a distributed run) and match classes to targets again."""
        from scipy.optimize import linear_sum_assignment

        sums = torch.zeros_like(self.centroids).index_add_(0, labels, embeddings.to(self.centroids.dtype))
        present = torch.bincount(labels, minlength=len(sums)) > 0
        means = F.normalize(sums[present], dim=1)  # the normalised mean: the sum's direction
        seen = self.centroids[present].norm(dim=1, keepdim=True) > 0
        moved = torch.where(seen, self.centroid_momentum * self.centroids[present]
                            + (1 - self.centroid_momentum) * means, means)
        self.centroids[present] = F.normalize(moved, dim=1)
        cost = -(self.centroids @ self.targets.T).double().cpu().numpy()
        classes, chosen = linear_sum_assignment(cost)
        self.assignment[torch.as_tensor(classes)] = torch.as_tensor(chosen, device=self.assignment.device)
