"""The base of every method: built parts in, the optimiser, the hooks the families share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn

from longtail.errors import NonFiniteLossError
from longtail.optim import OptimConfig

#: Builds the optimiser and its per-step scheduler from the parameters to train and the
#: number of steps in an epoch (``OptimConfig.build`` is one).
OptimizerFactory = Callable[[Iterable[nn.Parameter], int], tuple[torch.optim.Optimizer, object]]


def view_major(views: Tensor) -> Tensor:
    """``[B, V, ...]`` views -> ``[V*B, ...]``: every image's first view, then every
    image's second, ..., the order the contrastive losses and ``chunk(V)`` read."""
    return views.transpose(0, 1).flatten(0, 1)


def check_loss_weights(**weights: float) -> None:
    """Refuse a negative weight of a loss term, naming it (``alpha=-1`` -> ``alpha must be ...``)."""
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")


class ClassifierMethod(L.LightningModule):
    """A backbone and a classifier; subclasses define ``training_losses`` (by default, the
    classifier's loss on the first view).

    Every method receives its parts built (the run builds them from the config; users of
    the Python API build their own) and adds its own typed arguments; a subclass takes
    ``**parts`` and hands them on, never repeating this signature.

    The training batch is ``(views [B, V, 3, H, W], targets [B])`` with ``num_views``
    views, and from ``LongTailDataModule`` a third member, the images' indices ``[B]`` in
    the training set (read by the methods that keep a record per image); evaluation
    batches are ``(images [B, 3, H, W], targets [B])``, and the validation and test steps
    return ``evaluation_outputs`` with the targets, for an evaluation callback to collect
    (``longtail.evaluation.EvaluationOutputs``).

    Hooks for the families:

    - ``frozen()``: parts that are not trained. They take no gradient and stay in eval
      mode (batch-norm statistics fixed), so a decoupled classifier or a linear probe is a
      few lines; ``trainable_parameters()`` is what the optimiser gets.
    - ``after_step()``: runs after every optimiser step that was applied, never after a
      step skipped for a non-finite loss or by float16's gradient scaler: momentum
      encoders and queues update here.
    - ``validated(per_class_accuracy)``: after every validation pass, with each class's
      accuracy on the validation split (class-difficulty weights update here).

    Args:
        backbone: images ``[B, 3, H, W]`` -> features ``[B, F]``, with ``num_features``.
        classifier: features ``[B, F]`` -> logits ``[B, C]``.
        loss: the classification loss, ``forward(logits, targets)``; its ``logits_prior``
            (``uniform`` or ``train``) says which label prior the logits model.
        optimizer: an ``OptimizerFactory``; by default ``OptimConfig().build``.
        skip_nonfinite: steps with a NaN or infinite loss term that may be skipped before
            the run stops.
    """

    num_views = 1
    #: ``model.classifier`` when the config leaves it empty.
    default_classifier = "linear"
    #: Whether the method starts from a trained backbone (``model.init_from``).
    needs_init_from = False
    #: Whether it starts from the trained classifier too (``model.init_classifier``).
    needs_init_classifier = False

    def __init__(
        self,
        *,
        backbone: nn.Module,
        classifier: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory | None = None,
        skip_nonfinite: int = 0,
    ) -> None:
        super().__init__()
        # channels-last convolutions ran about 12% (AVX2) to 20% faster on CPU here
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.classifier = classifier
        self.classifier_loss = loss
        self.optimizer_factory = optimizer or OptimConfig().build
        self.max_skipped_steps = skip_nonfinite
        self.skipped_steps = 0
        self._step_applied = False

    @property
    def logits_prior(self) -> str:
        """``uniform`` when the loss balanced the logits (logit-adjusted, balanced softmax),
        ``train`` when they model the training set's prior (cross-entropy)."""
        return getattr(self.classifier_loss, "logits_prior", "train")

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``[B, F]`` of images ``[B, 3, H, W]`` (channels-last)."""
        return self.backbone(images.contiguous(memory_format=torch.channels_last))

    def logits(self, features: Tensor) -> Tensor:
        """Logits ``[B, C]`` of features ``[B, F]``: the classifier's."""
        return self.classifier(features)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, C]`` of images ``[B, 3, H, W]``."""
        return self.logits(self.features(images))

    def inference_logits(self, logits: Tensor) -> Tensor:
        """The classifier's logits as the loss reads them at inference: most read them as
        they are; IIF scales them, GOL reads them through its Gumbel activation."""
        transform = getattr(self.classifier_loss, "inference_logits", None)
        return logits if transform is None else transform(logits)

    def evaluation_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """What evaluation collects of images ``[B, 3, H, W]``: ``features`` ``[B, F]`` and
        ``logits`` ``[B, C]`` (``inference_logits``)."""
        features = self.features(images)
        return {"features": features, "logits": self.inference_logits(self.logits(features))}

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The weighted loss terms of one batch, by name; their sum is minimised. By
        default one term: the classifier's loss on the first view's logits."""
        return {"classifier": self.classifier_loss(self(views[:, 0]), targets)}

    @property
    def trains_classifier(self) -> bool:
        """Whether training reaches the classifier: not for a pre-training, whose logits
        then mean nothing (its checkpoint is not chosen by them)."""
        return True

    @classmethod
    def views_needed(cls, arguments: dict) -> int:
        """The views the method trains on with its config section's ``arguments``."""
        return cls.num_views

    def frozen(self) -> list[nn.Module]:
        """Hook: the parts that are not trained."""
        return []

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates: those outside ``frozen()`` that take a gradient."""
        frozen = {id(p) for part in self.frozen() for p in part.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    def after_step(self) -> None:
        """Hook: runs after every applied optimiser step."""

    def validated(self, per_class_accuracy: list[float | None]) -> None:
        """Hook: each class's accuracy (percent; ``None`` for a class without images) on the
        validation split, after every validation pass."""

    def setup(self, stage: str) -> None:
        for part in self.frozen():
            part.requires_grad_(False)

    def _keep_frozen_in_eval_mode(self) -> None:
        for part in self.frozen():
            part.eval()

    def on_train_start(self) -> None:  # Lightning sets each submodule's mode itself, and
        self._keep_frozen_in_eval_mode()  # a run resumed mid-epoch starts no epoch

    def on_train_epoch_start(self) -> None:
        self._keep_frozen_in_eval_mode()

    def train(self, mode: bool = True) -> ClassifierMethod:
        super().train(mode)
        self._keep_frozen_in_eval_mode()
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_steps"] = self.skipped_steps  # a resumed run keeps its allowance used

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_steps = checkpoint.get("skipped_steps", 0)

    def _check_finite(self, terms: dict[str, Tensor]) -> bool:
        """True when every term is finite on every process; False for a step to skip
        (everywhere: the processes' collectives must stay in step); raises past the limit."""
        bad = {name: value.item() for name, value in terms.items() if not torch.isfinite(value)}
        if self._trainer is not None and self.trainer.world_size > 1:
            if self.trainer.strategy.reduce_boolean_decision(not bad, all=True):
                return True
            bad = bad or {"on another process": float("nan")}
        elif not bad:
            return True
        if self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            return False
        described = ", ".join(f"'{name}' is {value}" for name, value in bad.items())
        raise NonFiniteLossError(
            f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}): {described}; "
            f"{self.skipped_steps} step(s) skipped so far (trainer.skip_nonfinite={self.max_skipped_steps})"
        )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        views, targets = batch[0], batch[1]  # a third, the images' indices, for the methods that read it
        terms = self.training_losses(views, targets)
        self._step_applied = self._check_finite(terms)
        if not self._step_applied:
            return None
        loss = torch.stack(list(terms.values())).sum()
        batch_size = len(targets)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # here rather than in on_train_batch_end, which runs after the checkpoint callbacks:
        # a checkpoint must hold the momentum update and the queue of the step it follows
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        scale = scaler.get_scale() if scaler is not None else None
        super().optimizer_step(*args, **kwargs)
        # float16's gradient scaler skips a step whose gradients overflowed, and lowers its scale
        skipped_by_scaler = scaler is not None and scaler.get_scale() < scale
        if self._step_applied and not skipped_by_scaler:
            self.after_step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, targets = batch
        return {**self.evaluation_outputs(images), "targets": targets}

    test_step = validation_step

    def configure_optimizers(self):
        steps_per_epoch = self.trainer.estimated_stepping_batches // self.trainer.max_epochs
        optimizer, scheduler = self.optimizer_factory(self.trainable_parameters(), int(steps_per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
