"""Augmentation policies on uint8 image tensors (torchvision transforms v2), and views.

A view is named ``policy`` or ``policy+cutout``:

- ``none``: no augmentation;
- ``standard``: random crop with padding of 1/8 of the side, horizontal flip;
- ``auto``: ``standard`` then AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR 2019);
- ``rand``: ``standard`` then RandAugment, 2 ops at magnitude 10 (Cubuk et al., 2020);
- ``sim``: SimAugment of MoCo v2 (Chen et al., 2020): random resized crop, flip, colour
  jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale with p 0.2;
- ``+cutout``: a square of half the side erased to the mean after normalising
  (DeVries and Taylor, 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

POLICIES = ("none", "standard", "auto", "rand", "sim")


def parse_view(name: str) -> tuple[str, bool]:
    """``"auto+cutout"`` -> ``("auto", True)``; raises ``ValueError`` on an unknown name."""
    policy, _, suffix = name.partition("+")
    if policy not in POLICIES or suffix not in ("", "cutout"):
        raise ValueError(
            f"unknown view {name!r}: use one of {', '.join(POLICIES)}, optionally with '+cutout'"
        )
    return policy, suffix == "cutout"


def _policy(policy: str, size: int) -> list[v2.Transform]:
    standard = [v2.RandomCrop(size, padding=max(1, size // 8)), v2.RandomHorizontalFlip()]
    if policy == "none":
        return []
    if policy == "standard":
        return standard
    if policy == "auto":
        return standard + [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)]
    if policy == "rand":
        return standard + [v2.RandAugment(num_ops=2, magnitude=10)]
    return [
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]


def view_transform(
    name: str, size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Transform:
    """The transform of one view: uint8 ``[3, H, W]`` -> normalised float32 ``[3, size, size]``."""
    policy, cutout = parse_view(name)
    steps = _policy(policy, size)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if cutout:
        steps.append(v2.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps)


class MultiView:
    """Applies one transform per view and stacks the results: ``[V, 3, size, size]``."""

    def __init__(self, transforms: Sequence[v2.Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor) -> Tensor:
        return torch.stack([transform(image) for transform in self.transforms])
