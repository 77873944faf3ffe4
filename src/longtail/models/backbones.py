"""Backbones by name: every one returns pooled features ``[B, num_features]``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torchvision
from torch import nn

from longtail.models.resnet_cifar import resnet32


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = getattr(torchvision.models, name)(weights=None)
        model.num_features = model.fc.in_features
        model.fc = nn.Identity()
        return model

    return build


#: Built-in backbones: name -> (builder, description). Any timm model is ``timm:<name>``.
BACKBONES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet32": (resnet32, "ResNet-32 for 32x32 inputs, 64-d features (He et al., CVPR 2016)"),
    "resnet50": (_torchvision("resnet50"), "torchvision ResNet-50, 2048-d features (He et al., CVPR 2016)"),
    "resnext50_32x4d": (
        _torchvision("resnext50_32x4d"),
        "torchvision ResNeXt-50 32x4d, 2048-d features (Xie et al., CVPR 2017)",
    ),
}


def _timm(name: str) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean 'timm:{close[0]}'?)" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint}")
    return timm.create_model(name, pretrained=False, num_classes=0)


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` naming the closest backbone when ``name`` is unknown."""
    if name in BACKBONES or name.startswith("timm:"):
        return
    close = difflib.get_close_matches(name, list(BACKBONES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown backbone {name!r}{hint}; choose one of {', '.join(BACKBONES)} or timm:<name>"
    )


def build_backbone(name: str) -> nn.Module:
    """The backbone ``name`` without classifier: ``forward(x)`` gives ``[B, num_features]``.

    Names: ``resnet32``, ``resnet50``, ``resnext50_32x4d``, or ``timm:<model>`` for any
    timm model (randomly initialised).
    """
    check_backbone_name(name)
    if name.startswith("timm:"):
        return _timm(name.removeprefix("timm:"))
    return BACKBONES[name][0]()
