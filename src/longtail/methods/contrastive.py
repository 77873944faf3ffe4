"""Supervised contrastive methods: a classifier branch beside a contrastive branch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from longtail.losses import SupConLoss
from longtail.losses.distributed import gather
from longtail.losses.targeted import TargetedSupConLoss
from longtail.methods.base import ClassifierMethod, check_loss_weights, view_major
from longtail.models import ProjectionMLP


class SupCon(ClassifierMethod):
    """Supervised contrastive learning, joint with a classifier or as pre-training.

    - [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362 (eq. 2; Sec. 4, the two-stage protocol)

    The first view trains the classifier with the method's loss; the others are projected
    by an MLP, L2-normalised and trained with ``SupConLoss``. The objective is
    ``alpha * L_classifier + beta * L_contrastive``. With ``alpha = 0`` there is no
    classifier view (two views, both contrastive) and the classifier is frozen: the
    paper's pre-training, whose backbone a linear classifier then learns on
    (``method.name=crt model.init_from=RUN_DIR``).

    Args:
        alpha, beta: the weights of the classifier and contrastive terms.
        temperature: the contrastive softmax temperature.
        decoupled: leave the positives out of the contrastive denominator (DCL, Yeh et
            al., ECCV 2022).
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection MLP's hidden width.
        parts: those of ``ClassifierMethod``.
    """

    num_views = 3

    def __init__(self, *, alpha: float = 1.0, beta: float = 1.0, temperature: float = 0.1, decoupled: bool = False,
                 feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        super().__init__(**parts)
        check_loss_weights(alpha=alpha, beta=beta)
        self.alpha, self.beta = alpha, beta
        self.num_views = self.views_needed({"alpha": alpha})
        self.projection = ProjectionMLP(self.backbone.num_features, hidden_dim, feat_dim)
        self.contrastive_loss = SupConLoss(temperature, decoupled)  # a subclass may set its own

    @classmethod
    def views_needed(cls, arguments: dict) -> int:
        """A classifier view and two contrastive ones; at ``alpha = 0`` the two alone."""
        return 3 if arguments.get("alpha", 1.0) > 0 else 2

    @property
    def trains_classifier(self) -> bool:
        return self.alpha > 0

    def frozen(self) -> list[nn.Module]:
        # at alpha 0 no loss reaches the classifier: frozen, as a DDP run needs every trained parameter used
        return [] if self.trains_classifier else [self.classifier]

    def contrastive_term(self, embeddings: Tensor, targets: Tensor) -> Tensor:
        """The contrastive loss of the L2-normalised embeddings ``[B, V-1, D]`` of the
        contrastive views."""
        return self.contrastive_loss(embeddings, targets)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch, num_views = views.shape[:2]
        classify = self.trains_classifier
        if num_views < 1 + classify:
            raise ValueError(f"{type(self).__name__} needs {1 + classify} views or more, got {num_views}")
        features = self.features(view_major(views))
        terms = {}
        if classify:
            terms["classifier"] = self.alpha * self.classifier_loss(self.classifier(features[:batch]), targets)
            features = features[batch:]
        embeddings = F.normalize(self.projection(features), dim=1)
        embeddings = embeddings.unflatten(0, (num_views - classify, batch)).transpose(0, 1)
        terms["contrastive"] = self.beta * self.contrastive_term(embeddings, targets)
        return terms


class TSC(SupCon):
    """Targeted supervised contrastive learning (TSC).

    - [0] Li et al., "Targeted Supervised Contrastive Learning for Long-Tailed
      Recognition", CVPR 2022, https://arxiv.org/abs/2111.13998

    ``SupCon`` whose contrastive branch is ``TargetedSupConLoss``: C targets spread
    uniformly on the sphere (computed once by optimisation), each class pulled to the one
    the Hungarian algorithm assigns it after every step, from the class centroids of every
    process's embeddings; each anchor's positives are its image's other views and k drawn
    from its class (KCL, on which the paper builds). By default a pre-training
    (``alpha = 0``), as in the paper, followed by a linear classifier
    (``method.name=crt model.init_from=RUN_DIR``).

    Args:
        target_weight: lambda, the weight of the target term (0.2 in the authors' runs).
        positives: k, the views of other images of its class drawn as an anchor's
            positives (6 in the authors' runs); ``None``: all of them, SupCon's.
        alpha, beta, temperature, decoupled, feat_dim, hidden_dim, parts: as ``SupCon``.
    """

    def __init__(self, *, alpha: float = 0.0, beta: float = 1.0, temperature: float = 0.1, target_weight: float = 0.2,
                 positives: int | None = 6, decoupled: bool = False, feat_dim: int = 128, hidden_dim: int = 512,
                 **parts) -> None:
        super().__init__(alpha=alpha, beta=beta, temperature=temperature, decoupled=decoupled, feat_dim=feat_dim,
                         hidden_dim=hidden_dim, **parts)
        self.contrastive_loss = TargetedSupConLoss(self.classifier.weight.shape[0], feat_dim, temperature,
                                                   target_weight, positives, decoupled=decoupled)

    def contrastive_term(self, embeddings: Tensor, targets: Tensor) -> Tensor:
        self._seen = embeddings.detach().flatten(0, 1), targets.repeat_interleave(embeddings.shape[1])
        return self.contrastive_loss(embeddings, targets)

    def after_step(self) -> None:
        embeddings, labels = self._seen
        self.contrastive_loss.update(gather(embeddings), gather(labels))
