"""Single-branch training: one view, one loss on the logits."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from longtail.losses.reweighting import effective_number_weights
from longtail.methods.base import ClassifierMethod


class Supervised(ClassifierMethod):
    """A backbone and a classifier trained on one view with a loss on the logits.

    With cross-entropy it is the baseline; logit adjustment (Menon et al., ICLR 2021),
    balanced softmax (Ren et al., NeurIPS 2020) or any loss of
    ``longtail.losses.CLASSIFICATION_LOSSES`` correct it for the long-tailed prior.

    Deferred re-weighting (DRW):

    - [0] Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
      Loss", NeurIPS 2019, https://arxiv.org/abs/1906.07413 (Sec. 4, Algorithm 1)

    From epoch ``drw_epoch`` on (counted from 0) the loss's per-class ``weight`` becomes
    the class-balanced weights by the effective number (Cui et al., CVPR 2019) with
    ``drw_beta``: the representation is learned on the natural distribution first, then
    the classes are re-weighted (160 of 200 epochs in the paper, with ``beta = 0.9999``).
    The weights follow the epoch, so a resumed run sets them again.

    Args:
        drw_epoch: the epoch DRW starts at; empty: no re-weighting.
        drw_beta: ``beta`` of the class-balanced weights.
        class_counts: training images per class (the run supplies them).
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, drw_epoch: int | None = None, drw_beta: float = 0.9999,
                 class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(**parts)
        if drw_epoch is not None and (drw_epoch < 0 or class_counts is None):
            raise ValueError(f"drw_epoch must be a non-negative epoch and needs class_counts, got {drw_epoch}")
        self.drw_epoch = drw_epoch
        self.undeferred_weight = getattr(self.classifier_loss, "weight", None)
        self.deferred_weight = effective_number_weights(class_counts, drw_beta) if drw_epoch is not None else None

    def _reweight(self) -> None:
        if self.drw_epoch is not None:
            deferred = self.current_epoch >= self.drw_epoch
            weight = self.deferred_weight if deferred else self.undeferred_weight
            self.classifier_loss.weight = None if weight is None else weight.to(self.device)

    def on_train_start(self) -> None:
        super().on_train_start()
        self._reweight()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._reweight()

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"classifier": self.classifier_loss(self(views[:, 0]), targets)}
