"""Contrastive losses over the global batch of a distributed run.

A contrastive loss compares every anchor with every reference; under DDP each process
holds only its share of the batch. Each process contrasts its own anchors with the
references of every process (``gather``, whose gradient flows back to the process that
owns each sample) and averages its anchors' losses over the anchors of all processes
(``global_mean``). DDP then averages the processes' gradients, and the step is the one
of a single process on the concatenated batch. Outside a distributed run, each function
is the identity of its one-process form.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Gather(torch.autograd.Function):
    """All-gather whose backward hands each process the summed gradient of its own part."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        rank, size = world()
        ctx.rank, ctx.count = rank, len(tensor)
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, gradient: Tensor) -> Tensor:
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)  # every process's loss reaches this process's samples
        return gradient[ctx.rank * ctx.count:(ctx.rank + 1) * ctx.count]


def gather(tensor: Tensor) -> Tensor:
    """Every process's ``tensor`` ``[n, ...]`` concatenated in rank order, ``[W * n, ...]``;
    the gradient of each part flows back to its own process. All processes must pass the
    same ``n``."""
    if world()[1] == 1:
        return tensor
    return _Gather.apply(tensor)


def own_positions(count: int, device: torch.device) -> Tensor:
    """Positions of this process's ``count`` samples in a ``gather``ed tensor."""
    return world()[0] * count + torch.arange(count, device=device)


def global_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over every process's values, as this process's share: the sum
    of its own over the count of all, times the world size, so that DDP's average of the
    processes' gradients is the gradient of the global mean (and the mean over processes
    of what this returns is that mean). With no value anywhere, 0."""
    rank, size = world()
    count = torch.tensor(float(values.numel()), device=values.device)
    if size > 1:
        dist.all_reduce(count)
    return values.sum() * size / count.clamp(min=1)
