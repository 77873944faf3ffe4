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
    image whose loss stays high is likely of the tail. ``record`` keeps each image's loss
    of the running epoch; ``start_epoch``, once the epoch has moved on, folds the last
    one's into the moving average

    ``L_m(i, t) = beta L_m(i, t - 1) + (1 - beta) l(i, t)``  (``L_m(i, 1) = l(i, 1)``)

    for the images seen in it. ``scores`` centres the momentum losses on their mean and
    divides by the largest deviation, shifted to [0, 1]:
    ``M_i = (1 + (L_m(i) - mean L_m) / max_j |L_m(j) - mean L_m|) / 2``, so the image
    memorised least scores highest; before the first epoch is folded (and when every
    image's loss is the same) all scores are 0. An image never seen is taken at the mean.

    Buffers hold the averages, the running epoch's losses and its number, so a checkpoint
    resumes them, whether taken within an epoch or at its end. In a distributed run every
    process records the losses of all (``record`` gathers them), so the processes hold the
    same scores.

    Args:
        size: N, the training images.
        beta: the average's momentum.
    """

    def __init__(self, size: int, beta: float = 0.97) -> None:
        super().__init__()
        if size < 1 or not 0 <= beta < 1:
            raise ValueError(f"size must be at least 1 and beta in [0, 1), got {size} and {beta}")
        self.beta = beta
        self.register_buffer("average", torch.zeros(size))
        self.register_buffer("averaged", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("running", torch.zeros(size))
        self.register_buffer("seen", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def record(self, indices: Tensor, losses: Tensor) -> None:
        """This epoch's ``losses [B]`` of the images at ``indices [B]`` (this process's;
        every process's are gathered)."""
        if indices.shape != losses.shape or indices.dim() != 1:
            raise ValueError(f"expected indices [B] and losses [B], got {tuple(indices.shape)} and "
                             f"{tuple(losses.shape)}")
        indices, losses = gather(indices.to(self.running.device)), gather(losses.detach().float())
        self.running[indices] = losses.to(self.running.device)
        self.seen[indices] = True

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> None:
        """Begin (or, resumed, continue) ``epoch``: a later one than the running epoch's
        folds the running losses into the averages first."""
        if epoch == self.epoch:
            return
        first, again = self.seen & ~self.averaged, self.seen & self.averaged
        self.average[first] = self.running[first]
        self.average[again] = self.beta * self.average[again] + (1 - self.beta) * self.running[again]
        self.averaged |= self.seen
        self.seen.zero_()
        self.running.zero_()
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
