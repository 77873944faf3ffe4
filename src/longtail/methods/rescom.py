"""Rebalanced siamese contrastive mining (ResCom)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from longtail.losses.distributed import gather, own_positions
from longtail.losses.queue import ClassBalancedQueue
from longtail.losses.rescom import ResComLoss
from longtail.methods.base import ClassifierMethod, check_loss_weights, view_major
from longtail.models import ProjectionMLP


class ResCom(ClassifierMethod):
    """Rebalanced siamese contrastive mining (ResCom).

    - [0] Zhong et al., "Rebalanced Siamese Contrastive Mining for Long-Tailed
      Recognition", 2022, https://arxiv.org/abs/2203.11506

    Two views of each image go through one backbone (siamese). Their classifier logits are
    trained with the method's loss on both views (balanced softmax in the paper: the
    siamese balanced softmax), their projected embeddings with ``ResComLoss``: the batch's
    views and the hard positives and negatives mined from a class-balanced queue of past
    first-view embeddings (``ClassBalancedQueue``), each anchor weighted by its class's
    effective number. The objective is ``alpha * L_classifier + beta * L_contrastive``.

    Args:
        alpha, beta: the weights of the classifier and contrastive terms.
        temperature: T of the contrastive softmax.
        queue_per_class: the keys kept per class.
        hard_positives, hard_negatives: mined per anchor from the queue.
        class_beta: the effective number's beta of the anchors' class weights.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection MLP's hidden width.
        class_counts: training images per class (the run supplies them).
        parts: those of ``ClassifierMethod``.
    """

    num_views = 2

    def __init__(self, *, alpha: float = 1.0, beta: float = 0.5, temperature: float = 0.2, queue_per_class: int = 10,
                 hard_positives: int = 1, hard_negatives: int = 400, class_beta: float = 0.999999,
                 decoupled: bool = False, feat_dim: int = 128, hidden_dim: int = 512,
                 class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(**parts)
        if class_counts is None:
            raise ValueError("needs class_counts, for the class weights")
        check_loss_weights(alpha=alpha, beta=beta)
        self.alpha, self.beta = alpha, beta
        self.projection = ProjectionMLP(self.backbone.num_features, hidden_dim, feat_dim)
        self.queue = ClassBalancedQueue(len(class_counts), queue_per_class, feat_dim)
        self.contrastive_loss = ResComLoss(class_counts, temperature, hard_positives, hard_negatives, class_beta,
                                           decoupled)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch = len(targets)
        features = self.features(view_major(views[:, :2]))
        labels = targets.repeat(2)
        embeddings = F.normalize(self.projection(features), dim=1)
        self.queue.hold(embeddings[:batch], targets)
        queue_keys, queue_labels = self.queue()
        contrastive = self.contrastive_loss(embeddings, labels, gather(embeddings), gather(labels),
                                            own_positions(len(embeddings), embeddings.device),
                                            queue_keys.to(embeddings.dtype), queue_labels)
        return {"classifier": self.alpha * self.classifier_loss(self.classifier(features), labels),
                "contrastive": self.beta * contrastive}

    def after_step(self) -> None:
        self.queue.push_held()
