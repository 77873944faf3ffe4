"""Test-agnostic evaluation: accuracy when the test distribution is not balanced.

- [0] Zhang et al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic
  Long-Tailed Recognition", NeurIPS 2022, https://arxiv.org/abs/2107.09249

From a balanced test set of ``n`` images per class, a forward long-tailed test set at
imbalance factor ``r`` keeps ``longtail_counts(n, C, r)`` images per class (head class
first, as in training), a backward one the same counts reversed. Their accuracy is
computed exactly by weighting each class's accuracy by its count, which is the
expectation of the accuracy on such a subset drawn at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longtail.data.longtail import longtail_counts

IMBALANCE_FACTORS = (50, 25, 10, 5, 2)


def shifted_distributions(
    per_class: int, num_classes: int, imbalance_factors: Sequence[float] = IMBALANCE_FACTORS
) -> dict[str, list[int]]:
    """Images per class of each test distribution, from forward-50 through uniform to
    backward-50, in that order."""
    forward = {f"forward-{r:g}": longtail_counts(per_class, num_classes, r) for r in imbalance_factors}
    backward = {f"backward-{r:g}": counts[::-1] for r, counts in
                zip(imbalance_factors, forward.values())}
    return {**forward, "uniform": [per_class] * num_classes, **dict(reversed(backward.items()))}


def weighted_accuracy(per_class_accuracy: Sequence[float | None], counts: Sequence[int]) -> float:
    """Accuracy on a test set with ``counts`` images per class: the count-weighted mean of
    the per-class accuracies (classes without test images are left out)."""
    pairs = [(a, n) for a, n in zip(per_class_accuracy, counts) if a is not None and n > 0]
    return sum(a * n for a, n in pairs) / sum(n for _, n in pairs)


def agnostic_accuracy(per_class_accuracy: Sequence[float | None], per_class: int) -> dict[str, float]:
    """Accuracy (percent, as ``per_class_accuracy``) on every test distribution."""
    return {
        name: weighted_accuracy(per_class_accuracy, counts)
        for name, counts in shifted_distributions(per_class, len(per_class_accuracy)).items()
    }


def resampled_accuracy(
    predictions: np.ndarray, targets: np.ndarray, counts: Sequence[int], rng: np.random.Generator
) -> float:
    """Accuracy (percent) on one random subset with ``counts[c]`` test images of class ``c``."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(targets == c), size=n, replace=False) for c, n in enumerate(counts) if n
    ])
    return 100.0 * float((predictions[chosen] == targets[chosen]).mean())
