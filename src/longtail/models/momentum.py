"""A momentum encoder: an exponential moving average of another module's weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


class MomentumEncoder(nn.Module):
    """A copy of ``online`` that follows it as an exponential moving average.

    - [0] He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
      CVPR 2020, https://arxiv.org/abs/1911.05722 (eq. 2)
    - [1] Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020,
      https://arxiv.org/abs/2006.07733 (Sec. 3.2, the schedule of tau)

    After each applied optimiser step, ``update(online, progress)`` moves every weight
    ``theta_k <- m theta_k + (1 - m) theta_q`` (eq. 2 of [0]). With ``final_momentum``,
    ``m`` rises from ``momentum`` to it along a cosine over training (BYOL's
    ``1 - (1 - m_0)(cos(pi k / K) + 1) / 2`` when ``final_momentum`` is 1); without it,
    ``m`` is constant (MoCo's 0.999). The averaged weights take no gradient; they are the
    module's parameters and buffers, so a checkpoint holds them and a resumed run
    continues from them. Buffers (batch-norm statistics) are the encoder's own, updated by
    its forward passes.

    With ``group``, a batch is encoded in at least two near-equal groups of at most
    ``group`` inputs (of two or more), each normalised by its own batch statistics. The
    online network normalises its queries over the whole batch, so a query and its
    positive key never share their statistics, which would let a contrastive model find
    its key by the batch's "signature" rather than by the image: Shuffling BN (Sec. 3.3
    of [0], there the shuffled keys spread over 8 GPUs of 32) on one process. The
    loader's batch is in random order, so a group is a random subset.

    Args:
        online: the module to follow; it is copied at construction.
        momentum: m, or its value at the start with ``final_momentum``.
        final_momentum: m at the end of training; ``None`` keeps m constant.
        group: the inputs of a batch normalised together, or ``None``: all of them.

    Examples:
        >>> backbone = torch.nn.Linear(4, 2)
        >>> key_encoder = MomentumEncoder(backbone, momentum=0.99)
        >>> key_encoder.update(backbone, progress=0.5)
        >>> key_encoder(torch.randn(3, 4)).requires_grad
        False
    """

    def __init__(self, online: nn.Module, momentum: float = 0.999, final_momentum: float | None = None,
                 group: int | None = None) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if group is not None and group < 2:
            raise ValueError(f"group must be at least 2 (batch norm needs two inputs), got {group}")
        self.encoder = copy.deepcopy(online)
        self.encoder.requires_grad_(False)
        self.momentum, self.final_momentum, self.group = momentum, final_momentum, group

    def momentum_at(self, progress: float) -> float:
        """m at ``progress`` in [0, 1] of training."""
        if self.final_momentum is None:
            return self.momentum
        rise = (1 - math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2
        return self.momentum + (self.final_momentum - self.momentum) * rise

    @torch.no_grad()
    def update(self, online: nn.Module, progress: float = 0.0) -> None:
        """One moving-average step toward ``online``'s current weights."""
        m = self.momentum_at(progress)
        for averaged, current in zip(self.encoder.parameters(), online.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1 - m)

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        if self.group is None or not self.training:
            return self.encoder(inputs)
        groups = min(max(2, math.ceil(len(inputs) / self.group)), max(1, len(inputs) // 2))
        return torch.cat([self.encoder(part) for part in inputs.tensor_split(groups)])
