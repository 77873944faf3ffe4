"""Single-branch training: one view, one loss on the logits."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from longtail.methods.base import ClassifierMethod, build_classification_loss
from longtail.optim import OptimConfig


class Supervised(ClassifierMethod):
    """A backbone and a classifier trained on one view with a loss on the logits.

    With ``loss="ce"`` it is the cross-entropy baseline; ``logit_adjusted`` (Menon et
    al., ICLR 2021) and ``balanced_softmax`` (Ren et al., NeurIPS 2020) correct it for
    the long-tailed prior.

    Args:
        loss: a name of ``longtail.losses.CLASSIFICATION_LOSSES``.
        tau: the logit adjustment's strength, for losses that take one.
        (the rest as ``ClassifierMethod``)
    """

    num_views = 1

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int],
        backbone: str = "resnet32",
        classifier: str = "linear",
        optim: OptimConfig | None = None,
        many: int = 100,
        few: int = 20,
        loss: str = "ce",
        tau: float = 1.0,
    ) -> None:
        super().__init__(num_classes, class_counts, backbone, classifier, optim, many, few)
        self.save_hyperparameters(ignore=["optim"])
        self.classifier_loss = build_classification_loss(loss, class_counts, tau)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"classifier": self.classifier_loss(self(views[:, 0]), targets)}
