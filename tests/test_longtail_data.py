"""Long-tail construction and the shot split, against DESIGN.md's numbers and hand cases."""

import numpy as np
import pytest
import torch

from longtail.data import LabeledImages, longtail_counts, make_longtailed, shot_groups, subsample_indices
from longtail.evaluation import shot_accuracy


def test_cifar10_lt_counts_at_100():
    counts = longtail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar100_lt_counts_at_100():
    counts = longtail_counts(500, 100, 100)
    assert sum(counts) == 10847 and counts[0] == 500 and counts[-1] == 5


def test_step_profile_and_bad_arguments():
    assert longtail_counts(100, 4, 10, "step") == [100, 100, 10, 10]
    assert longtail_counts(100, 3, 1) == [100, 100, 100]
    with pytest.raises(ValueError, match="imbalance_factor"):
        longtail_counts(100, 3, 0.5)
    with pytest.raises(ValueError, match="profile"):
        longtail_counts(100, 3, 10, "linear")


def test_subsampling_follows_the_seeded_per_class_shuffle():
    labels = np.repeat(np.arange(3), 20)
    counts = [20, 7, 2]
    kept = subsample_indices(labels, counts, seed=4)
    rng = np.random.RandomState(4)  # the rule written out: one generator, classes in order
    expected = []
    for cls, count in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        expected += members[:count].tolist()
    assert kept.tolist() == sorted(expected)
    assert np.bincount(labels[kept]).tolist() == counts
    assert kept.tolist() != subsample_indices(labels, counts, seed=5).tolist()
    with pytest.raises(ValueError, match="class 2"):
        subsample_indices(labels, [1, 1, 21], seed=0)


def test_make_longtailed_takes_the_smallest_class_as_the_head():
    labels = np.array([0] * 30 + [1] * 25 + [2] * 40)
    data = LabeledImages(np.zeros((len(labels), 2, 2, 3), np.uint8), labels, ["a", "b", "c"])
    assert make_longtailed(data, 5).counts() == longtail_counts(25, 3, 5)


def test_shot_groups_boundaries():
    assert shot_groups([101, 100, 20, 19]) == ["many", "medium", "medium", "few"]


def test_shot_accuracy_on_a_hand_made_case():
    # classes: 0 many (500), 1 medium (100), 2 medium (20), 3 few (5)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2, 0, 0])
    result = shot_accuracy(predictions, targets, [500, 100, 20, 5])
    assert result["overall"] == pytest.approx(60.0)  # 6 of 10
    assert result["per_class"] == pytest.approx([75.0, 50.0, 100.0, 0.0])
    assert result["many"] == pytest.approx(75.0)
    assert result["medium"] == pytest.approx(75.0)  # the mean of 50 and 100
    assert result["few"] == pytest.approx(0.0)


def test_an_empty_shot_group_is_none_and_lengths_must_match():
    result = shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [500, 300])
    assert result["few"] is None and result["medium"] is None and result["many"] == 100.0
    with pytest.raises(ValueError):
        shot_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), [5, 5])
