"""Training samplers whose every epoch is a function of (seed, epoch) alone.

Each item the sampler yields is ``(index, augmentation_seed)``: the dataset seeds the
augmentation of that image with it. The order of an epoch and every random crop in it
are then reproducible, whatever the number of loader processes, and a run resumed in
the middle of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

#: Training samplers: name -> description.
SAMPLERS = {
    "random": "uniform over images, every image once per epoch (instance-balanced)",
    "class_balanced": "each class equally likely, images drawn with replacement "
    "(Kang et al., ICLR 2020, 'Decoupling Representation and Classifier')",
    "square_root": "each class as likely as the square root of its size, with replacement (Kang et al., ICLR 2020)",
    "progressive": "from instance- to class-balanced over the epochs, with replacement (Kang et al., ICLR 2020)",
    "class_difficulty": "each class as likely as its difficulty on held-out data, with replacement; needs "
    "method.cdb_tau (Sinha et al., IJCV 2022)",
}


def class_probabilities(counts: torch.Tensor, name: str, progress: float = 0.0) -> torch.Tensor:
    """The probability that a draw of sampler ``name`` is of each class.

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 3, eq. 1 and 2)

    Class-aware sampling draws class ``j`` with ``p_j = n_j^q / sum_i n_i^q``: ``q = 1`` is
    instance-balanced (``random``), ``q = 0`` ``class_balanced``, ``q = 1/2``
    ``square_root``; ``progressive`` moves from the first to the second over training,
    ``p_j(t) = (1 - t/T) p_j^IB + (t/T) p_j^CB`` with ``progress = t/T``.
    """
    counts = counts.to(torch.float64)

    def power(q: float) -> torch.Tensor:
        return counts.pow(q) / counts.pow(q).sum()

    if name == "progressive":
        return (1 - progress) * power(1.0) + progress * power(0.0)
    return power({"random": 1.0, "class_balanced": 0.0, "square_root": 0.5, "class_difficulty": 0.0}[name])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)`` for one epoch.

    Args:
        labels: the class of each training image.
        name: ``random`` (a permutation), or a class-aware sampler of ``SAMPLERS``: a class
            drawn with ``class_probabilities``, then an image of it uniformly, with
            replacement.
        seed: the run's seed.
        epochs: the run's epochs ``T`` (``progressive``).

    ``class_weights`` (``[C]``, set by the method: ``class_difficulty``), when set, are the
    class probabilities, normalised. ``set_epoch(e)`` chooses the epoch (Lightning calls it); ``skip`` items are left out
    at the start of the next epoch's iteration, to resume mid-epoch. With
    ``shard(rank, world_size)`` each of the processes of a distributed run takes every
    ``world_size``-th position of the same epoch, so their items are disjoint, and all
    take the same number.
    """

    def __init__(self, labels: Sequence[int], name: str = "random", seed: int = 0, epochs: int = 1) -> None:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
        self.labels = torch.as_tensor(labels)
        self.name = name
        self.seed = seed
        self.epochs = epochs
        self.class_weights: torch.Tensor | None = None
        self.epoch = 0
        self.skip = 0
        self.rank, self.world_size = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.labels) // self.world_size

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        if self.name == "random":
            return torch.randperm(len(self.labels), generator=generator)
        counts = torch.bincount(self.labels)
        if self.class_weights is not None:
            per_class = self.class_weights.to(torch.float64) / self.class_weights.sum()
        else:
            per_class = class_probabilities(counts, self.name, min(1.0, self.epoch / max(1, self.epochs)))
        weights = (per_class / counts.to(torch.float64))[self.labels]  # uniform within a class
        return torch.multinomial(weights, len(self.labels), replacement=True, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = self._order(generator)
        seeds = torch.randint(0, 2**62, (len(order),), generator=generator)
        mine = slice(self.rank, len(self) * self.world_size, self.world_size)
        order, seeds = order[mine], seeds[mine]
        start, self.skip = self.skip, 0
        yield from zip(order[start:].tolist(), seeds[start:].tolist())
