"""Augmentations drawn per image and computed per batch, on uint8 ``[B, 3, H, W]``.

Run image by image in a loader process, a crop or an AutoAugment operation on a 32-pixel
image costs a Python call or ten for a few thousand bytes of work, and the loader takes
that time from the cores the training step runs on. Here each image keeps its own draw,
and the images that drew the same operation are transformed together: one gather for
every crop and flip of a batch, one call of torchvision's operation for each group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.transforms import v2


class PaddedCropFlip(nn.Module):
    """The small-image crop of ``standard``: each image padded with ``padding`` zero pixels
    on every side, a window of its own side cropped at a uniform offset, and flipped
    horizontally with probability 0.5 (He et al., CVPR 2016, Sec. 4.2, on CIFAR).

    The offsets and flips are drawn per image from torch's default generator on the CPU
    (seeded by the batch stage); one gather takes every window.

    Shapes:
        ``[B, C, H, W]`` -> ``[B, C, H, W]``, any dtype.
    """

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, images: Tensor) -> Tensor:
        batch, channels, height, width = images.shape
        reach = 2 * self.padding + 1
        top = torch.randint(0, reach, (batch, 1))
        left = torch.randint(0, reach, (batch, 1))
        flip = torch.rand(batch, 1) < 0.5
        rows = top + torch.arange(height)
        cols = left + torch.arange(width)
        cols = torch.where(flip, cols.flip(1), cols)
        padded = F.pad(images, (self.padding,) * 4).flatten(2)
        where = (rows[:, :, None] * (width + 2 * self.padding) + cols[:, None, :]).flatten(1)
        where = where.to(images.device)[:, None, :].expand(batch, channels, -1)
        return padded.gather(2, where).view(batch, channels, height, width)


def _column(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, magnitude: Tensor) -> Tensor:
    """``ratio * images + (1 - ratio) * other`` per image, ``ratio = 1 + magnitude`` (in
    float64, as torchvision forms it), clamped to uint8 as PIL does."""
    ratio = _column(1 + magnitude.double())
    return images.float().mul(ratio.float()).addcmul_(other, (1 - ratio).float()).clamp_(0, 255).to(torch.uint8)


def _grey(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma of uint8 RGB, floored: ``[N, 1, H, W]`` float."""
    red, green, blue = images.float().unbind(1)
    return red.mul(0.2989).add_(green, alpha=0.587).add_(blue, alpha=0.114).floor_().unsqueeze(1)


def _smoothed(images: Tensor) -> Tensor:
    """PIL's SMOOTH filter (centre 5, neighbours 1, over 13), rounded, the border kept:
    sums of shifted views, which on small images cost a tenth of a depthwise convolution."""
    out = images.float()
    _, _, height, width = out.shape
    window = sum(out[..., i:height - 2 + i, j:width - 2 + j] for i in range(3) for j in range(3))
    out[..., 1:-1, 1:-1] = window.add_(out[..., 1:-1, 1:-1], alpha=4).div_(13).round_()
    return out


def _sharpen(images: Tensor, magnitude: Tensor) -> Tensor:
    """``images + (1 - ratio) * (smoothed - images)`` per image, ``ratio = 1 + magnitude``:
    over 1 sharpens."""
    x = images.float()
    return x.addcmul_(_smoothed(images) - x, _column(-magnitude.double()).float()).clamp_(0, 255).to(torch.uint8)


def _affine(images: Tensor, inverse: Tensor, offset: Tensor) -> Tensor:
    """Each image resampled at ``inverse @ p + offset`` (nearest, zeros outside), ``p`` an
    output pixel's centre in pixels from the image's centre; ``inverse`` ``[N, 2, 2]``,
    ``offset`` ``[N, 2]`` as ``(x, y)``."""
    _, _, height, width = images.shape
    half = torch.tensor([width / 2, height / 2], device=images.device)
    theta = torch.cat([inverse * half[None, None, :] / half[None, :, None], (offset / half)[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros",
                         align_corners=False).round_().to(torch.uint8)


def _shear(magnitude: Tensor, axis: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Shear by ``magnitude`` along ``axis`` (0: x by y, 1: y by x) about the top-left corner."""
    inverse = torch.eye(2).repeat(len(magnitude), 1, 1)
    inverse[:, axis, 1 - axis] = magnitude
    offset = torch.zeros(len(magnitude), 2)
    offset[:, axis] = magnitude * (width, height)[1 - axis] / 2
    return inverse, offset


def _translate(magnitude: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Shift by ``magnitude`` pixels (truncated to whole pixels) along ``axis``."""
    offset = torch.zeros(len(magnitude), 2)
    offset[:, axis] = -magnitude.trunc()
    return torch.eye(2).repeat(len(magnitude), 1, 1), offset


def _rotate(degrees: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate counter-clockwise by ``degrees`` about the centre."""
    angle = torch.deg2rad(degrees)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1), torch.zeros(len(degrees), 2)


#: AutoAugment's geometric operations as the inverse maps ``(inverse, offset)`` that
#: ``_affine`` resamples by, from ``(magnitude [N], height, width)``: those drawn at one
#: step are resampled together.
GEOMETRIC = {
    "ShearX": lambda m, h, w: _shear(m, 0, h, w),
    "ShearY": lambda m, h, w: _shear(m, 1, h, w),
    "TranslateX": lambda m, h, w: _translate(m, 0),
    "TranslateY": lambda m, h, w: _translate(m, 1),
    "Rotate": lambda m, h, w: _rotate(m),
}


def _posterize(images: Tensor, bits: Tensor) -> Tensor:
    keep = ((1 << bits.long()) - 1) << (8 - bits.long())
    return images & _column(keep.to(torch.uint8))


#: AutoAugment's and RandAugment's other operations on uint8 ``[N, 3, H, W]``, each image
#: at its own magnitude (``[N]`` float, torchvision's scale; the factors' ``1 +`` included
#: here, as there).
OPERATIONS = {
    "Identity": lambda x, m: x,
    "Brightness": lambda x, m: _blend(x, torch.zeros((), device=x.device), m),
    "Color": lambda x, m: _blend(x, _grey(x), m),
    "Contrast": lambda x, m: _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), m),
    "Sharpness": _sharpen,
    "Posterize": _posterize,
    "Solarize": lambda x, m: torch.where(x >= _column(255 * m), 255 - x, x),
    "AutoContrast": lambda x, m: v2.functional.autocontrast(x),
    "Equalize": lambda x, m: v2.functional.equalize(x),
    "Invert": lambda x, m: 255 - x,
}


def _apply_step(images: Tensor, names: list[str], drew: Tensor, kind: Tensor, magnitude: Tensor) -> None:
    """One step of a policy, in place on uint8 ``images [B, 3, H, W]``: image ``i`` goes
    through the operation ``names[kind[i]]`` at ``magnitude[i]`` where ``drew[i]``. The
    images that drew the same operation go through it together, and every geometric one
    of the step shares one resampling. ``drew``, ``kind`` and ``magnitude`` are ``[B]`` on
    the CPU."""
    batch, _, height, width = images.shape
    geometric = torch.tensor([name in GEOMETRIC for name in names])[kind]
    moves = drew & geometric
    if moves.any():
        inverse, offset = torch.eye(2).repeat(batch, 1, 1), torch.zeros(batch, 2)
        for index in kind[moves].unique().tolist():
            members = drew & (kind == index)
            inverse[members], offset[members] = GEOMETRIC[names[index]](magnitude[members], height, width)
        where = moves.nonzero().squeeze(1).to(images.device)
        images[where] = _affine(images[where], inverse[moves].to(images.device), offset[moves].to(images.device))
    for index in kind[drew & ~geometric].unique().tolist():
        members = (drew & (kind == index)).nonzero().squeeze(1)
        where = members.to(images.device)
        images[where] = OPERATIONS[names[index]](images[where], magnitude[members].to(images.device))


def _magnitude_bins(policy: v2.Transform, names: list[str], bins: int, height: int, width: int) -> Tensor:
    """``[operations, bins]``: the magnitude bins of each of ``names`` in a torchvision
    automatic augmentation's space (0 for an operation without a magnitude)."""
    rows = []
    for name in names:
        values = policy._AUGMENTATION_SPACE[name][0](bins, height, width)
        rows.append(torch.zeros(bins) if values is None else values.float())
    return torch.stack(rows)


class BatchAutoAugment(nn.Module):
    """AutoAugment (Cubuk et al., CVPR 2019) on a batch, each image with its own draw.

    - [0] Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data",
      CVPR 2019, https://arxiv.org/abs/1805.09501 (Sec. 3; the policies in its appendix)

    Each image draws one of the policy's sub-policies uniformly; each of its two operations
    applies with the operation's probability, at the operation's magnitude, negated with
    probability 0.5 for the signed ones: torchvision's ``AutoAugment`` (whose policies and
    magnitude bins this reads) drawn image by image. At each of the two steps the images
    that drew the same operation go through it together, each at its own magnitude
    (``OPERATIONS``), so a batch costs at most 28 calls. The draws come from torch's
    default generator on the CPU (seeded by the batch stage).

    Shapes:
        uint8 ``[B, 3, H, W]`` -> uint8 ``[B, 3, H, W]``.
    """

    def __init__(self, policy: v2.AutoAugmentPolicy) -> None:
        super().__init__()
        self.reference = v2.AutoAugment(policy)
        self.names = sorted({name for sub_policy in self.reference._policies for name, _, _ in sub_policy})
        table = [[(self.names.index(name), probability, magnitude_bin or 0) for name, probability, magnitude_bin
                  in sub_policy] for sub_policy in self.reference._policies]
        self.operation = torch.tensor([[step[0] for step in row] for row in table])  # [policies, 2]
        self.probability = torch.tensor([[step[1] for step in row] for row in table])
        self.magnitude_bin = torch.tensor([[step[2] for step in row] for row in table])
        self.signed = torch.tensor([self.reference._AUGMENTATION_SPACE[name][1] for name in self.names])
        self._magnitudes: dict[tuple[int, int], Tensor] = {}

    def magnitudes(self, height: int, width: int) -> Tensor:
        """``[operations, 10]``: torchvision's ten magnitude bins of each operation."""
        if (height, width) not in self._magnitudes:
            self._magnitudes[height, width] = _magnitude_bins(self.reference, self.names, 10, height, width)
        return self._magnitudes[height, width]

    def forward(self, images: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        chosen = torch.randint(len(self.operation), (batch,))
        applies = torch.rand(batch, 2) <= self.probability[chosen]
        operation = self.operation[chosen]
        magnitude = self.magnitudes(height, width)[operation, self.magnitude_bin[chosen]]
        magnitude = torch.where(self.signed[operation] & (torch.rand(batch, 2) <= 0.5), -magnitude, magnitude)
        out = images.clone()
        for step in range(2):
            _apply_step(out, self.names, applies[:, step], operation[:, step], magnitude[:, step])
        return out


class StrengthRandAugment(nn.Module):
    """RandAugment at each image's own strength: memorisation-boosted augmentation.

    - [0] Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022,
      https://arxiv.org/abs/2205.12693 (Sec. 3.3, the augmentation that each sample's
      memorisation score drives)
    - [1] Cubuk et al., "RandAugment: Practical automated data augmentation with a
      reduced search space", NeurIPS 2020, https://arxiv.org/abs/1909.13719 (the operations)

    Image ``i`` of strength ``s_i`` in [0, 1] draws ``num_ops`` operations uniformly from
    torchvision's ``RandAugment`` space; each applies with probability ``s_i``, at magnitude
    bin ``round(30 s_i u_i)`` of its 31 (``u_i`` uniform on [0, 1], one per image, shared by
    its operations), negated with probability 0.5 for the signed ones. Strength 0 leaves an
    image as it is; strength 1 applies every operation drawn, at a magnitude of up to the
    scale's top. The images that drew the same operation go through it together (as in
    ``BatchAutoAugment``); the draws come from torch's default generator on the CPU (seeded
    by the batch stage).

    Shapes:
        uint8 ``[B, 3, H, W]`` and strengths ``[B]`` -> uint8 ``[B, 3, H, W]``.
    """

    bins = 31

    def __init__(self, num_ops: int = 1) -> None:
        super().__init__()
        if num_ops < 1:
            raise ValueError(f"num_ops must be at least 1, got {num_ops}")
        self.num_ops = num_ops
        self.reference = v2.RandAugment(num_magnitude_bins=self.bins)
        self.names = list(self.reference._AUGMENTATION_SPACE)
        self.signed = torch.tensor([self.reference._AUGMENTATION_SPACE[name][1] for name in self.names])
        self._magnitudes: dict[tuple[int, int], Tensor] = {}

    def forward(self, images: Tensor, strength: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        if strength.shape != (batch,):
            raise ValueError(f"expected a strength per image, [{batch}], got {tuple(strength.shape)}")
        if (height, width) not in self._magnitudes:
            self._magnitudes[height, width] = _magnitude_bins(self.reference, self.names, self.bins, height, width)
        strength = strength.detach().float().cpu().clamp(0, 1)[:, None]
        operation = torch.randint(len(self.names), (batch, self.num_ops))
        applies = torch.rand(batch, self.num_ops) < strength
        level = (strength * torch.rand(batch, 1) * (self.bins - 1)).round().long().expand(batch, self.num_ops)
        magnitude = self._magnitudes[height, width][operation, level]
        magnitude = torch.where(self.signed[operation] & (torch.rand(batch, self.num_ops) < 0.5), -magnitude, magnitude)
        out = images.clone()
        for step in range(self.num_ops):
            _apply_step(out, self.names, applies[:, step], operation[:, step], magnitude[:, step])
        return out
