"""Balanced Contrastive Learning: a classifier branch and a balanced contrastive branch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from longtail.losses import BalancedContrastiveLoss
from longtail.methods.base import ClassifierMethod
from longtail.models import ProjectionMLP


class BCL(ClassifierMethod):
    """Balanced Contrastive Learning (BCL).

    - [0] Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual
      Recognition", CVPR 2022, https://arxiv.org/abs/2207.09052

    One backbone feeds two branches. The classifier branch sees the first view and is
    trained with the method's loss (logit-adjusted cross-entropy in the paper). The contrastive branch projects the
    other views with an MLP, L2-normalises them, and trains them with
    ``BalancedContrastiveLoss``; the class prototypes are the classifier's weights
    passed through a second MLP and L2-normalised. The objective is
    ``alpha * L_classifier + beta * L_BCL``.

    Args:
        alpha, beta: the weights of the classifier and contrastive terms.
        temperature: the contrastive softmax temperature.
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection MLPs' hidden width.
        parts: those of ``ClassifierMethod``; the paper's classifier is a
            ``CosineClassifier`` and its loss ``LogitAdjustedLoss``.
    """

    num_views = 3
    default_classifier = "cosine"

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        beta: float = 0.6,
        temperature: float = 0.1,
        feat_dim: int = 128,
        hidden_dim: int = 512,
        **parts,
    ) -> None:
        super().__init__(**parts)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        self.alpha, self.beta = alpha, beta
        features = self.backbone.num_features
        self.projection = ProjectionMLP(features, hidden_dim, feat_dim)
        self.prototype_projection = ProjectionMLP(features, hidden_dim, feat_dim)
        self.contrastive_loss = BalancedContrastiveLoss(self.classifier.weight.shape[0], temperature)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch, num_views = views.shape[:2]
        if num_views < 2:
            raise ValueError(f"BCL needs at least 2 views (1 classifier, 1 contrastive), got {num_views}")
        features = self.features(views.transpose(0, 1).flatten(0, 1))
        logits = self.classifier(features[:batch])
        embeddings = F.normalize(self.projection(features[batch:]), dim=1)
        embeddings = embeddings.unflatten(0, (num_views - 1, batch)).transpose(0, 1)
        prototypes = F.normalize(self.prototype_projection(self.classifier.weight), dim=1)
        return {
            "classifier": self.alpha * self.classifier_loss(logits, targets),
            "contrastive": self.beta * self.contrastive_loss(embeddings, targets, prototypes),
        }
