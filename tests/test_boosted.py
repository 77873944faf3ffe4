"""Boosted contrastive learning (Zhou et al., ICML 2022): the momentum loss and its score
against their equations, the per-image NT-Xent, RandAugment at each image's strength, and a
pre-training whose views follow what it has not yet memorised."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from short_runs import SHORT, last_states, uninterrupted_and_resumed
from torchvision.transforms import v2

from longtail.data import DataSplits, LabeledImages, LongTailDataModule
from longtail.data.batch_augment import StrengthRandAugment
from longtail.losses.memorization import MomentumLoss
from longtail.losses.selfsupervised import ntxent_per_image


def centred_scores(averages):
    """M_i = (1 + (L_i - mean L) / max_j |L_j - mean L|) / 2 (the paper's normalisation)."""
    mean = sum(averages) / len(averages)
    largest = max(abs(a - mean) for a in averages)
    return [(1 + (a - mean) / largest) / 2 for a in averages]


def test_the_momentum_loss_averages_each_images_epoch_losses_and_scores_them_centred():
    memory = MomentumLoss(5, beta=0.9)
    memory.start_epoch(0)
    memory.record(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    memory.start_epoch(0)  # resumed within the epoch: nothing is folded
    memory.record(torch.tensor([3]), torch.tensor([4.0]))
    assert torch.equal(memory.scores(), torch.zeros(5))  # before the first epoch is folded: no boost
    memory.start_epoch(1)  # image 4 was not seen: it is taken at the mean
    expected = centred_scores([1.0, 2.0, 3.0, 4.0]) + [0.5]
    torch.testing.assert_close(memory.scores(), torch.tensor(expected))
    memory.record(torch.tensor([0, 4]), torch.tensor([5.0, 6.0]))
    memory.start_epoch(2)
    averages = [0.9 * 1.0 + 0.1 * 5.0, 2.0, 3.0, 4.0, 6.0]  # image 4's first loss starts its average
    torch.testing.assert_close(memory.average, torch.tensor(averages))
    torch.testing.assert_close(memory.scores(), torch.tensor(centred_scores(averages)))
    with pytest.raises(ValueError, match="indices"):
        memory.record(torch.tensor([0, 1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="behind"):
        memory.start_epoch(1)


def test_an_image_drawn_twice_in_an_epoch_counts_its_mean_loss_and_half_precision_keeps_the_average_moving():
    memory = MomentumLoss(3, beta=0.97).to(torch.bfloat16)  # as a module cast to bf16-true is
    assert memory.average.dtype == memory.total.dtype == torch.float32
    memory.record(torch.tensor([0, 0, 1]), torch.tensor([2.0, 4.0, 6.0]))  # drawn with replacement
    memory.start_epoch(1)
    torch.testing.assert_close(memory.average[:2], torch.tensor([3.0, 6.0]))
    memory.record(torch.tensor([1]), torch.tensor([5.8]))
    memory.start_epoch(2)
    assert memory.average[1].item() == pytest.approx(0.97 * 6.0 + 0.03 * 5.8, abs=1e-5)  # bf16 would stay at 6


def test_each_images_nt_xent_is_its_two_anchors_terms_and_their_mean_is_simclrs_loss():
    from lightly.loss import NTXentLoss

    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    z = F.normalize(torch.cat([first, second]).double(), dim=1)
    n, temperature = 6, 0.3
    terms = []
    for i in range(2 * n):  # eq. 1 of Chen et al., one anchor at a time
        pair = (i + n) % (2 * n)
        others = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i)
        terms.append(-math.log(math.exp(float(z[i] @ z[pair]) / temperature) / others))
    per_image = ntxent_per_image(first, second, temperature)
    expected = [(terms[i] + terms[i + n]) / 2 for i in range(n)]
    torch.testing.assert_close(per_image.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert per_image.mean().item() == pytest.approx(NTXentLoss(temperature=temperature)(first, second).item(),
                                                    rel=1e-5)
    # its mean trains boosted SimCLR: the gradients are those of lightly's NT-Xent
    mine = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    theirs = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    ntxent_per_image(*mine, temperature).mean().backward()
    NTXentLoss(temperature=temperature)(*theirs).backward()
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the similarities stay float32
        assert ntxent_per_image(first, second, temperature).dtype == torch.float32
    with pytest.raises(ValueError, match="one shape"):
        ntxent_per_image(first, second[:5], temperature)


def randaugment_reference(image, name, magnitude):
    """torchvision's RandAugment operation on one image."""
    rand = v2.RandAugment()
    return rand._apply_image_or_video_transform(image, name, magnitude, interpolation=rand.interpolation,
                                                fill=rand._fill)


def test_each_image_gets_torchvisions_randaugment_at_its_own_strength():
    """The draws, read again from the same seed: per image and operation, which one, whether
    it applies (probability: the image's strength), its magnitude bin (strength times a
    uniform, of 30) and its sign. torchvision's operations image by image give the batch."""
    generator = torch.Generator().manual_seed(4)
    batch = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    strength = torch.linspace(0, 1, 64)
    augment = StrengthRandAugment(num_ops=2)
    torch.manual_seed(7)
    out = augment(batch, strength)
    torch.manual_seed(7)
    space = v2.RandAugment._AUGMENTATION_SPACE
    names = list(space)
    operation = torch.randint(len(names), (64, 2))
    applies = torch.rand(64, 2) < strength[:, None]
    level = (strength[:, None] * torch.rand(64, 1) * 30).round().long().expand(64, 2)  # one u per image
    negated = torch.rand(64, 2) < 0.5
    expected, used = [], set()
    for i, image in enumerate(batch):
        for step in range(2):
            if not applies[i, step]:
                continue
            name = names[operation[i, step]]
            bins, signed = space[name]
            values = bins(31, 32, 32)
            magnitude = 0.0 if values is None else float(values[level[i, step]])
            image = randaugment_reference(image, name, -magnitude if signed and negated[i, step] else magnitude)
            used.add(name)
        expected.append(image)
    equal = (out == torch.stack(expected)).flatten(1).float().mean(1)
    assert equal.min() > 0.98 and equal.mean() > 0.998  # the geometric operations' ties, at most
    assert len(used) >= 8
    assert torch.equal(out[0], batch[0])  # strength 0: untouched
    assert torch.equal(augment(batch, torch.zeros(64)), batch)


def test_the_data_module_boosts_each_training_image_at_its_own_strength_and_gives_its_index():
    rng = np.random.default_rng(2)
    images = LabeledImages(rng.integers(0, 256, (32, 12, 12, 3), dtype=np.uint8), np.arange(32) % 4,
                           ["a", "b", "c", "d"])
    data = LongTailDataModule(DataSplits(train=images, test=images), views=["standard"], batch_size=16,
                              num_workers=0, seed=1)
    loader_batch = next(iter(data.train_dataloader()))
    plain, labels, indices = data.finish(loader_batch)
    assert torch.equal(labels, torch.as_tensor(images.labels[indices.numpy()]))
    strength = (torch.arange(32) % 2).float()  # the odd images at full strength
    data.boost(strength)
    boosted, _, same_indices = data.finish(loader_batch)
    assert torch.equal(indices, same_indices)
    odd = indices % 2 == 1
    assert torch.equal(boosted[~odd], plain[~odd])
    changed = (boosted[odd] != plain[odd]).flatten(1).any(1).float().mean()
    assert changed > 0.6  # some draws change nothing: Identity, or a magnitude of 0
    data.boost(None)
    assert torch.equal(data.finish(loader_batch)[0], plain)
    with pytest.raises(ValueError, match="a strength per training image"):
        data.boost(torch.ones(5))


def test_a_boosted_pretraining_scores_every_image_it_saw_and_resumes_bit_identical(tmp_path):
    from lightning.pytorch.callbacks import Callback

    strengths = []

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                boosted = trainer.datamodule.boosted
                strengths.append(None if boosted is None else boosted[1].clone())

    args = [*SHORT, "method.name=boosted_simclr", "data.views=[sim, sim]", "trainer.checkpoint_every=4"]
    full_dir, full, resumed_dir, resumed, stopped_at = uninterrupted_and_resumed(tmp_path, args, 14, [Watch()])
    first, second = strengths[:2]
    assert first.count_nonzero() == 0  # the first epoch: plain views
    state, resumed_state = last_states(full_dir, resumed_dir)
    steps_per_epoch = full["steps"] // 2
    averaged = state["momentum_loss.averaged"]
    assert averaged.sum() == steps_per_epoch * 64  # every image of the first epoch's batches
    scores = second[averaged]  # in [0, 1], one end reached: the largest deviation from the mean
    assert scores.min() >= 0 and scores.max() <= 1 and 1 in (round(1 - scores.min().item(), 6),
                                                               round(scores.max().item(), 6))
    assert scores.std() > 0.05
    assert torch.equal(second[~averaged], torch.full_like(second[~averaged], 0.5))
    assert state["momentum_loss.count"].sum() == steps_per_epoch * 64  # the second epoch's, not yet folded

    assert stopped_at["global_step"] > steps_per_epoch  # within the second, boosted, epoch
    assert resumed["test"] == full["test"]
    assert all(torch.equal(state[k], resumed_state[k]) for k in state)
