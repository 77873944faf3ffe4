"""Accuracy overall, per class, and on the many-, medium- and few-shot classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from longtail.data.longtail import shot_groups

SHOT_GROUPS = ("many", "medium", "few")


def per_class_accuracy(predictions: Tensor, targets: Tensor, num_classes: int) -> list[float | None]:
    """Percent of each class's test images predicted right (None for a class with none)."""
    predictions = torch.as_tensor(predictions).flatten().cpu()
    targets = torch.as_tensor(targets).flatten().cpu()
    total = torch.bincount(targets, minlength=num_classes)[:num_classes]
    right = torch.bincount(targets[predictions == targets], minlength=num_classes)[:num_classes]
    return [
        100.0 * r / t if t > 0 else None for r, t in zip(right.tolist(), total.tolist())
    ]


def shot_accuracy(
    predictions: Tensor,
    targets: Tensor,
    train_counts: Sequence[int],
    many: int = 100,
    few: int = 20,
) -> dict:
    """Top-1 accuracy overall and on the many-, medium- and few-shot classes (percent).

    ``overall`` is over all test images. ``many``, ``medium`` and ``few`` are the mean
    per-class accuracy over the classes of that group (``None`` when the group has no
    class with test images): on a balanced test set this equals accuracy over the
    group's images. ``per_class`` lists each class's accuracy.

    Args:
        predictions: ``[N]`` predicted class indices.
        targets: ``[N]`` true class indices.
        train_counts: training images per class; their length is the number of classes.
        many: classes with more training images than this are many-shot.
        few: classes with fewer training images than this are few-shot.
    """
    predictions = torch.as_tensor(predictions).flatten()
    targets = torch.as_tensor(targets).flatten()
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions and targets differ in length: {len(predictions)} != {len(targets)}"
        )
    per_class = per_class_accuracy(predictions, targets, len(train_counts))
    groups = shot_groups(train_counts, many, few)
    result: dict = {
        "overall": 100.0 * (predictions == targets).float().mean().item() if len(targets) else None
    }
    for group in SHOT_GROUPS:
        values = [acc for acc, g in zip(per_class, groups) if g == group and acc is not None]
        result[group] = sum(values) / len(values) if values else None
    result["per_class"] = per_class
    return result
