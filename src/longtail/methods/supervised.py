"""Single-branch training: one view, one loss on the logits."""

from __future__ import annotations

from torch import Tensor

from longtail.methods.base import ClassifierMethod


class Supervised(ClassifierMethod):
    """A backbone and a classifier trained on one view with a loss on the logits.

    With cross-entropy it is the baseline; logit adjustment (Menon et al., ICLR 2021),
    balanced softmax (Ren et al., NeurIPS 2020) or any loss of
    ``longtail.losses.CLASSIFICATION_LOSSES`` correct it for the long-tailed prior.

    Args: those of ``ClassifierMethod``.
    """

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"classifier": self.classifier_loss(self(views[:, 0]), targets)}
