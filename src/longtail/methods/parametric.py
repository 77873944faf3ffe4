"""Parametric contrastive learning: PaCo and GPaCo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail.losses import LabelledQueue
from longtail.losses.distributed import gather, own_positions
from longtail.losses.parametric import ParametricContrastiveLoss
from longtail.methods.base import ClassifierMethod, view_major
from longtail.models import MomentumEncoder, Projected, ProjectionMLP


class GPaCo(ClassifierMethod):
    """Generalized parametric contrastive learning (GPaCo).

    - [0] Cui et al., "Generalized Parametric Contrastive Learning", TPAMI 2023,
      https://arxiv.org/abs/2209.12400

    Both views go through the backbone, the classifier and a projection MLP; every view is
    an anchor of ``ParametricContrastiveLoss``, with its own classifier logits for the
    class centres, contrasted with every view of the batch (of every process) and a queue
    of the second views' past embeddings. The classifier, trained through the centres with
    the training prior added, models the balanced distribution: evaluation reads its
    logits as they are.

    Args:
        alpha: the weight of a sample positive against its class centre's 1.
        temperature: T of the sample similarities.
        queue_size: the past embeddings kept.
        decoupled: leave the positives out of the denominator (DCL, Yeh et al., ECCV 2022).
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection MLP's hidden width.
        class_counts: training images per class (the run supplies them).
        parts: those of ``ClassifierMethod``.
    """

    num_views = 2

    def __init__(self, *, alpha: float = 0.02, temperature: float = 0.05, queue_size: int = 1024,
                 decoupled: bool = False, feat_dim: int = 128, hidden_dim: int = 512,
                 class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(**parts)
        if class_counts is None:
            raise ValueError("needs class_counts, for the prior of the class centres")
        self.projection = ProjectionMLP(self.backbone.num_features, hidden_dim, feat_dim)
        self.queue = LabelledQueue(queue_size, feat_dim)
        self.parametric_loss = ParametricContrastiveLoss(class_counts, alpha, temperature, decoupled=decoupled)

    @property
    def logits_prior(self) -> str:
        return "uniform"

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch = len(targets)
        features = self.features(view_major(views[:, :2]))
        embeddings = F.normalize(self.projection(features), dim=1)
        labels = targets.repeat(2)
        self.queue.hold(embeddings[batch:], targets)
        return {"parametric": self._loss(embeddings, labels, self.classifier(features), [embeddings], [labels])}

    def _loss(self, anchors: Tensor, labels: Tensor, logits: Tensor, members: list[Tensor],
              member_labels: list[Tensor]) -> Tensor:
        """The PaCo loss of ``anchors``, the first of ``members`` (the batch's embeddings,
        gathered across processes), then the queue."""
        queue_keys, queue_labels = self.queue()
        references = torch.cat([*(gather(m) for m in members), queue_keys.to(anchors.dtype)])
        reference_labels = torch.cat([*(gather(m) for m in member_labels), queue_labels])
        own = own_positions(len(anchors), anchors.device)
        return self.parametric_loss(anchors, labels, logits, references, reference_labels, own)

    def after_step(self) -> None:
        self.queue.push_held()


class PaCo(GPaCo):
    """Parametric contrastive learning (PaCo).

    - [0] Cui et al., "Parametric Contrastive Learning", ICCV 2021,
      https://arxiv.org/abs/2107.12028

    The first view is the query: through the backbone to the classifier (the class
    centres' logits) and the projection (the anchor). The second view is the key, embedded
    by a momentum encoder (a moving average of the backbone and projection, MoCo's). Each
    query is contrasted with the queries and keys of the batch (of every process), the
    queue of past keys and the class centres (``ParametricContrastiveLoss``); the keys then
    join the queue and the encoder moves toward the online weights. The keys are encoded
    in groups of at most ``key_group`` images, each normalised by its own batch
    statistics: MoCo's Shuffling BN on one process (``MomentumEncoder``'s ``group``).

    Args:
        momentum: m of the key encoder's moving average.
        key_group: the images of the key batch normalised together (32 per GPU in MoCo).
        alpha, temperature, queue_size, decoupled, feat_dim, hidden_dim, class_counts,
            parts: as ``GPaCo``.
    """

    def __init__(self, *, momentum: float = 0.999, key_group: int = 32, alpha: float = 0.02,
                 temperature: float = 0.05, queue_size: int = 1024, decoupled: bool = False, feat_dim: int = 128,
                 hidden_dim: int = 512, class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(alpha=alpha, temperature=temperature, queue_size=queue_size, decoupled=decoupled,
                         feat_dim=feat_dim, hidden_dim=hidden_dim, class_counts=class_counts, **parts)
        self.key_encoder = MomentumEncoder(Projected(self.backbone, self.projection), momentum, group=key_group)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        features = self.features(views[:, 0])
        queries = F.normalize(self.projection(features), dim=1)
        keys = F.normalize(self.key_encoder(views[:, 1]), dim=1).to(queries.dtype)
        self.queue.hold(keys, targets)
        return {"parametric": self._loss(queries, targets, self.classifier(features), [queries, keys],
                                         [targets, targets])}

    def after_step(self) -> None:
        super().after_step()
        self.key_encoder.update(Projected(self.backbone, self.projection))
