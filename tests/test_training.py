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
    optim = OptimConfig(lr=0.1, epochs=10, warmup_epochs=1)
    method = Supervised(4, counts, loss=loss, optim=optim)
    results = fit_and_test(method, ["standard"], counts, epochs=10)
    assert results["overall"] > 75  # chance is 25
    assert results["few"] is not None and results["many"] is not None


def test_bcl_learns_well_above_chance():
    counts = [120, 60, 30, 15]
    optim = OptimConfig(lr=0.1, epochs=10, warmup_epochs=1)
    method = BCL(4, counts, optim=optim, feat_dim=32, hidden_dim=64)
    results = fit_and_test(method, ["standard", "standard", "standard"], counts, epochs=10)
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


class NaNAtSteps(Supervised):
    """Cross-entropy whose loss is NaN at the given optimiser steps."""

    def __init__(self, nan_steps, **kwargs):
        super().__init__(4, [120, 60, 30, 15], **kwargs)
        self.nan_steps = set(nan_steps)

    def training_losses(self, views, targets):
        terms = super().training_losses(views, targets)
        if self.global_step in self.nan_steps:
            terms["classifier"] = terms["classifier"] * float("nan")
        return terms


def test_a_nonfinite_loss_stops_the_run_naming_the_step_and_term():
    from longtail.methods import NonFiniteLossError

    method = NaNAtSteps({3}, optim=OptimConfig(lr=0.1, epochs=2, warmup_epochs=0))
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*'classifier' is nan"):
        fit_and_test(method, ["standard"], [120, 60, 30, 15], epochs=2)


def test_skip_nonfinite_skips_up_to_n_steps_and_counts_them():
    method = NaNAtSteps({3, 5}, optim=OptimConfig(lr=0.1, epochs=2, warmup_epochs=0))
    method.max_skipped_steps = 2
    before = {k: v.clone() for k, v in method.state_dict().items()}
    results = fit_and_test(method, ["standard"], [120, 60, 30, 15], epochs=2)
    assert method.skipped_steps == 2
    assert results["overall"] is not None
    weights = method.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], weights[k]) for k in before)


def test_what_a_model_draws_depends_on_seed_and_step_only():
    from types import SimpleNamespace

    from longtail.run import StepSeeds

    seeds = StepSeeds(7)
    draws = {}
    for step in (5, 6, 5):
        torch.rand(3)  # whatever happened before: a resumed run draws differently
        seeds.on_train_batch_start(SimpleNamespace(global_step=step), None, None, 0)
        draws.setdefault(step, []).append(torch.rand(4))
    assert torch.equal(draws[5][0], draws[5][1])
    assert not torch.equal(draws[5][0], draws[6][0])
