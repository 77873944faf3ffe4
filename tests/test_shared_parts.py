"""The parts the families share: contrastive_loss against a separate reference set, the
labelled queue, the momentum encoder, per-class weights of the re-balancing losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from longtail.losses import (
    BalancedContrastiveLoss,
    BalancedSoftmaxLoss,
    ClassBalancedQueue,
    CrossEntropyLoss,
    LabelledQueue,
    LogitAdjustedLoss,
    SupConLoss,
    contrastive_loss,
)
from longtail.models import MomentumEncoder


def unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def reference_loss(queries, labels, references, reference_labels, temperature, own):
    """Per anchor: positives are its own key and the references of its class (labels of 0
    or more); the denominator runs over every reference (MoCo's eq. 1, with SupCon's mean
    over the positives)."""
    losses = []
    for i, query in enumerate(queries):
        terms = [math.exp(float(query @ r) / temperature) for r in references]
        positives = [j for j in range(len(references))
                     if j == own[i] or (labels[i] >= 0 and reference_labels[j] == labels[i])]
        losses.append(-sum(math.log(terms[p] / sum(terms)) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_moco_infonce_is_the_own_key_against_all_references():
    queries, keys, queue = unit(6, 8, seed=0), unit(6, 8, seed=1), unit(10, 8, seed=2)
    unlabelled = torch.full((6,), -1)
    references = torch.cat([keys, queue])
    loss = contrastive_loss(queries, unlabelled, references, torch.full((16,), -1), 0.2,
                            own=torch.arange(6), own_is_positive=True)
    expected = reference_loss(queries, [-1] * 6, references, [-1] * 16, 0.2, list(range(6)))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_supervised_keys_and_queue_count_the_own_key_and_the_class_as_positives():
    queries, keys, queue = unit(6, 8, seed=3), unit(6, 8, seed=4), unit(10, 8, seed=5)
    labels, queue_labels = torch.tensor([0, 0, 1, 2, 2, 3]), torch.tensor([0, 1, 1, 2, 3, 3, 3, 0, -1, -1])
    references, reference_labels = torch.cat([keys, queue]), torch.cat([labels, queue_labels])
    loss = contrastive_loss(queries, labels, references, reference_labels, 0.1, own=torch.arange(6),
                            own_is_positive=True)
    expected = reference_loss(queries, labels.tolist(), references, reference_labels.tolist(), 0.1, list(range(6)))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_anchors_inside_the_references_are_left_out_as_supcon_leaves_them():
    features, targets = unit(5, 2, 8, seed=6), torch.tensor([0, 1, 0, 2, 1])
    anchors = features.transpose(0, 1).reshape(-1, 8)
    labels = targets.repeat(2)
    own = torch.arange(10)
    assert contrastive_loss(anchors, labels, anchors, labels, 0.1, own=own).item() == pytest.approx(
        SupConLoss(0.1)(features, targets).item(), rel=1e-12)


def test_supcon_without_any_positive_is_zero_with_a_warning_and_keeps_its_graph():
    features = unit(4, 1, 8, seed=7).requires_grad_(True)
    with pytest.warns(UserWarning, match="no anchor"):
        loss = SupConLoss()(features, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_bcl_keeps_float32_prototypes_whole_beside_bfloat16_features():
    from test_losses import bcl_reference

    features = unit(6, 2, 16, seed=8).to(torch.bfloat16)
    prototypes = unit(3, 16, seed=9).float()
    targets = torch.tensor([0, 1, 2, 0, 1, 1])
    loss = BalancedContrastiveLoss(3, 0.1)(features, targets, prototypes)
    exact = bcl_reference(features.double(), targets, prototypes.double(), 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(exact.item(), abs=2e-5)


def test_the_queue_keeps_the_last_keys_oldest_first_in_its_buffers():
    queue = LabelledQueue(size=5, dim=2)
    assert queue()[0].shape == (0, 2)  # nothing written yet
    for start in (0, 3, 6):
        keys = torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2)
        queue.push(keys, torch.arange(start, start + 3))
    keys, labels = queue()
    assert labels.tolist() == [4, 5, 6, 7, 8]
    assert keys[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    queue.push(torch.zeros(7, 2), torch.arange(100, 107))  # more than it holds: the last 5
    assert queue()[1].tolist() == [102, 103, 104, 105, 106]
    restored = LabelledQueue(size=5, dim=2)
    restored.load_state_dict(queue.state_dict())
    assert [t.tolist() for t in restored()] == [t.tolist() for t in queue()]
    with pytest.raises(ValueError, match="keys"):
        queue.push(torch.zeros(2, 3), torch.zeros(2))


def test_held_keys_are_pushed_after_the_step_unlabelled_unless_labels_were_held():
    queue = LabelledQueue(size=4, dim=2)
    queue.hold(torch.ones(2, 2))
    assert queue()[0].shape == (0, 2)  # held, not yet in the queue the step's loss reads
    queue.push_held()
    assert queue()[1].tolist() == [-1, -1]
    with pytest.raises(RuntimeError, match="no keys are held"):
        queue.push_held()  # each held batch is pushed once
    per_class = ClassBalancedQueue(num_classes=2, per_class=2, dim=2)
    with pytest.raises(ValueError, match="labels"):
        per_class.hold(torch.ones(2, 2))
    per_class.hold(torch.ones(2, 2), torch.tensor([1, 1]))
    per_class.push_held()
    assert per_class()[1].tolist() == [1, 1]


def test_the_momentum_encoder_moves_each_weight_by_one_minus_m_toward_the_online_one():
    online = torch.nn.Linear(3, 2)
    encoder = MomentumEncoder(online, momentum=0.9, final_momentum=1.0)
    start = encoder.encoder.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    encoder.update(online, progress=0.0)
    torch.testing.assert_close(encoder.encoder.weight, 0.9 * start + 0.1 * online.weight.detach())
    # BYOL's schedule: 1 - (1 - m0) (cos(pi p) + 1) / 2
    for progress in (0.0, 0.25, 0.5, 1.0):
        expected = 1 - 0.1 * (math.cos(math.pi * progress) + 1) / 2
        assert encoder.momentum_at(progress) == pytest.approx(expected)
    assert MomentumEncoder(online, 0.99).momentum_at(0.7) == 0.99
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder(torch.randn(4, 3)).requires_grad is False
    assert "encoder.weight" in encoder.state_dict()


def test_the_momentum_encoder_normalises_a_training_batch_in_groups_of_at_most_group():
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    encoder = MomentumEncoder(online, momentum=0.9, group=3)
    inputs = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    averaged = encoder.encoder
    for count, sizes in ((7, [3, 2, 2]), (5, [3, 2]), (4, [2, 2]), (3, [3])):  # two groups at least, of two or more
        parts = inputs[:count].split(sizes)
        torch.testing.assert_close(encoder(inputs[:count]), torch.cat([averaged(part) for part in parts]))
    encoder.eval()  # running statistics: groups change nothing
    torch.testing.assert_close(encoder(inputs), averaged(inputs))
    with pytest.raises(ValueError, match="group"):
        MomentumEncoder(online, group=1)


@pytest.mark.parametrize("make", [
    lambda counts, weight: CrossEntropyLoss(counts, weight=weight),
    lambda counts, weight: LogitAdjustedLoss(counts, tau=1.0, weight=weight),
    lambda counts, weight: BalancedSoftmaxLoss(counts, weight=weight),
])
def test_per_class_weights_weigh_each_sample_by_its_class(make):
    counts, weight = [50, 20, 5], [0.2, 1.0, 3.0]
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 2, 0, 1, 0, 2])
    plain = make(counts, None)
    per_sample = torch.stack([plain(logits[i:i + 1], targets[i:i + 1]) for i in range(8)])
    w = torch.tensor(weight, dtype=torch.float64)[targets]
    assert make(counts, weight)(logits, targets).item() == pytest.approx(float((w * per_sample).sum() / w.sum()))
    # equal weights are no weights
    assert make(counts, [2.0] * 3)(logits, targets).item() == pytest.approx(plain(logits, targets).item())
    assert "weight" not in make(counts, weight).state_dict()  # set by a method, never saved
    with pytest.raises(ValueError, match="weight"):
        make(counts, [-1.0, 1.0, 1.0])
