import pytest
import torch

from longtail.data import SAMPLERS, EpochSampler

LABELS = [0] * 40 + [1] * 15 + [2] * 5


def items(sampler):
    return list(sampler)


@pytest.mark.parametrize("name", list(SAMPLERS))
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


@pytest.mark.parametrize("name", list(SAMPLERS))
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


def class_shares(name, counts, epoch, epochs, repeats=40):
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    drawn = []
    for seed in range(repeats):
        sampler = EpochSampler(labels, name, seed=seed, epochs=epochs)
        sampler.set_epoch(epoch)
        drawn += [labels[i] for i, _ in sampler]
    return torch.bincount(torch.tensor(drawn), minlength=len(counts)).double() / len(drawn)


@pytest.mark.parametrize("name,epoch,expected", [
    ("square_root", 0, [20 / 35, 10 / 35, 5 / 35]),  # sqrt of 400, 100, 25
    ("class_balanced", 0, [1 / 3, 1 / 3, 1 / 3]),
    ("progressive", 0, [400 / 525, 100 / 525, 25 / 525]),  # t = 0: instance-balanced
    ("progressive", 2, [(400 / 525 + 1 / 3) / 2, (100 / 525 + 1 / 3) / 2, (25 / 525 + 1 / 3) / 2]),  # t/T = 1/2
    ("progressive", 3, [400 / 525 / 4 + 1 / 4, 100 / 525 / 4 + 1 / 4, 25 / 525 / 4 + 1 / 4]),  # t/T = 3/4
])
def test_class_frequencies_over_many_draws_match_the_definition(name, epoch, expected):
    shares = class_shares(name, [400, 100, 25], epoch, epochs=4)
    torch.testing.assert_close(shares, torch.tensor(expected, dtype=torch.float64), atol=0.012, rtol=0)


def test_class_aware_samplers_draw_the_images_of_a_class_uniformly():
    labels = [0] * 300 + [1] * 3
    drawn = torch.tensor([i for seed in range(60) for i, _ in EpochSampler(labels, "square_root", seed=seed)])
    head = torch.bincount(drawn[drawn < 300], minlength=300).double()
    tail = torch.bincount(drawn[drawn >= 300] - 300, minlength=3).double()
    assert head.std() / head.mean() < 0.2 and tail.std() / tail.mean() < 0.1


def test_class_difficulty_draws_the_classes_by_the_weights_it_is_given():
    labels = [0] * 400 + [1] * 100 + [2] * 25
    sampler = EpochSampler(labels, "class_difficulty", seed=0)
    sampler.class_weights = torch.tensor([0.5, 1.0, 2.5])
    drawn = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn += [labels[i] for i, _ in sampler]
    shares = torch.bincount(torch.tensor(drawn)).double() / len(drawn)
    torch.testing.assert_close(shares, torch.tensor([0.125, 0.25, 0.625], dtype=torch.float64), atol=0.012, rtol=0)
