"""Augmentation policies and views, in two stages.

A view is named ``policy`` or ``policy+cutout``. It runs in two stages:

1. per image, in the DataLoader's worker processes, on uint8 ``[3, H, W]`` with
   torchvision's transforms v2: what must be done image by image, the crops that bring
   images of other sizes to the model's input side ``S``, and timm's and torchvision's
   RandAugment;
2. per batch, in the training process on the batch's device (a GPU when there is one),
   on ``[B, 3, S, S]``: the steps that draw per sample but compute on the whole batch at
   once. On uint8: the padded crop and flip of small images already at the input side,
   and AutoAugment, grouped by the operation each image drew; on float with kornia:
   colour jitter, grayscale and SimAugment's crop and flip (when the stored images already
   have the input side); then normalisation and Cutout.

The split is what the throughput rests on. A batch op costs a fraction of a call per
image on 32-pixel images and runs on all the training process's threads, while the
loader processes take their time from the cores the training step would use (and, niced
below it, starve while it runs, so that the step then waits on them), so the loaders do
only what must be done image by image. Colour jitter's factors and whether it applies
are drawn per sample; the order of its four adjustments, per batch.

The policies follow the input side. Small inputs (``S < 64``, CIFAR) are cropped with
padding; large ones (ImageNet) with random resized crops, and evaluated on a centre crop:

- ``none``: no augmentation (large: the shorter side resized to ``8/7 S``, the centre
  ``S x S`` kept);
- ``standard``: small: random crop with padding ``S/8``; large: random resized crop
  (scale 0.08 to 1); then a horizontal flip;
- ``auto``: ``standard``, then AutoAugment (Cubuk et al., CVPR 2019), its CIFAR-10 policy
  for small inputs and its ImageNet policy for large ones;
- ``rand``: ``standard``, then RandAugment with 2 operations (Cubuk et al., 2020), at
  magnitude 10 of torchvision's 30 for small inputs; large inputs get BCL's ImageNet
  classifier view (Zhu et al., CVPR 2022): colour jitter 0.4/0.4/0.4 first, then timm's
  RandAugment ``rand-n2-m10-mstd0.5`` (2 operations, each applied with probability 0.5,
  at magnitude 10 of 10 with a Gaussian noise of 0.5 on it);
- ``sim``: SimAugment of MoCo v2 (Chen et al., 2020): random resized crop (scale 0.08
  to 1), flip, colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale with p 0.2; all in
  stage 2 when the stored images have the input side (torchvision's crop per image
  otherwise); ``sim_global`` and ``sim_local``: the same with the crop scales of SwAV's
  multi-crop (Caron et al., NeurIPS 2020), 0.14 to 1 for its global views and 0.05 to
  0.14 for its small ones, which cover only a part of the image;
- ``+cutout``: Cutout (DeVries and Taylor, 2017): a square of half the side, its centre
  uniform over the image and the square clipped at the border, erased to the mean after
  normalising (on 32-pixel images about 19% of the image on average).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from longtail.data.batch_augment import BatchAutoAugment, PaddedCropFlip

#: The random resized crop's scales of the SimAugment policies.
CROP_SCALES = {"sim": (0.08, 1.0), "sim_global": (0.14, 1.0), "sim_local": (0.05, 0.14)}
POLICIES = ("none", "standard", "auto", "rand", *CROP_SCALES)
#: Inputs of at least this side get the ImageNet-style policies.
LARGE = 64


def parse_view(name: str) -> tuple[str, bool]:
    """``"auto+cutout"`` -> ``("auto", True)``; raises ``ValueError`` on an unknown name."""
    policy, _, suffix = name.partition("+")
    if policy not in POLICIES or suffix not in ("", "cutout"):
        raise ValueError(
            f"unknown view {name!r}: use one of {', '.join(POLICIES)}, optionally with '+cutout'"
        )
    return policy, suffix == "cutout"


def batch_geometry(policy: str, size: int, source_size: int | None) -> bool:
    """Whether the view's crop and flip run in stage 2: those of small inputs and
    SimAugment's, when the stored images all have the input side (nothing then runs image
    by image before them)."""
    return source_size == size and (policy in CROP_SCALES or (policy in ("standard", "auto") and size < LARGE))


class TimmRandAugment(nn.Module):
    """timm's RandAugment on uint8 ``[3, H, W]`` tensors (timm works on PIL images).

    - [0] Cubuk et al., "RandAugment: Practical automated data augmentation with a
      reduced search space", NeurIPS 2020, https://arxiv.org/abs/1909.13719

    Args:
        config: timm's policy string, e.g. ``rand-n2-m10-mstd0.5``.
        size: the image side; translations reach 45% of it, as in BCL's ImageNet recipe.
        mean: the fill of geometric operations, the data's mean colour on [0, 1].
    """

    def __init__(self, config: str, size: int, mean: Sequence[float]) -> None:
        super().__init__()
        from timm.data.auto_augment import rand_augment_transform

        fill = tuple(min(255, round(255 * m)) for m in mean)
        self.transform = rand_augment_transform(config, {"translate_const": int(size * 0.45), "img_mean": fill})

    def forward(self, image: Tensor) -> Tensor:
        return v2.functional.pil_to_tensor(self.transform(v2.functional.to_pil_image(image)))


#: BCL's RandAugment for ImageNet-sized inputs (Zhu et al., CVPR 2022).
BCL_RANDAUGMENT = "rand-n2-m10-mstd0.5"


def image_steps(policy: str, size: int, source_size: int | None,
                mean: Sequence[float] = (0.5, 0.5, 0.5)) -> list[v2.Transform]:
    """Stage 1 of ``policy``: uint8 ``[3, H, W]`` -> uint8 ``[3, size, size]``."""
    large = size >= LARGE
    scale = CROP_SCALES.get(policy, CROP_SCALES["sim"])  # the large standard crop's is SimAugment's
    resized_crop = [v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    fit = [] if source_size == size else [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if policy == "none":
        return [v2.Resize(round(size * 8 / 7), antialias=True), v2.CenterCrop(size)] if large else fit
    if batch_geometry(policy, size, source_size):
        return []
    if policy in CROP_SCALES:
        return resized_crop
    standard = resized_crop if large else fit + [v2.RandomCrop(size, padding=padding(size)), v2.RandomHorizontalFlip()]
    if policy == "rand" and large:
        return standard + [v2.ColorJitter(0.4, 0.4, 0.4), TimmRandAugment(BCL_RANDAUGMENT, size, mean)]
    if policy == "rand":
        return standard + [v2.RandAugment(num_ops=2, magnitude=10)]
    return standard  # standard, and auto, whose AutoAugment runs in stage 2


def padding(size: int) -> int:
    """The zero padding of the small inputs' random crop: an eighth of the side (4 on CIFAR)."""
    return max(1, size // 8)


def uint8_batch_steps(policy: str, size: int, source_size: int | None) -> list[nn.Module]:
    """Stage 2 of ``policy`` on uint8 ``[B, 3, S, S]``: the padded crop and flip of small
    images at the input side, and AutoAugment's operations."""
    padded_crop = policy not in CROP_SCALES and batch_geometry(policy, size, source_size)
    steps = [PaddedCropFlip(padding(size))] if padded_crop else []
    if policy == "auto":
        steps.append(BatchAutoAugment(v2.AutoAugmentPolicy.IMAGENET if size >= LARGE else v2.AutoAugmentPolicy.CIFAR10))
    return steps


def batch_steps(policy: str, size: int, source_size: int | None) -> list[nn.Module]:
    """Stage 2 of ``policy`` before normalising: float ``[B, 3, S, S]`` in ``[0, 1]``."""
    if policy not in CROP_SCALES:
        return []
    import kornia.augmentation as K

    colour = [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    if not batch_geometry(policy, size, source_size):
        return colour
    return [K.RandomResizedCrop((size, size), scale=CROP_SCALES[policy]), K.RandomHorizontalFlip(), *colour]


class Cutout(nn.Module):
    """Cutout: one square of each image set to 0 (the mean, after normalising).

    - [0] DeVries and Taylor, "Improved Regularization of Convolutional Neural Networks
      with Cutout", 2017, https://arxiv.org/abs/1708.04552 (Sec. 3)

    The square's centre is drawn uniformly over the image, per image, and the square is
    clipped at the border, so it may fall partly outside: with a side of half the image,
    about 19% of the image is erased on average. The centres come from torch's default
    generator on the CPU (seeded by the batch stage), whatever the images' device.

    Args:
        side: the square's side, in pixels.

    Shapes:
        ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, side: int) -> None:
        super().__init__()
        if side < 1:
            raise ValueError(f"side must be at least 1, got {side}")
        self.side = side

    def forward(self, images: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        centre_y = torch.randint(0, height, (batch, 1)).to(images.device)
        centre_x = torch.randint(0, width, (batch, 1)).to(images.device)
        low, high = self.side // 2, self.side - self.side // 2
        rows = torch.arange(height, device=images.device)[None, :]
        cols = torch.arange(width, device=images.device)[None, :]
        in_rows = (rows >= centre_y - low) & (rows < centre_y + high)
        in_cols = (cols >= centre_x - low) & (cols < centre_x + high)
        return images.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)


class BatchStage(nn.Module):
    """Stage 2 of a view: uint8 ``[B, 3, S, S]`` -> normalised float32, each sample
    augmented with its own draw: ``uint8_steps``, then ``steps`` on floats in ``[0, 1]``;
    ``cutout``: the side of Cutout's square (0: none).

    A ``boost`` given to ``forward`` (uint8 -> uint8, e.g. ``StrengthRandAugment`` at each
    sample's strength) runs last, before normalising, on the images rounded to uint8."""

    def __init__(self, steps: Sequence[nn.Module], mean: Sequence[float], std: Sequence[float],
                 cutout: int = 0, uint8_steps: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.uint8_steps = nn.Sequential(*uint8_steps)
        self.steps = nn.Sequential(*steps)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.cutout = Cutout(cutout) if cutout else None

    def forward(self, images: Tensor, boost: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        x = self.steps(self.uint8_steps(images).float().div_(255))
        if boost is not None:
            x = boost(x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)).float().div_(255)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x if self.cutout is None else self.cutout(x)


class View:
    """One view: ``image`` (stage 1, per image; ``None``: the image as it is) and ``batch``
    (stage 2, per batch)."""

    def __init__(self, image: v2.Transform | None, batch: BatchStage) -> None:
        self.image = image
        self.batch = batch


def view_transform(
    name: str, size: int, mean: Sequence[float], std: Sequence[float], source_size: int | None = None
) -> View:
    """The view ``name`` at input side ``size``, normalised with ``mean`` and ``std``.

    ``source_size`` is the side of the stored images when they all share it (then small
    policies crop them as they are), ``None`` when they differ.
    """
    policy, cutout = parse_view(name)
    steps = image_steps(policy, size, source_size, mean)
    return View(v2.Compose(steps) if steps else None,
                BatchStage(batch_steps(policy, size, source_size), mean, std, size // 2 if cutout else 0,
                           uint8_batch_steps(policy, size, source_size)))


@contextmanager
def seeded(seed: int | None):
    """Draw from torch's default generator (the one torchvision and kornia use), Python's
    and NumPy's (timm's RandAugment) seeded with ``seed``, leaving the process's own random
    state as it was; ``None``: unseeded."""
    if seed is None:
        yield
        return
    generator = torch.default_generator
    states = generator.get_state(), random.getstate(), np.random.get_state()
    generator.manual_seed(seed)  # torch.manual_seed would also seed every accelerator: 40x slower
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        generator.set_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


class MultiView:
    """Several views of each image: uint8 ``[3, H, W]`` -> ``[V, 3, S, S]`` per image
    (``images``, stage 1), then ``[B, V, 3, S, S]`` uint8 -> float32 per batch (``batch``,
    stage 2)."""

    def __init__(self, views: Sequence[View]) -> None:
        self.views = list(views)

    @property
    def per_image(self) -> bool:
        """Whether any view has a stage 1; if none has, a batch is its images as they are."""
        return any(view.image is not None for view in self.views)

    def images(self, image: Tensor) -> Tensor:
        return torch.stack([image if view.image is None else view.image(image) for view in self.views])

    def batch(self, images: Tensor, seed: int | None = None, boost: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Stage 2, drawing from torch's generator seeded with ``seed`` (see ``seeded``);
        ``boost``, when given, ends every view's stage (see ``BatchStage``)."""
        with seeded(seed):
            return torch.stack([view.batch(images[:, i], boost) for i, view in enumerate(self.views)], dim=1)
