"""Everything the end of a run reports, from the test logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import numpy as np

from longtail.evaluation.agnostic import agnostic_accuracy, resampled_accuracy, shifted_distributions
from longtail.evaluation.calibration import calibration
from longtail.evaluation.metrics import shot_accuracy


def summarize(
    logits: Tensor,
    targets: Tensor,
    train_counts: Sequence[int],
    many: int = 100,
    few: int = 20,
    resamples: int = 0,
    seed: int = 0,
) -> dict:
    """Shot-split and per-class accuracy, calibration, and test-agnostic accuracy.

    The test-agnostic distributions are built from the smallest number of test images of
    a class (all of them, on a balanced test set). Their accuracy is exact (per-class
    weights), or with ``resamples`` > 0 the mean over that many random test subsets.
    """
    logits, targets = torch.as_tensor(logits), torch.as_tensor(targets).long()
    results = shot_accuracy(logits.argmax(dim=1), targets, train_counts, many, few)
    results["calibration"] = calibration(logits, targets)
    test_counts = torch.bincount(targets, minlength=len(train_counts))
    per_class = int(test_counts[test_counts > 0].min())
    if resamples > 0:
        rng = np.random.default_rng(seed)
        predictions = logits.argmax(dim=1).numpy()
        results["agnostic"] = {
            name: float(np.mean([resampled_accuracy(predictions, targets.numpy(), counts, rng)
                                 for _ in range(resamples)]))
            for name, counts in shifted_distributions(per_class, len(train_counts)).items()
        }
    else:
        results["agnostic"] = agnostic_accuracy(results["per_class"], per_class)
    results["agnostic_mean"] = sum(results["agnostic"].values()) / len(results["agnostic"])
    return results
