"""Data: readers, long-tail construction, views, and the DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longtail.data.longtail import hold_out_indices, longtail_counts, shot_groups, subsample_indices
from longtail.data.module import LongTailDataModule
from longtail.data.samplers import SAMPLERS, EpochSampler
from longtail.data.split_list import list_counts, read_lists, read_split_list
from longtail.data.readers import DataSplits, LabeledImages, read_cifar, read_digits, read_folder

#: The imbalance factor of Digits-LT, the embedded default data.
DIGITS_IMBALANCE_FACTOR = 10.0


def make_longtailed(
    data: LabeledImages, imbalance_factor: float, profile: str = "exp", seed: int = 0
) -> LabeledImages:
    """Subsample a training set to a long-tailed profile, class 0 the head.

    The head keeps as many images as the smallest class has (``n_max``), so that every
    class can give its share; see ``longtail_counts`` and ``subsample_indices``.
    """
    available = data.counts()
    counts = longtail_counts(min(available), len(available), imbalance_factor, profile)
    return data.subset(subsample_indices(data.labels, counts, seed))


def read_splits(
    format: str,
    root: str | None = None,
    imbalance_factor: float | None = None,
    profile: str = "exp",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    on_corrupt: str = "error",
    lists: tuple[str | None, str | None, str | None] = (None, None, None),
    resize: int | None = None,
    num_workers: int | None = None,
    decode: bool = True,
    val_per_class: int | None = None,
) -> DataSplits:
    """Read a data set and make its training set long-tailed.

    Args:
        format: ``digits``, ``cifar``, ``folder`` or ``list``.
        root: the data's folder (not for ``digits``).
        imbalance_factor: the ratio of the largest to the smallest class after
            subsampling; ``None`` keeps the training set as it is (Digits-LT uses 10).
        profile: ``exp`` or ``step``.
        seed: the subsampling seed.
        cache_dir: where decoded images are kept (image folders); ``None``: no cache.
        on_corrupt: ``error`` or ``skip`` an unreadable image (image folders, lists).
        lists: the training, test and validation split lists of ``format="list"``.
        resize: decode image files once resized: the shorter side to ``resize``, the
            centre square kept (image folders, lists); without it, images of different
            sizes are read from their files whenever they are used.
        num_workers: processes that decode image files (``None``: one per core).
        decode: ``False`` lists image files without decoding them; each set's ``storage``
            says where a run would hold them (``longtail data info``).
        val_per_class: hold this many images of every class out of the training pool,
            before it is made long-tailed, as a balanced validation split (for data
            without one of its own).
    """
    if format == "digits":
        splits = read_digits(seed=seed)
        imbalance_factor = imbalance_factor or DIGITS_IMBALANCE_FACTOR
    elif format == "cifar":
        splits = read_cifar(root)
    elif format == "folder":
        splits = read_folder(root, cache_dir, on_corrupt, resize, num_workers, decode)
    elif format == "list":
        splits = read_lists(root, *lists, cache_dir=cache_dir, on_corrupt=on_corrupt, resize=resize,
                            num_workers=num_workers, decode=decode)
    else:
        raise ValueError(f"unknown data.format {format!r}")
    if val_per_class is not None:
        if splits.val is not None:
            raise ValueError("data.val_per_class: the data has a validation split of its own")
        held = np.zeros(len(splits.train), dtype=bool)
        held[hold_out_indices(splits.train.labels, val_per_class, seed)] = True
        splits.train, splits.val = splits.train.subset(np.flatnonzero(~held)), splits.train.subset(np.flatnonzero(held))
    if imbalance_factor is not None:
        splits.train = make_longtailed(splits.train, imbalance_factor, profile, seed)
    if not np.all(np.asarray(splits.train.counts()) > 0):
        empty = splits.train.counts().index(0)
        raise ValueError(f"class {splits.train.classes[empty]!r} has no training image")
    return splits


__all__ = [
    "DataSplits",
    "EpochSampler",
    "LabeledImages",
    "LongTailDataModule",
    "SAMPLERS",
    "longtail_counts",
    "list_counts",
    "make_longtailed",
    "read_cifar",
    "read_digits",
    "read_folder",
    "read_lists",
    "read_split_list",
    "read_splits",
    "shot_groups",
    "subsample_indices",
]
