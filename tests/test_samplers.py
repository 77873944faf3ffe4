import pytest
import torch

from longtail.data import EpochSampler

LABELS = [0] * 40 + [1] * 15 + [2] * 5


def items(sampler):
    return list(sampler)


@pytest.mark.parametrize("name", ["random", "class_balanced"])
def test_an_epoch_is_a_function_of_seed_and_epoch(name):
    a, b = EpochSampler(LABELS, name, seed=3), EpochSampler(LABELS, name, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert items(a) == items(b)
    b.set_epoch(3)
    assert items(a) != items(b)
    assert items(a) != items(EpochSampler(LABELS, name, seed=4))


def test_random_is_a_permutation_with_one_seed_per_item():
    drawn = items(EpochSampler(LABELS, "random", seed=0))
    assert sorted(i for i, _ in drawn) == list(range(len(LABELS)))
    assert len({s for _, s in drawn}) == len(LABELS)


def test_class_balanced_draws_classes_about_equally():
    sampler = EpochSampler(LABELS * 50, "class_balanced", seed=0)
    labels = torch.tensor(LABELS * 50)[[i for i, _ in sampler]]
    shares = torch.bincount(labels, minlength=3).float() / len(labels)
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.03)  # uniform is 40:15:5 here


def test_skip_resumes_the_same_epoch_further_on():
    sampler = EpochSampler(LABELS, "random", seed=1)
    sampler.set_epoch(4)
    whole = items(sampler)
    sampler.skip = 17
    assert items(sampler) == whole[17:]
    assert items(sampler) == whole  # a skip applies once


@pytest.mark.parametrize("name", ["random", "class_balanced"])
def test_shards_are_disjoint_equal_and_cover_the_epoch(name):
    whole = items(EpochSampler(LABELS, name, seed=5))
    shards = []
    for rank in range(3):
        sampler = EpochSampler(LABELS, name, seed=5)
        sampler.shard(rank, 3)
        shards.append(items(sampler))
        assert len(sampler) == len(shards[-1]) == len(LABELS) // 3
    positions = [set(range(rank, len(LABELS), 3)) for rank in range(3)]
    for rank, shard in enumerate(shards):
        assert shard == [whole[p] for p in sorted(positions[rank])]
    if name == "random":  # without replacement the images themselves are disjoint
        seen = [{i for i, _ in shard} for shard in shards]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(LABELS).shard(2, 2)


def test_an_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="'square'"):
        EpochSampler(LABELS, "square")
