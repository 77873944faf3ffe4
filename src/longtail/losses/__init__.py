"""Losses: plain ``nn.Module``s with no Lightning in them, usable in any training loop."""

from longtail.losses.contrastive import BalancedContrastiveLoss, SupConLoss
from longtail.losses.rebalancing import BalancedSoftmaxLoss, CrossEntropyLoss, LogitAdjustedLoss

#: Losses on logits, ``forward(logits, targets)``, by the name a config gives.
CLASSIFICATION_LOSSES = {
    "balanced_softmax": BalancedSoftmaxLoss,
    "ce": CrossEntropyLoss,
    "logit_adjusted": LogitAdjustedLoss,
}

__all__ = [
    "BalancedContrastiveLoss",
    "BalancedSoftmaxLoss",
    "CLASSIFICATION_LOSSES",
    "CrossEntropyLoss",
    "LogitAdjustedLoss",
    "SupConLoss",
]
