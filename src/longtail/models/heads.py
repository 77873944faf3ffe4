"""Heads on top of a backbone: projection MLP and classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionMLP(nn.Sequential):
    """Linear - BatchNorm - ReLU - Linear, the projection head of SimCLR and BCL.

    - [0] Chen et al., "A Simple Framework for Contrastive Learning of Visual
      Representations", ICML 2020, https://arxiv.org/abs/2002.05709

    Shapes: ``[B, in_dim]`` -> ``[B, out_dim]`` (not normalised).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class Projected(nn.Module):
    """A backbone and a projection head: images -> projections (not normalised), the form
    of a momentum encoder's copy of both (MoCo's key encoder, BYOL's target)."""

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projection = backbone, projection

    def forward(self, images: Tensor) -> Tensor:
        return self.projection(self.backbone(images.contiguous(memory_format=torch.channels_last)))


class CosineClassifier(nn.Module):
    """Scaled cosine similarity between features and class weights.

    ``logits_j = scale * <x / |x|, w_j / |w_j|>``: every class has a weight of the same
    norm, so the head classes cannot win by a larger weight (as in LDAM and BCL).

    Args:
        in_features: feature dimension.
        num_classes: C.
        scale: the logits' range is ``[-scale, scale]``.

    Shapes: ``[B, in_features]`` -> ``[B, C]``; ``weight`` is ``[C, in_features]``.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        bound = in_features**-0.5
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-bound, bound))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


CLASSIFIERS = ("cosine", "normalized", "linear")


def build_classifier(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """A ``cosine`` (CosineClassifier, scale 30), ``normalized`` (CosineClassifier, scale 1:
    for a loss that scales the logits itself, as LDAM) or ``linear`` (nn.Linear)
    classifier; each has a ``[C, in_features]`` ``weight``."""
    if kind in ("cosine", "normalized"):
        return CosineClassifier(in_features, num_classes, scale=30.0 if kind == "cosine" else 1.0)
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    raise ValueError(f"model.classifier must be one of {', '.join(CLASSIFIERS)}, got {kind!r}")
