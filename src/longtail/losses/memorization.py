"""Each training image's momentum loss: how far the network is from memorising it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longtail.losses.distributed import gather


class MomentumLoss(nn.Module):
    """The momentum loss of every training image, and the memorisation score it gives.

    - [0] Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022,
      https://arxiv.org/abs/2205.12693 (Sec. 3.2, the momentum loss and its normalisation)

    Networks learn the frequent patterns first and memorise the rare ones late, so an
    image whose loss stays high is likely of the tail. ``record`` adds up each image's
    losses of the running epoch (an image drawn more than once, by a sampler that draws
    with replacement, gets their mean); ``start_epoch``, once the epoch has moved on, folds
    the last one's into the moving average

    ``L_m(i, t) = beta L_m(i, t - 1) + (1 - beta) l(i, t)``,  ``L_m(i, 1) = l(i, 1)``,

    for the images seen in it. ``scores`` centres the momentum losses on their mean and
    divides by the largest deviation, shifted to [0, 1]:
    ``M_i = (1 + (L_m(i) - mean L_m) / max_j |L_m(j) - mean L_m|) / 2``, so the image
    memorised least scores highest; before the first epoch is folded (and when every
    image's loss is the same) all scores are 0. An image never seen is taken at the mean.

    Buffers hold the averages, the running epoch's sums and its number, so a checkpoint
    resumes them, whether taken within an epoch or at its end. They stay float32 when the
    module is cast to a half precision, in which the average could not move by a few
    hundredths. In a distributed run every process records the losses of all (``record``
    gathers them), so the processes hold the same scores.

    Args:
        size: N, the training images.
        beta: the average's momentum, in [0, 1).
    """

    def __init__(self, size: int, beta: float = 0.97) -> None:
        super().__init__()
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if size < 1:
            raise ValueError(f"size must be at least 1 training image, got {size}")
        self.beta = beta
        self.register_buffer("average", torch.zeros(size))
        self.register_buffer("averaged", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("total", torch.zeros(size))
        self.register_buffer("count", torch.zeros(size, dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.average, self.total = self.average.float(), self.total.float()
        return self

    @torch.no_grad()
    def record(self, indices: Tensor, losses: Tensor) -> None:
        """This epoch's ``losses [B]`` of the images at ``indices [B]`` (this process's;
        every process's are gathered)."""
        if indices.shape != losses.shape or indices.dim() != 1:
            raise ValueError(f"expected indices [B] and losses [B], got {tuple(indices.shape)} and "
                             f"{tuple(losses.shape)}")
        indices = gather(indices.to(self.count.device))
        losses = gather(losses.detach().float().to(self.total.device))
        self.total.index_add_(0, indices, losses)
        self.count.index_add_(0, indices, torch.ones_like(indices))

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> None:
        """Begin (or, resumed, continue) ``epoch``: a later one than the running epoch's
        folds the running losses into the averages first; an earlier one is refused."""
        if epoch < self.epoch:
            raise ValueError(f"the momentum losses are at epoch {int(self.epoch)}; epoch {epoch} is behind them")
        if epoch == self.epoch:
            return
        seen = self.count > 0
        latest = self.total[seen] / self.count[seen]
        first = ~self.averaged[seen]
        self.average[seen] = torch.where(first, latest, self.beta * self.average[seen] + (1 - self.beta) * latest)
        self.averaged |= seen
        self.total.zero_()
        self.count.zero_()
        self.epoch.fill_(epoch)

    @torch.no_grad()
    def scores(self) -> Tensor:
        """``[N]`` memorisation scores in [0, 1], high for the images memorised least."""
        if not self.averaged.any():
            return torch.zeros_like(self.average)
        centred = self.average - self.average[self.averaged].mean()
        centred[~self.averaged] = 0
        largest = centred.abs().max()
        if largest == 0:
            return torch.zeros_like(self.average)
        return (1 + centred / largest) / 2
