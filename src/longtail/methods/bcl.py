"""Balanced Contrastive Learning: a classifier branch and a balanced contrastive branch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from longtail.losses import BalancedContrastiveLoss
from longtail.methods.contrastive import SupCon
from longtail.models import ProjectionMLP


class BCL(SupCon):
    """Balanced Contrastive Learning (BCL).

    - [0] Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual
      Recognition", CVPR 2022, https://arxiv.org/abs/2207.09052

    One backbone feeds two branches, as in ``SupCon``. The classifier branch sees the
    first view and is trained with the method's loss (logit-adjusted cross-entropy in the
    paper). The contrastive branch projects the other views with an MLP, L2-normalises
    them, and trains them with ``BalancedContrastiveLoss``; the class prototypes are the
    classifier's weights passed through a second MLP and L2-normalised. The objective is
    ``alpha * L_classifier + beta * L_BCL``.

    Args:
        alpha, beta: the weights of the classifier and contrastive terms.
        temperature: the contrastive softmax temperature.
        decoupled: leave the positives out of the contrastive denominator (DCL).
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection MLPs' hidden width.
        parts: those of ``ClassifierMethod``; the paper's classifier is a
            ``CosineClassifier`` and its loss ``LogitAdjustedLoss``.
    """

    default_classifier = "cosine"

    def __init__(self, *, alpha: float = 2.0, beta: float = 0.6, temperature: float = 0.1, decoupled: bool = False,
                 feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        super().__init__(alpha=alpha, beta=beta, temperature=temperature, decoupled=decoupled, feat_dim=feat_dim,
                         hidden_dim=hidden_dim, **parts)
        self.prototype_projection = ProjectionMLP(self.backbone.num_features, hidden_dim, feat_dim)
        self.contrastive_loss = BalancedContrastiveLoss(self.classifier.weight.shape[0], temperature, decoupled)

    def contrastive_term(self, embeddings: Tensor, targets: Tensor) -> Tensor:
        prototypes = F.normalize(self.prototype_projection(self.classifier.weight), dim=1)
        return self.contrastive_loss(embeddings, targets, prototypes)
