"""Backbones (timm's interface), heads and the momentum encoder."""

from longtail.models.backbones import BACKBONES, build_backbone
from longtail.models.heads import CosineClassifier, Projected, ProjectionMLP, build_classifier
from longtail.models.momentum import MomentumEncoder
from longtail.models.resnet_cifar import CifarResNet, resnet32

__all__ = [
    "BACKBONES",
    "CifarResNet",
    "CosineClassifier",
    "MomentumEncoder",
    "Projected",
    "ProjectionMLP",
    "build_backbone",
    "build_classifier",
    "resnet32",
]
