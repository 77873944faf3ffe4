"""Long-tailed profiles, Cao et al.'s subsampling, Digits(-LT) and the shot groups.

Expected values come from the published CIFAR-LT numbers or are worked out by hand.
"""

from collections import Counter

import numpy as np
import pytest

from longtail.data import (
    LabeledImages,
    longtail_counts,
    make_longtailed,
    read_digits,
    read_splits,
    shot_groups,
    subsample_indices,
)


# --- longtail_counts ---------------------------------------------------------------------


def test_cifar10_lt_at_imbalance_100_matches_the_published_counts():
    counts = longtail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12_406


def test_cifar100_lt_at_imbalance_100_matches_the_published_size():
    counts = longtail_counts(500, 100, 100)
    assert len(counts) == 100
    assert sum(counts) == 10_847
    assert counts[0] == 500 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_exp_profile_on_a_small_hand_case():
    # 100 * 10 ** (-i / 4): 100, 56.23, 31.62, 17.78, 10 -> truncated
    assert longtail_counts(100, 5, 10) == [100, 56, 31, 17, 10]
    assert longtail_counts(100, 5, 10, profile="exp") == [100, 56, 31, 17, 10]
    # two classes: head n_max, tail n_max / IF
    assert longtail_counts(200, 2, 8) == [200, 25]


def test_exp_profile_follows_the_formula_term_by_term():
    n_max, classes, factor = 1234, 7, 37.5
    expected = [int(n_max * factor ** (-i / (classes - 1))) for i in range(classes)]
    assert longtail_counts(n_max, classes, factor) == expected
    assert expected[0] == 1234 and expected[-1] == int(1234 / 37.5) == 32


def test_step_profile_keeps_the_first_half_at_n_max():
    assert longtail_counts(100, 4, 10, "step") == [100, 100, 10, 10]
    # odd number of classes: C // 2 = 2 head classes
    assert longtail_counts(100, 5, 10, "step") == [100, 100, 10, 10, 10]
    # the tail is truncated: int(100 / 3) = 33
    assert longtail_counts(100, 6, 3, "step") == [100, 100, 100, 33, 33, 33]


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_imbalance_factor_one_is_balanced(profile):
    assert longtail_counts(80, 6, 1, profile) == [80] * 6


@pytest.mark.parametrize("factor", [0.5, 0.99, 0, -3])
def test_imbalance_factor_below_one_is_an_error(factor):
    with pytest.raises(ValueError, match="imbalance_factor"):
        longtail_counts(100, 10, factor)


@pytest.mark.parametrize("profile", ["linear", "EXP", ""])
def test_an_unknown_profile_is_an_error(profile):
    with pytest.raises(ValueError):
        longtail_counts(100, 10, 10, profile)


# --- subsample_indices -------------------------------------------------------------------


def _cao_rule(labels, counts, seed):
    """The rule of the specification, written out independently."""
    rng = np.random.RandomState(seed)
    kept = []
    for cls in range(len(counts)):
        members = [i for i, label in enumerate(labels) if label == cls]
        members = np.array(members, dtype=np.int64)
        rng.shuffle(members)
        kept.extend(members[: counts[cls]].tolist())
    return sorted(kept)


@pytest.fixture
def shuffled_labels():
    # 4 classes of 25, 30, 20, 25 images, interleaved (not grouped by class)
    labels = np.array([0] * 25 + [1] * 30 + [2] * 20 + [3] * 25, dtype=np.int64)
    return np.random.default_rng(123).permutation(labels)


def test_subsampling_keeps_the_requested_count_of_each_class(shuffled_labels):
    counts = [25, 12, 5, 1]
    kept = subsample_indices(shuffled_labels, counts, seed=0)
    assert np.bincount(shuffled_labels[kept], minlength=4).tolist() == counts
    assert len(np.unique(kept)) == len(kept) == sum(counts)
    assert kept.tolist() == sorted(kept.tolist())


def test_subsampling_matches_an_independent_implementation_of_cao_et_al(shuffled_labels):
    counts = [20, 11, 7, 3]
    for seed in (0, 1, 2024):
        kept = subsample_indices(shuffled_labels, counts, seed)
        assert kept.tolist() == _cao_rule(shuffled_labels.tolist(), counts, seed)


def test_subsampling_is_deterministic_in_the_seed(shuffled_labels):
    counts = [20, 11, 7, 3]
    first = subsample_indices(shuffled_labels, counts, seed=7)
    again = subsample_indices(shuffled_labels, counts, seed=7)
    other = subsample_indices(shuffled_labels, counts, seed=8)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_subsampling_a_whole_class_keeps_all_of_it(shuffled_labels):
    kept = subsample_indices(shuffled_labels, [25, 30, 20, 25], seed=3)
    assert kept.tolist() == list(range(100))


def test_asking_for_more_images_than_a_class_has_is_an_error(shuffled_labels):
    with pytest.raises(ValueError, match="class 1 has 30 images"):
        subsample_indices(shuffled_labels, [25, 31, 1, 1], seed=0)
    with pytest.raises(ValueError, match="class 3"):
        subsample_indices(shuffled_labels, [1, 1, 1, 26], seed=0)


# --- make_longtailed ---------------------------------------------------------------------


def _tagged_images(labels):
    """Images whose first pixel holds the label and second pixel the position."""
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = labels
    images[:, 0, 1, 0] = np.arange(len(labels))
    return images


def test_make_longtailed_uses_the_smallest_class_as_n_max():
    labels = np.array([1] * 40 + [0] * 30 + [2] * 25 + [1] * 5 + [0] * 10, dtype=np.int64)
    data = LabeledImages(_tagged_images(labels), labels, ["a", "b", "c"])
    assert data.counts() == [40, 45, 25]
    result = make_longtailed(data, 5)
    # n_max = 25: 25, 25 * 5 ** -0.5 = 11.18, 25 / 5 = 5
    assert result.counts() == longtail_counts(25, 3, 5) == [25, 11, 5]
    assert result.classes == ["a", "b", "c"]
    assert result.images.dtype == np.uint8 and result.images.shape[1:] == (4, 4, 3)
    # images travel with their labels
    assert result.images[:, 0, 0, 0].tolist() == result.labels.tolist()


def test_make_longtailed_selects_cao_et_als_images():
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(4), 30)).astype(np.int64)
    data = LabeledImages(_tagged_images(labels), labels, list("wxyz"))
    result = make_longtailed(data, 10, profile="step", seed=11)
    counts = longtail_counts(30, 4, 10, "step")
    assert counts == [30, 30, 3, 3]
    assert result.counts() == counts
    positions = result.images[:, 0, 1, 0].tolist()
    assert positions == _cao_rule(labels.tolist(), counts, 11)


def test_make_longtailed_at_imbalance_one_keeps_n_max_per_class():
    labels = np.array([0] * 12 + [1] * 9 + [2] * 15, dtype=np.int64)
    data = LabeledImages(_tagged_images(labels), labels, ["a", "b", "c"])
    assert make_longtailed(data, 1).counts() == [9, 9, 9]


# --- Digits ------------------------------------------------------------------------------


def _image_multiset(data):
    return Counter((image.tobytes(), int(label)) for image, label in zip(data.images, data.labels))


def test_read_digits_splits_the_1797_images_into_a_balanced_test_set_and_a_pool():
    splits = read_digits(test_per_class=30, seed=0)
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 1797
    assert len(train.classes) == len(test.classes) == 10
    assert test.counts() == [30] * 10
    assert len(test) == 300 and len(train) == 1497
    for part in (train, test):
        assert part.images.dtype == np.uint8
        assert part.images.shape == (len(part), 8, 8, 3)
        assert part.labels.dtype == np.int64
        assert np.array_equal(part.images[..., 0], part.images[..., 1])
        assert np.array_equal(part.images[..., 0], part.images[..., 2])
        assert part.images.max() > 0  # not all black


def test_read_digits_train_and_test_partition_the_whole_set():
    from sklearn.datasets import load_digits

    splits = read_digits(test_per_class=30, seed=0)
    everything = read_digits(test_per_class=0, seed=0).train
    assert len(everything) == 1797
    # the pool and the test set together are exactly all images, each once
    assert _image_multiset(splits.train) + _image_multiset(splits.test) == _image_multiset(everything)
    # per class: the sklearn counts, 30 of each in the test set
    sklearn_counts = np.bincount(load_digits().target, minlength=10)
    assert everything.counts() == sklearn_counts.tolist()
    assert splits.train.counts() == (sklearn_counts - 30).tolist()


def test_read_digits_test_set_depends_on_the_seed():
    first = read_digits(seed=0).test
    again = read_digits(seed=0).test
    other = read_digits(seed=1).test
    assert np.array_equal(first.images, again.images)
    assert _image_multiset(first) != _image_multiset(other)


def test_read_digits_honours_test_per_class():
    splits = read_digits(test_per_class=5, seed=0)
    assert splits.test.counts() == [5] * 10
    assert len(splits.train) == 1797 - 50


def test_digits_lt_is_the_pool_at_imbalance_factor_10_with_the_test_set_untouched():
    pool = read_digits(seed=0)
    splits = read_splits("digits")
    expected = longtail_counts(min(pool.train.counts()), 10, 10)
    assert expected[0] == min(pool.train.counts()) and expected[-1] == min(pool.train.counts()) // 10
    assert splits.train.counts() == expected
    # the test set is the balanced one of read_digits
    assert splits.test.counts() == [30] * 10
    assert np.array_equal(splits.test.images, pool.test.images)
    assert np.array_equal(splits.test.labels, pool.test.labels)
    # the training images come from the pool
    assert not _image_multiset(splits.train) - _image_multiset(pool.train)


# --- shot_groups -------------------------------------------------------------------------


def test_shot_groups_boundaries_are_medium():
    counts = [5000, 101, 100, 50, 21, 20, 19, 1, 0]
    assert shot_groups(counts) == [
        "many", "many", "medium", "medium", "medium", "medium", "few", "few", "few"
    ]


def test_shot_groups_with_other_thresholds():
    assert shot_groups([11, 10, 5, 4], many=10, few=5) == ["many", "medium", "medium", "few"]
    assert shot_groups([]) == []
