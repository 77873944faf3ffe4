"""The base of every method: a backbone, a classifier, the optimiser, shot-split evaluation."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from longtail.evaluation.summary import summarize
from longtail.losses import CLASSIFICATION_LOSSES
from longtail.models import build_backbone, build_classifier
from longtail.optim import OptimConfig


def build_classification_loss(name: str, class_counts: Sequence[int], tau: float) -> torch.nn.Module:
    """The loss ``name`` of ``CLASSIFICATION_LOSSES``, given ``tau`` when it takes one."""
    if name not in CLASSIFICATION_LOSSES:
        raise ValueError(
            f"unknown loss {name!r}; choose one of {', '.join(CLASSIFICATION_LOSSES)}"
        )
    loss_class = CLASSIFICATION_LOSSES[name]
    if "tau" in inspect.signature(loss_class).parameters:
        return loss_class(class_counts, tau=tau)
    return loss_class(class_counts)


class NonFiniteLossError(ValueError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class ClassifierMethod(L.LightningModule):
    """A backbone and a classifier; subclasses define ``training_losses``.

    The training batch is ``(views [B, V, 3, H, W], targets [B])`` with ``num_views``
    views; evaluation batches are ``(images [B, 3, H, W], targets [B])``. After
    ``Trainer.test``, ``test_results`` holds ``shot_accuracy`` of the test set.

    Args:
        num_classes: C.
        class_counts: training images per class (the losses' prior and the shot split).
        backbone: a name accepted by ``longtail.models.build_backbone``.
        classifier: ``cosine`` or ``linear``.
        optim: the optimiser and schedule.
        many, few: shot-split thresholds of the evaluation.
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
    ) -> None:
        super().__init__()
        if len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries for {num_classes} classes")
        self.class_counts = list(class_counts)
        # channels-last convolutions ran about 12% (AVX2) to 20% faster on CPU here
        self.backbone = build_backbone(backbone).to(memory_format=torch.channels_last)
        self.classifier = build_classifier(classifier, self.backbone.num_features, num_classes)
        self.optim = optim or OptimConfig()
        self.many, self.few = many, few
        self._eval_outputs: list[tuple[Tensor, Tensor]] = []
        self.test_results: dict | None = None
        self.test_logits: Tensor | None = None
        self.test_targets: Tensor | None = None
        self.max_skipped_steps = 0
        self.skipped_steps = 0

    @property
    def logits_prior(self) -> str:
        """``uniform`` when the loss balanced the logits (logit-adjusted, balanced softmax),
        ``train`` when they model the training set's prior (cross-entropy)."""
        return getattr(self.classifier_loss, "logits_prior", "train")

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``[B, F]`` of images ``[B, 3, H, W]`` (channels-last)."""
        return self.backbone(images.contiguous(memory_format=torch.channels_last))

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, C]`` of images ``[B, 3, H, W]``."""
        return self.classifier(self.features(images))

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The weighted loss terms of one batch, by name; their sum is minimised."""
        raise NotImplementedError

    def _check_finite(self, terms: dict[str, Tensor]) -> bool:
        """True when every term is finite; False for a step to skip; raises past the limit."""
        bad = {name: value.item() for name, value in terms.items() if not torch.isfinite(value)}
        if not bad:
            return True
        if self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            return False
        described = ", ".join(f"'{name}' is {value}" for name, value in bad.items())
        raise NonFiniteLossError(
            f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}): {described}; "
            f"{self.skipped_steps} step(s) skipped so far (trainer.skip_nonfinite={self.max_skipped_steps})"
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        views, targets = batch
        terms = self.training_losses(views, targets)
        if not self._check_finite(terms):
            return None
        loss = torch.stack(list(terms.values())).sum()
        batch_size = len(targets)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def _collect(self, batch: tuple[Tensor, Tensor]) -> None:
        images, targets = batch
        self._eval_outputs.append((self(images).float().cpu(), targets.cpu()))

    def _results(self) -> dict:
        self.test_logits = torch.cat([logits for logits, _ in self._eval_outputs])
        self.test_targets = torch.cat([targets for _, targets in self._eval_outputs])
        self._eval_outputs.clear()
        return summarize(self.test_logits, self.test_targets, self.class_counts, self.many, self.few)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        results = self._results()
        for key in ("overall", "many", "medium", "few"):
            if results[key] is not None:
                self.log(f"val/{key}", results[key], prog_bar=key == "overall")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._results()

    def configure_optimizers(self):
        steps_per_epoch = self.trainer.estimated_stepping_batches // self.trainer.max_epochs
        optimizer, scheduler = self.optim.build(self.parameters(), int(steps_per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
