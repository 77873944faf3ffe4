"""Long-tailed profiles, subsampling of a balanced set, and the many/medium/few split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROFILES = ("exp", "step")


def longtail_counts(
    n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp"
) -> list[int]:
    """Images per class of a long-tailed profile, head class first.

    - [0] Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
      Loss", NeurIPS 2019, https://arxiv.org/abs/1906.07413 (the CIFAR-LT construction)

    ``exp``: class ``i`` keeps ``int(n_max * imbalance_factor ** (-i / (C - 1)))``.
    ``step``: the first half of the classes keep ``n_max``, the rest
    ``int(n_max / imbalance_factor)``.

    Examples:
        >>> longtail_counts(5000, 10, 100)
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor must be at least 1, got {imbalance_factor}")
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [
            int(n_max * imbalance_factor ** (-i / (num_classes - 1))) for i in range(num_classes)
        ]
    if profile == "step":
        tail = int(n_max / imbalance_factor)
        return [int(n_max) if i < num_classes // 2 else tail for i in range(num_classes)]
    raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")


def subsample_indices(labels: Sequence[int], counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices that keep ``counts[c]`` images of each class ``c``, in the original order.

    Cao et al.'s rule: one ``numpy.random.RandomState(seed)`` shuffles the indices of
    each class in turn, in label order, and the first ``counts[c]`` are kept. On images
    in the original order this selects the images of the published CIFAR-LT benchmarks.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    kept = []
    for cls, count in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise ValueError(f"class {cls} has {len(members)} images, fewer than the {count} asked")
        rng.shuffle(members)
        kept.append(members[:count])
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, dtype=np.int64)


def hold_out_indices(labels: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """``per_class`` images of every class, drawn with ``seed``: a balanced validation set
    held out of a training pool before it is made long-tailed (as Sinha et al. hold out
    their held-out data for the class difficulties)."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed + 7919)  # not the subsampling's draw
    held = []
    for cls in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == cls)
        if per_class >= len(members):
            raise ValueError(f"class {cls} has {len(members)} images: too few to hold {per_class} out")
        held.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(held))


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> list[str]:
    """The shot group of each class: ``many`` above ``many`` training images, ``few``
    below ``few``, ``medium`` otherwise (the split of Liu et al., "Large-Scale
    Long-Tailed Recognition in an Open World", CVPR 2019)."""
    return [
        "many" if count > many else "few" if count < few else "medium" for count in train_counts
    ]
