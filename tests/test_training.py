"""Short training runs on synthetic images: the methods learn, the Python API composes."""

import lightning as L
import numpy as np
import pytest
import torch

from longtail.data import DataSplits, LabeledImages, LongTailDataModule
from longtail.methods import BCL, Supervised
from longtail.optim import OptimConfig

COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]])


def synthetic(counts, seed):
    """Each class a colour, in noise: learnable, and not by the prior alone."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    noise = rng.normal(0, 40, size=(len(labels), 8, 8, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return LabeledImages(images, labels.astype(np.int64), ["red", "green", "blue", "yellow"])


@pytest.fixture(autouse=True)
def seeded():
    L.seed_everything(0, verbose=False)


def fit_and_test(method, views, train_counts, epochs):
    splits = DataSplits(train=synthetic(train_counts, 1), test=synthetic([25] * 4, 2))
    data = LongTailDataModule(splits, views=views, batch_size=32, num_workers=0)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(method, datamodule=data)
    trainer.test(method, datamodule=data, verbose=False)
    return method.test_results


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted", "balanced_softmax"])
def test_single_branch_methods_learn_well_above_chance(loss):
    counts = [120, 60, 30, 15]
    optim = OptimConfig(lr=0.1, epochs=6, warmup_epochs=1)
    method = Supervised(4, counts, loss=loss, optim=optim)
    results = fit_and_test(method, ["standard"], counts, epochs=6)
    assert results["overall"] > 75  # chance is 25
    assert results["few"] is not None and results["many"] is not None


def test_bcl_learns_well_above_chance():
    counts = [120, 60, 30, 15]
    optim = OptimConfig(lr=0.1, epochs=6, warmup_epochs=1)
    method = BCL(4, counts, optim=optim, feat_dim=32, hidden_dim=64)
    results = fit_and_test(method, ["standard", "standard", "standard"], counts, epochs=6)
    assert results["overall"] > 75


def test_bcl_losses_are_weighted_by_alpha_and_beta():
    counts = [40, 20, 10, 5]
    torch.manual_seed(0)
    views = torch.randn(8, 3, 3, 8, 8)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = {}
    for alpha, beta in [(1.0, 1.0), (2.0, 0.5)]:
        torch.manual_seed(1)
        method = BCL(4, counts, alpha=alpha, beta=beta, feat_dim=16, hidden_dim=32)
        method.train()
        torch.manual_seed(2)
        terms[(alpha, beta)] = method.training_losses(views, targets)
    plain, weighted = terms[(1.0, 1.0)], terms[(2.0, 0.5)]
    assert weighted["classifier"].item() == pytest.approx(2.0 * plain["classifier"].item(), rel=1e-5)
    assert weighted["contrastive"].item() == pytest.approx(0.5 * plain["contrastive"].item(), rel=1e-5)


def test_bcl_prototypes_are_the_projected_classifier_weights():
    method = BCL(4, [40, 20, 10, 5], feat_dim=16, hidden_dim=32)
    method.eval()
    prototypes = torch.nn.functional.normalize(method.prototype_projection(method.classifier.weight), dim=1)
    assert prototypes.shape == (4, 16)
    # a change of the classifier weights moves the prototypes: the contrastive branch
    # trains the classifier's geometry
    with torch.no_grad():
        method.classifier.weight.add_(1.0)
    moved = torch.nn.functional.normalize(method.prototype_projection(method.classifier.weight), dim=1)
    assert not torch.allclose(prototypes, moved)
