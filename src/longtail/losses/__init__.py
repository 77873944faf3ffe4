"""Losses: plain ``nn.Module``s with no Lightning in them, usable in any training loop."""

from longtail.losses.contrastive import BalancedContrastiveLoss, SupConLoss, contrastive_loss
from longtail.losses.queue import LabelledQueue
from longtail.losses.rebalancing import BalancedSoftmaxLoss, CrossEntropyLoss, LogitAdjustedLoss
from longtail.losses.reweighting import ClassBalancedLoss, FocalLoss, LDAMLoss

#: Losses on logits, ``forward(logits, targets)``, by the name ``loss.name`` gives. Each
#: takes ``class_counts`` (the run supplies them) and ``weight`` (per-class weights, set by a
#: method or a user of the Python API); its other arguments are ``loss.*`` keys.
CLASSIFICATION_LOSSES = {
    "balanced_softmax": BalancedSoftmaxLoss,
    "ce": CrossEntropyLoss,
    "class_balanced": ClassBalancedLoss,
    "focal": FocalLoss,
    "ldam": LDAMLoss,
    "logit_adjusted": LogitAdjustedLoss,
}

__all__ = [
    "BalancedContrastiveLoss",
    "BalancedSoftmaxLoss",
    "CLASSIFICATION_LOSSES",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LabelledQueue",
    "LogitAdjustedLoss",
    "SupConLoss",
    "contrastive_loss",
]
