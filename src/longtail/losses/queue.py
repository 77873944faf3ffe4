"""A labelled queue of keys: the memory of MoCo-style contrastive methods."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longtail.losses.distributed import gather


class _KeyMemory(nn.Module):
    """What every queue of keys shares: a step's keys held back until the step is taken.

    A step's loss must not meet its own keys in the queue, and the keys of every process
    must reach every process's queue: ``hold`` keeps this process's keys as the loss
    produces them, ``push_held`` (after the optimiser's step) gathers every process's
    held keys and pushes them. Keys held without labels are pushed as unlabelled (``-1``).
    """

    def push(self, keys: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    #: Whether every key needs a label (a queue kept per class).
    needs_labels = False

    def hold(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Keep ``keys [B, D]`` (and their ``labels [B]``) for ``push_held``."""
        if labels is None and self.needs_labels:
            raise ValueError(f"{type(self).__name__} keeps keys per class: hold them with their labels")
        self._held = keys.detach(), labels

    @torch.no_grad()
    def push_held(self) -> None:
        """Push the keys that every process holds, gathered, in rank order."""
        if not hasattr(self, "_held"):
            raise RuntimeError("push_held: no keys are held (hold them in the step first)")
        keys, labels = self._held
        del self._held
        keys = gather(keys)
        labels = torch.full((len(keys),), -1, device=keys.device) if labels is None else gather(labels)
        self.push(keys, labels)


class LabelledQueue(_KeyMemory):
    """The last ``size`` keys pushed, with their labels, first in first out.

    - [0] He et al., "Momentum Contrast for Unsupervised Visual Representation
      Learning", CVPR 2020, https://arxiv.org/abs/1911.05722 (Sec. 3.2, the dictionary
      as a queue)

    The keys, the labels and the write position are buffers, so the queue is part of the
    module's state: a checkpoint holds it and a resumed run continues with the same queue.
    Slots not yet written are left out of ``forward``. Unlabelled keys (self-supervised
    methods) carry label ``-1``, which ``contrastive_loss`` makes a negative of every
    anchor. In a distributed run, gather the keys of every process before pushing (as
    ``push_held`` does), so that every process holds the same queue.

    Args:
        size: K, the number of keys kept.
        dim: D, the keys' dimension.

    Shapes:
        ``push(keys [B, D], labels [B])``; ``forward()`` -> keys ``[K', D]``, labels ``[K']``
        (the ``K' <= K`` slots written, oldest first).

    Examples:
        >>> queue = LabelledQueue(size=4, dim=2)
        >>> queue.push(torch.ones(3, 2), torch.tensor([0, 1, 2]))
        >>> keys, labels = queue()
        >>> labels.tolist()
        [0, 1, 2]
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be at least 1, got size={size}, dim={dim}")
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("written", torch.zeros(size, dtype=torch.bool))

    @property
    def size(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Tensor) -> None:
        """Write ``keys`` over the oldest slots (the last ``size`` of them when more are pushed)."""
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1] or labels.shape != keys.shape[:1]:
            raise ValueError(f"expected keys [B, {self.keys.shape[1]}] and labels [B], "
                             f"got {tuple(keys.shape)} and {tuple(labels.shape)}")
        keys, labels = keys[-self.size:], labels[-self.size:]
        slots = (self.position + torch.arange(len(keys), device=self.position.device)) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.labels[slots] = labels.to(self.labels.dtype)
        self.written[slots] = True
        self.position.copy_((self.position + len(keys)) % self.size)

    def forward(self) -> tuple[Tensor, Tensor]:
        order = (self.position + torch.arange(self.size, device=self.position.device)) % self.size
        order = order[self.written[order]]
        return self.keys[order], self.labels[order]


class ClassBalancedQueue(_KeyMemory):
    """The last ``per_class`` keys of every class, first in first out within each class.

    - [0] Zhong et al., "Rebalanced Siamese Contrastive Mining for Long-Tailed
      Recognition", 2022, https://arxiv.org/abs/2203.11506 (Sec. 3, the class-balanced
      queue)

    A plain queue holds the head classes' keys in proportion to their images, and barely
    any of the tail's; this one keeps the same number of keys of every class once each
    has been seen ``per_class`` times. Buffers hold the keys, their slots' use and each
    class's write position, so checkpoints keep the queue. In a distributed run, push the
    keys of every process (as ``push_held`` does), so that every process holds the same
    queue.

    Args:
        num_classes: C.
        per_class: K, the keys kept per class.
        dim: D, the keys' dimension.

    Shapes:
        ``push(keys [B, D], labels [B])``; ``forward()`` -> keys ``[K', D]``, labels ``[K']``
        (the written slots, class by class, oldest first within a class).
    """

    needs_labels = True

    def __init__(self, num_classes: int, per_class: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1 or per_class < 1 or dim < 1:
            raise ValueError(f"num_classes, per_class and dim must be at least 1, "
                             f"got {num_classes}, {per_class} and {dim}")
        self.register_buffer("keys", torch.zeros(num_classes, per_class, dim))
        self.register_buffer("written", torch.zeros(num_classes, per_class, dtype=torch.bool))
        self.register_buffer("position", torch.zeros(num_classes, dtype=torch.long))

    @property
    def per_class(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Tensor) -> None:
        """Write each class's ``keys`` over its oldest slots (its last ``per_class`` when more)."""
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[2] or labels.shape != keys.shape[:1]:
            raise ValueError(f"expected keys [B, {self.keys.shape[2]}] and labels [B], "
                             f"got {tuple(keys.shape)} and {tuple(labels.shape)}")
        for label in labels.unique().tolist():
            own = keys[labels == label][-self.per_class:]
            slots = (self.position[label] + torch.arange(len(own), device=self.position.device)) % self.per_class
            self.keys[label, slots] = own.detach().to(self.keys.dtype)
            self.written[label, slots] = True
            self.position[label] = (self.position[label] + len(own)) % self.per_class

    def forward(self) -> tuple[Tensor, Tensor]:
        order = (self.position[:, None] + torch.arange(self.per_class, device=self.position.device)) % self.per_class
        written = self.written.gather(1, order)
        labels = torch.arange(len(self.keys), device=self.keys.device)[:, None].expand_as(order)
        keys = self.keys.gather(1, order[:, :, None].expand(-1, -1, self.keys.shape[2]))
        return keys[written], labels[written]
