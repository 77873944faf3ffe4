"""Losses: plain ``nn.Module``s with no Lightning in them, usable in any training loop."""

from longtail.losses.contrastive import BalancedContrastiveLoss, SupConLoss, contrastive_loss
from longtail.losses.memorization import MomentumLoss
from longtail.losses.parametric import ParametricContrastiveLoss
from longtail.losses.queue import ClassBalancedQueue, LabelledQueue
from longtail.losses.rebalancing import BalancedSoftmaxLoss, CrossEntropyLoss, IIFLoss, LogitAdjustedLoss
from longtail.losses.rescom import ResComLoss
from longtail.losses.reweighting import ClassBalancedLoss, FocalLoss, LDAMLoss
from longtail.losses.sigmoid import (
    BalancedBCELoss,
    DistributionBalancedLoss,
    EqualizationLoss,
    EqualizedFocalLoss,
    GumbelLoss,
)
from longtail.losses.targeted import TargetedSupConLoss

#: Losses on logits, ``forward(logits, targets)``, by the name ``loss.name`` gives. Each
#: takes ``class_counts`` (the run supplies them) and ``weight`` (per-class weights, set by a
#: method or a user of the Python API); its other arguments are ``loss.*`` keys.
CLASSIFICATION_LOSSES = {
    "bal_bce": BalancedBCELoss,
    "balanced_softmax": BalancedSoftmaxLoss,
    "ce": CrossEntropyLoss,
    "class_balanced": ClassBalancedLoss,
    "distribution_balanced": DistributionBalancedLoss,
    "efl": EqualizedFocalLoss,
    "eql": EqualizationLoss,
    "focal": FocalLoss,
    "gol": GumbelLoss,
    "iif": IIFLoss,
    "ldam": LDAMLoss,
    "logit_adjusted": LogitAdjustedLoss,
}

__all__ = [
    "BalancedBCELoss",
    "BalancedContrastiveLoss",
    "BalancedSoftmaxLoss",
    "CLASSIFICATION_LOSSES",
    "ClassBalancedLoss",
    "ClassBalancedQueue",
    "CrossEntropyLoss",
    "DistributionBalancedLoss",
    "EqualizationLoss",
    "EqualizedFocalLoss",
    "FocalLoss",
    "GumbelLoss",
    "IIFLoss",
    "LDAMLoss",
    "LabelledQueue",
    "MomentumLoss",
    "LogitAdjustedLoss",
    "ParametricContrastiveLoss",
    "ResComLoss",
    "SupConLoss",
    "TargetedSupConLoss",
    "contrastive_loss",
]
