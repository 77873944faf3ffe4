"""Decoupled training's second stage: a new classifier on a trained, frozen backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail.methods.base import ClassifierMethod
from longtail.methods.supervised import Supervised


class ClassifierRetraining(Supervised):
    """Classifier re-training (cRT).

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 4, cRT)

    The backbone comes from a first stage (``model.init_from=RUN_DIR``) and is frozen: it
    takes no gradient and its batch-norm statistics stay fixed. The classifier starts
    anew and is trained alone, in the paper with class-balanced sampling
    (``data.sampler=class_balanced``) for a few epochs. The same shape, with the loss of
    one's choice, is a linear probe of a pre-trained backbone.

    Args: those of ``ClassifierMethod``.
    """

    needs_init_from = True

    def frozen(self) -> list[nn.Module]:
        return [self.backbone]


class LearnableWeightScaling(ClassifierMethod):
    """Learnable weight scaling (LWS).

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 4, LWS)

    The first stage's backbone and classifier (``model.init_from`` with
    ``model.init_classifier=true``) are kept frozen; only one scale per class is learned,
    ``logits_j = f_j (w_j^T x + b_j)``, ``f`` starting at 1, in the paper with
    class-balanced sampling (``data.sampler=class_balanced``) for a few epochs: the norms of
    the head's weights, grown large on the head's many images, are evened out.

    Args: those of ``ClassifierMethod``.
    """

    needs_init_from = True
    needs_init_classifier = True

    def __init__(self, **parts) -> None:
        super().__init__(**parts)
        self.scales = nn.Parameter(torch.ones(self.classifier.weight.shape[0]))

    def frozen(self) -> list[nn.Module]:
        return [self.backbone, self.classifier]

    def logits(self, features: Tensor) -> Tensor:
        return self.scales * self.classifier(features)


class NearestClassMean(ClassifierMethod):
    """Nearest class mean (NCM) on a frozen backbone.

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 4, NCM)

    No classifier is learned: each class is the mean of its training images' features
    (from the un-augmented training set, computed when training starts), and an image's
    logit for a class is the cosine similarity of its features to that mean, times
    ``scale`` (for the softmax that calibration and prediction read; the argmax is the
    nearest mean). The backbone comes from ``model.init_from``; the run trains no step.

    Args:
        scale: the logits' range is ``[-scale, scale]``.
        parts: those of ``ClassifierMethod``.
    """

    needs_init_from = True

    def __init__(self, *, scale: float = 16.0, **parts) -> None:
        super().__init__(**parts)
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        classes, width = self.classifier.weight.shape
        self.register_buffer("class_means", torch.zeros(classes, width))

    def frozen(self) -> list[nn.Module]:
        return [self.backbone, self.classifier]

    def logits(self, features: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.class_means, dim=1))

    @torch.no_grad()
    def on_train_start(self) -> None:
        super().on_train_start()
        sums = torch.zeros_like(self.class_means, dtype=torch.float64)
        counts = torch.zeros(len(sums), dtype=torch.float64, device=sums.device)
        datamodule = self.trainer.datamodule
        for batch in datamodule.evaluation_dataloader("train"):
            images, targets = datamodule.finish(self.transfer_batch_to_device(batch, self.device, 0))
            features = self.features(images).double()
            sums.index_add_(0, targets, features)
            counts.index_add_(0, targets, torch.ones_like(targets, dtype=torch.float64))
        self.class_means.copy_((sums / counts.clamp_min(1)[:, None]).to(self.class_means.dtype))

    def configure_optimizers(self) -> None:
        return None  # nothing to learn: the means are the classifier

    def training_step(self, batch, batch_idx) -> None:
        return None

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {}


class MarginCalibration(ClassifierMethod):
    """Margin calibration (MARC), a short second stage.

    - [0] Wang et al., "Margin Calibration for Long-Tailed Visual Recognition", ACML 2022,
      https://arxiv.org/abs/2112.07225 (Sec. 3, the margin calibration function)

    The first stage's backbone and classifier (``model.init_from``,
    ``model.init_classifier=true``) stay frozen. Each class's logit, whose margin
    ``f_j / |w_j|`` is biased toward the head, is calibrated by two learned numbers:
    ``eta_j = omega_j f_j + beta_j |w_j|`` (``omega`` from 1, ``beta`` from 0), trained for
    a few epochs with a re-weighted cross-entropy (``loss.name``; by default the
    class-balanced softmax).

    Args: those of ``ClassifierMethod``.
    """

    needs_init_from = True
    needs_init_classifier = True

    def __init__(self, **parts) -> None:
        super().__init__(**parts)
        classes = self.classifier.weight.shape[0]
        self.omega = nn.Parameter(torch.ones(classes))
        self.beta = nn.Parameter(torch.zeros(classes))

    def frozen(self) -> list[nn.Module]:
        return [self.backbone, self.classifier]

    def logits(self, features: Tensor) -> Tensor:
        return self.omega * self.classifier(features) + self.beta * self.classifier.weight.detach().norm(dim=1)
