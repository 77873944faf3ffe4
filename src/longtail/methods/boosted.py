"""Boosted contrastive learning: each image augmented as hard as the network has yet to
memorise it (Zhou et al., ICML 2022), on SimCLR and on SDCLR."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from longtail.data.batch_augment import StrengthRandAugment
from longtail.losses.distributed import global_mean
from longtail.losses.memorization import MomentumLoss
from longtail.losses.selfsupervised import ntxent_per_image
from longtail.methods.selfsupervised import SDCLR, SimCLR


class _MemorizationBoost:
    """What boosted contrastive learning adds to a SimCLR-like method (one with
    ``embeddings(views)`` of two views and a ``temperature``).

    - [0] Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022,
      https://arxiv.org/abs/2205.12693 (Sec. 3.2, the momentum loss; Sec. 3.3, the
      memorisation-boosted augmentation; Algorithm 1)

    The loss is NT-Xent, the mean of every image's (``ntxent_per_image``, over the batch of
    every process), unweighted; after each applied step each image's goes into its
    momentum loss (``MomentumLoss``). At the start of every epoch the
    momentum losses give each image a score in [0, 1], high for the images the network
    has memorised least, the rare ones; every view of an image then ends with RandAugment
    at that strength (``StrengthRandAugment``, ``num_ops`` operations), so the tail's views
    differ most and its images are learned harder. The first epoch runs on the plain views.
    The labels are never read; the training set's size comes from ``class_counts``.
    """

    def _boost(self, beta: float, num_ops: int, class_counts: Sequence[int] | None) -> None:
        if class_counts is None:
            raise ValueError("needs class_counts, for the number of training images (no label is read)")
        self.momentum_loss = MomentumLoss(sum(class_counts), beta)
        del self.contrastive_loss  # SimCLR's whole-batch loss: here each image's NT-Xent is kept
        self.augment = StrengthRandAugment(num_ops)  # no weights: nothing in the checkpoint

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        if len(batch) < 3:
            raise ValueError(f"{type(self).__name__} keeps a record per training image: its batches need the "
                             f"images' indices, (views, labels, indices), as LongTailDataModule gives them")
        self._indices = batch[2]
        return super().training_step(batch, batch_idx)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        losses = ntxent_per_image(*self.embeddings(views), self.temperature)
        self._losses = losses.detach()
        return {"contrastive": global_mean(losses)}

    def after_step(self) -> None:
        super().after_step()
        self.momentum_loss.record(self._indices, self._losses)

    def on_train_start(self) -> None:  # a run resumed within an epoch starts no epoch
        super().on_train_start()
        self._boost_views()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._boost_views()

    def _boost_views(self) -> None:
        """Each image's strength for the running epoch, from the momentum losses so far."""
        data = self.trainer.datamodule
        if data is None or not hasattr(data, "boost"):
            raise ValueError(f"{type(self).__name__} augments each training image at its own strength: "
                             f"train it with a LongTailDataModule")
        self.momentum_loss.start_epoch(self.current_epoch)
        data.boost(self.momentum_loss.scores(), self.augment)


class BoostedSimCLR(_MemorizationBoost, SimCLR):
    """Boosted contrastive learning on SimCLR (the paper's BCL-I).

    - [0] Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022,
      https://arxiv.org/abs/2205.12693 (Algorithm 1)

    ``SimCLR`` whose views are boosted per image by its momentum loss (see
    ``_MemorizationBoost``).

    Args:
        beta: the momentum loss's moving-average momentum (0.97).
        num_ops: RandAugment's operations per view (1 on CIFAR).
        temperature, feat_dim, hidden_dim: as ``SimCLR`` (the objective is NT-Xent).
        class_counts: training images per class (the run supplies them; only their sum
            is read).
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, beta: float = 0.97, num_ops: int = 1, temperature: float = 0.5, feat_dim: int = 128,
                 hidden_dim: int = 512, class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(temperature=temperature, feat_dim=feat_dim, hidden_dim=hidden_dim, **parts)
        self._boost(beta, num_ops, class_counts)


class BoostedSDCLR(_MemorizationBoost, SDCLR):
    """Boosted contrastive learning on SDCLR (the paper's BCL-D).

    - [0] Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022,
      https://arxiv.org/abs/2205.12693 (Algorithm 1, with SDCLR's pruned branch)

    ``SDCLR`` whose views are boosted per image by its momentum loss, the NT-Xent between
    the dense and the pruned branch (see ``_MemorizationBoost``).

    Args:
        beta, num_ops, class_counts: as ``BoostedSimCLR``.
        prune_ratio, prune_scope, temperature, feat_dim, hidden_dim: as ``SDCLR`` (the
            objective is NT-Xent).
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, beta: float = 0.97, num_ops: int = 1, prune_ratio: float = 0.9, prune_scope: str = "global",
                 temperature: float = 0.5, feat_dim: int = 128, hidden_dim: int = 512,
                 class_counts: Sequence[int] | None = None, **parts) -> None:
        super().__init__(prune_ratio=prune_ratio, prune_scope=prune_scope, temperature=temperature, feat_dim=feat_dim,
                         hidden_dim=hidden_dim, **parts)
        self._boost(beta, num_ops, class_counts)
