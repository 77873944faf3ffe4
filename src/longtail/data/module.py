"""The Lightning DataModule: long-tailed training views, plain test images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from longtail.data.batch_augment import StrengthRandAugment
from longtail.data.images import DataSplits, ImageFiles, LabeledImages
from longtail.data.samplers import SAMPLERS, EpochSampler
from longtail.data.transforms import MultiView, View, seeded, view_transform


class ImageBatch(NamedTuple):
    """A loader's batch: the views after stage 1, before the batch stage that
    ``LongTailDataModule.finish`` runs on the batch's device."""

    images: torch.Tensor  #: uint8 ``[B, V, 3, S, S]``
    labels: torch.Tensor  #: ``[B]``
    seed: int | None  #: seeds the batch stage; ``None``: unseeded
    training: bool  #: training views, or one evaluation view
    indices: torch.Tensor  #: ``[B]``, the images' positions in their split


class TransformedImages(Dataset):
    """Stage 1 of a ``MultiView`` on uint8 ``[N, H, W, 3]`` images, a batch at a time.

    The loader asks for a whole batch at once (``__getitems__``) and gets an
    ``ImageBatch``. A key ``(index, seed)`` (from ``EpochSampler``) seeds the image stage
    of that item, leaving the process's own random state as it was; the first key's seed
    gives the batch stage's.
    """

    def __init__(self, data: LabeledImages, transform: MultiView, training: bool = True) -> None:
        self.data = data
        self.transform = transform
        self.training = training

    def __len__(self) -> int:
        return len(self.data)

    def _image(self, index: int, seed: int | None) -> torch.Tensor:
        image = torch.from_numpy(np.array(self.data.images[index])).permute(2, 0, 1)  # memmaps are read-only
        with seeded(seed):
            return self.transform.images(image)

    def __getitems__(self, keys: list) -> ImageBatch:
        keys = [key if isinstance(key, tuple) else (key, None) for key in keys]
        indices = [index for index, _ in keys]
        if self.transform.per_image or not isinstance(self.data.images, np.ndarray):
            images = torch.stack([self._image(index, seed) for index, seed in keys])
        else:  # no view has a stage 1: one read of the rows, each view a copy of them
            rows = torch.from_numpy(self.data.images[indices]).permute(0, 3, 1, 2)
            images = rows[:, None].expand(-1, len(self.transform.views), -1, -1, -1).contiguous()
        labels = torch.as_tensor(self.data.labels[indices])
        seed = None if keys[0][1] is None else keys[0][1] ^ BATCH_SEED_MASK
        return ImageBatch(images, labels, seed, self.training, torch.as_tensor(indices))


#: Keeps a batch stage's seed apart from the image stage seed of the batch's first item.
BATCH_SEED_MASK = 0x5DEECE66D


def whole_batch(batch):
    """The loader's collate function: ``__getitems__`` already made the batch."""
    return batch


def channel_stats(images: np.ndarray | ImageFiles, sample: int = 500,
                  chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale: of
    every image of an array (``chunk`` images at a time), of a seeded sample of ``sample``
    images read from files."""
    if isinstance(images, ImageFiles):
        chosen = sorted(np.random.default_rng(0).permutation(len(images))[:sample].tolist())
        parts = (images[i].reshape(-1, 3) for i in chosen)
    else:
        parts = (images[i : i + chunk].reshape(-1, 3) for i in range(0, len(images), chunk))
    count, total, squares = 0, np.zeros(3), np.zeros(3)
    for pixels in parts:
        pixels = pixels.astype(np.float64) / 255
        count += len(pixels)
        total += pixels.sum(axis=0)
        squares += np.square(pixels).sum(axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def square_side(images: np.ndarray | ImageFiles) -> int | None:
    """The side of images that are all one square size (files read resized among them),
    else ``None``."""
    if isinstance(images, ImageFiles):
        return images.resize
    return images.shape[1] if images.shape[1] == images.shape[2] else None


def yield_to_training(worker_id: int) -> None:
    """A loader process's start: it runs at the lowest priority, filling the gaps the
    training step leaves. On 2 cores this took BCL's pipeline from 0.92 to 0.95 of the
    model-only bound: the step's threads no longer wait on one that a loader delayed."""
    if hasattr(os, "nice"):
        os.nice(19)


def default_num_workers() -> int:
    """Loader processes sized to the machine: one per core beyond the main one, at most 8."""
    return min(8, max(1, (os.cpu_count() or 1) - 1))


class LongTailDataModule(L.LightningDataModule):
    """Training batches ``(views [B, V, 3, S, S], labels [B], indices [B])`` (``indices``:
    the images' positions in the training set) and test batches ``(images [B, 3, S, S],
    labels [B])``.

    The loaders give ``ImageBatch``es of uint8 views; Lightning hands each one, once on its
    device, to ``finish`` (``on_after_batch_transfer``), which runs the views' batch stage.
    A method may ``boost`` each training image's augmentation by a strength of its own.

    Args:
        splits: the long-tailed training set, the test set and an optional validation set.
        views: one view name per view (see ``longtail.data.transforms``).
        batch_size: images per training batch.
        num_workers: loader processes; ``None`` sizes them to the machine.
        sampler: a name from ``SAMPLERS``.
        seed: seeds the order and the augmentation of every epoch.
        mean, std: normalisation; by default the training set's channel statistics.
        image_size: the side of the model's input; by default the images' own side, when
            they all share one square size.
        test_split: the split that ``test_dataloader`` serves, un-augmented: ``test``, or
            ``train`` for features of the training set (k-NN, nearest class mean).
        epochs: the run's epochs (the ``progressive`` sampler moves over them).
    """

    def __init__(
        self,
        splits: DataSplits,
        views: Sequence[str],
        batch_size: int = 128,
        num_workers: int | None = None,
        sampler: str = "random",
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        image_size: int | None = None,
        test_split: str = "test",
        epochs: int = 1,
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.splits = splits
        self.source_size = square_side(splits.train.images)
        self.size = image_size or self.source_size
        if self.size is None:
            raise ValueError("the training images differ in size or are not square: "
                             "set data.image_size (e.g. 224), and data.resize to decode them once")
        if mean is None or std is None:
            mean, std = channel_stats(splits.train.images)
        self.mean, self.std = list(mean), list(std)
        self.views = list(views)
        self.train_views = MultiView([self.view(name) for name in self.views])
        self.eval_views = MultiView([view_transform("none", self.size, self.mean, self.std)])
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.train_sampler = EpochSampler(splits.train.labels, sampler, seed, epochs)
        self.resume_step: int | None = None
        self.test_split = test_split
        self.boosted: tuple[StrengthRandAugment, torch.Tensor] | None = None

    @property
    def class_counts(self) -> list[int]:
        return self.splits.train.counts()

    @property
    def classes(self) -> list[str]:
        return self.splits.train.classes

    def _loader(self, dataset: Dataset, sampler: EpochSampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=sampler is not None and len(sampler) > self.batch_size,
            collate_fn=whole_batch,
            worker_init_fn=yield_to_training,
        )

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch and process (the last partial batch is dropped)."""
        return max(1, len(self.train_sampler) // self.batch_size)

    def setup(self, stage: str) -> None:
        """Shard the training set across the processes of a distributed run."""
        if self.trainer is not None:
            self.train_sampler.shard(self.trainer.global_rank, self.trainer.world_size)
        if self.resume_step is not None:
            epoch, done = divmod(self.resume_step, self.steps_per_epoch)
            self.train_sampler.set_epoch(epoch)
            self.train_sampler.skip = done * self.batch_size
            self.resume_step = None

    def resume_at(self, global_step: int) -> None:
        """Continue the epoch that ``global_step`` optimiser steps (one per batch) ended in:
        its order, without the batches already trained on. Lightning resumes a loop in
        the middle of an epoch without telling the sampler, so this is set beforehand."""
        self.resume_step = global_step

    def view(self, name: str):
        """The view ``name`` (see ``longtail.data.transforms``) of the training images."""
        return view_transform(name, self.size, self.mean, self.std, self.source_size)

    def _evaluation(self, data: LabeledImages) -> TransformedImages:
        """Unaugmented images of a split, whose sizes may differ from the training set's: the
        split's own image stage, and the batch stage that ``finish`` runs on every evaluation batch."""
        fit = view_transform("none", self.size, self.mean, self.std, square_side(data.images)).image
        return TransformedImages(data, MultiView([View(fit, self.eval_views.views[0].batch)]), training=False)

    def boost(self, strength: torch.Tensor | None, augment: StrengthRandAugment | None = None) -> None:
        """From now on, end every training view with ``augment`` (by default one
        ``StrengthRandAugment`` operation) at ``strength[i]`` (in [0, 1]) for training image
        ``i``; ``None``: stop."""
        if strength is not None and strength.shape != (len(self.splits.train),):
            raise ValueError(f"expected a strength per training image, [{len(self.splits.train)}], "
                             f"got {tuple(strength.shape)}")
        augment = StrengthRandAugment() if augment is None else augment
        self.boosted = None if strength is None else (augment, strength.detach().cpu())

    def finish(self, batch: ImageBatch) -> tuple[torch.Tensor, ...]:
        """The tensors of a loader's batch: its batch stage, seeded as the loader said, run
        where the batch is. Training ``(views [B, V, 3, S, S], labels, indices)``, evaluation
        ``(images [B, 3, S, S], labels)``; images float32."""
        if not batch.training:
            return self.eval_views.batch(batch.images, batch.seed)[:, 0], batch.labels
        boost = None
        if self.boosted is not None:
            augment, strength = self.boosted
            strength = strength[batch.indices.cpu()]
            boost = partial(augment, strength=strength) if strength.any() else None  # else the plain views
        return self.train_views.batch(batch.images, batch.seed, boost), batch.labels, batch.indices

    def on_after_batch_transfer(self, batch: ImageBatch, dataloader_idx: int):
        return self.finish(batch)

    def train_dataloader(self) -> DataLoader:
        return self._loader(TransformedImages(self.splits.train, self.train_views), self.train_sampler)

    def evaluation_dataloader(self, split: str) -> DataLoader:
        """The un-augmented images of ``split`` (``train``, ``val`` or ``test``), in order."""
        data = getattr(self.splits, split, None)
        if data is None:
            raise ValueError(f"the data has no {split!r} split")
        return self._loader(self._evaluation(data))

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.splits.val is None else self.evaluation_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader(self.test_split)

