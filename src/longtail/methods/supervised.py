"""Single-branch training: one view, one loss on the logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from longtail.losses.reweighting import effective_number_weights
from longtail.methods.base import ClassifierMethod


class Supervised(ClassifierMethod):
    """A backbone and a classifier trained on one view with a loss on the logits.

    With cross-entropy it is the baseline; logit adjustment (Menon et al., ICLR 2021),
    balanced softmax (Ren et al., NeurIPS 2020) or any loss of
    ``longtail.losses.CLASSIFICATION_LOSSES`` correct it for the long-tailed prior. Two
    schedules set the loss's per-class ``weight`` as training goes (one at a time):

    Deferred re-weighting (DRW):

    - [0] Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
      Loss", NeurIPS 2019, https://arxiv.org/abs/1906.07413 (Sec. 4, Algorithm 1)

    From epoch ``drw_epoch`` on (counted from 0) the weights are the class-balanced
    weights by the effective number (Cui et al., CVPR 2019) with ``drw_beta``: the
    representation is learned on the natural distribution first, then the classes are
    re-weighted (160 of 200 epochs in the paper, with ``beta = 0.9999``).

    Class-difficulty-based weighting (CDB-W) and sampling (CDB-S):

    - [1] Sinha et al., "Class-Difficulty Based Methods for Long-Tailed Visual
      Recognition", IJCV 2022, https://arxiv.org/abs/2207.14499 (Sec. 3)

    With ``cdb_tau``, after every validation pass each class's difficulty is
    ``d_c = 1 - A_c`` (``A_c`` its accuracy on the held-out validation split, e.g.
    ``data.val_per_class``) and its weight ``w_c = d_c^tau``, normalised to sum to C:
    the hard classes, not merely the rare ones, weigh more. The weights go to the loss
    (CDB-W), or with ``data.sampler=class_difficulty`` to the sampler as class
    probabilities (CDB-S). They start uniform; the difficulties are a buffer, kept in
    checkpoints.

    Either schedule's weights are set again at fit start, so a resumed run goes on as
    the uninterrupted one.

    Args:
        drw_epoch: the epoch DRW starts at; empty: no re-weighting.
        drw_beta: ``beta`` of the class-balanced weights.
        cdb_tau: the exponent of the class-difficulty weights; empty: none.
        class_counts: training images per class (the run supplies them).
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, drw_epoch: int | None = None, drw_beta: float = 0.9999, cdb_tau: float | None = None,
                 class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(**parts)
        if drw_epoch is not None and cdb_tau is not None:
            raise ValueError("drw_epoch and cdb_tau both set the loss's weights: choose one")
        if drw_epoch is not None and (drw_epoch < 0 or class_counts is None):
            raise ValueError(f"drw_epoch must be a non-negative epoch and needs class_counts, got {drw_epoch}")
        if cdb_tau is not None and (cdb_tau < 0 or class_counts is None):
            raise ValueError(f"cdb_tau must be non-negative and needs class_counts, got {cdb_tau}")
        self.drw_epoch, self.cdb_tau = drw_epoch, cdb_tau
        self.undeferred_weight = getattr(self.classifier_loss, "weight", None)
        self.deferred_weight = effective_number_weights(class_counts, drw_beta) if drw_epoch is not None else None
        if cdb_tau is not None:
            self.register_buffer("difficulties", torch.ones(len(class_counts)))

    def _difficulty_weights(self) -> Tensor:
        weights = self.difficulties.pow(self.cdb_tau)
        if not weights.sum() > 0:  # every class perfect on the held-out data
            weights = torch.ones_like(weights)
        return weights * len(weights) / weights.sum()

    def _reweight(self) -> None:
        if self.drw_epoch is not None:
            weight = self.deferred_weight if self.current_epoch >= self.drw_epoch else self.undeferred_weight
            self.classifier_loss.weight = None if weight is None else weight.to(self.device)
        if self.cdb_tau is not None:
            sampler = self.trainer.datamodule.train_sampler if self._trainer is not None else None
            if sampler is not None and sampler.name == "class_difficulty":
                sampler.class_weights = self._difficulty_weights().cpu()
            else:
                self.classifier_loss.weight = self._difficulty_weights()

    def validated(self, per_class_accuracy: list[float | None]) -> None:
        if self.cdb_tau is not None:
            accuracy = [a if a is not None else 0.0 for a in per_class_accuracy]
            self.difficulties.copy_(1 - torch.tensor(accuracy, device=self.difficulties.device) / 100)
            self._reweight()

    def on_train_start(self) -> None:
        super().on_train_start()
        self._reweight()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._reweight()
