"""Backbones (timm's interface) and heads."""

from longtail.models.backbones import BACKBONES, build_backbone
from longtail.models.heads import CosineClassifier, ProjectionMLP, build_classifier
from longtail.models.resnet_cifar import CifarResNet, resnet32

__all__ = [
    "BACKBONES",
    "CifarResNet",
    "CosineClassifier",
    "ProjectionMLP",
    "build_backbone",
    "build_classifier",
    "resnet32",
]
