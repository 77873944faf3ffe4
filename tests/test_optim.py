"""The optimiser and its per-step schedule: linear warm-up, then cosine, step or constant."""

import math

import pytest
import torch
from torch import nn

from longtail.optim import OptimConfig


def test_defaults():
    optim = OptimConfig()
    assert optim.name == "sgd"
    assert optim.lr == 0.1 and optim.momentum == 0.9 and optim.weight_decay == 5e-4
    assert optim.warmup_epochs == 5 and optim.schedule == "cosine"
    assert optim.milestones == [] and optim.gamma == 0.1
    optim.validate()
    # every instance has its own milestones list
    optim.milestones.append(3)
    assert OptimConfig().milestones == []


# --- lr_factor ---------------------------------------------------------------------------


def test_the_step_schedule_of_the_bcl_cifar_recipe():
    optim = OptimConfig(lr=0.15, epochs=200, warmup_epochs=5, schedule="step", milestones=[160, 180])
    spe = 10
    # warm-up: (step + 1) / (5 * 10)
    assert optim.lr_factor(0, spe) == pytest.approx(1 / 50)
    assert optim.lr_factor(24, spe) == pytest.approx(25 / 50)
    assert optim.lr_factor(49, spe) == pytest.approx(1.0)
    # after warm-up: gamma ** (milestones passed)
    assert optim.lr_factor(50, spe) == pytest.approx(1.0)
    assert optim.lr_factor(100 * spe, spe) == pytest.approx(1.0)
    assert optim.lr_factor(160 * spe - 1, spe) == pytest.approx(1.0)
    assert optim.lr_factor(160 * spe, spe) == pytest.approx(0.1)
    assert optim.lr_factor(170 * spe, spe) == pytest.approx(0.1)
    assert optim.lr_factor(180 * spe, spe) == pytest.approx(0.01)
    assert optim.lr_factor(190 * spe, spe) == pytest.approx(0.01)
    assert optim.lr_factor(200 * spe - 1, spe) == pytest.approx(0.01)


def test_warmup_starts_at_one_over_its_length_in_steps():
    for spe in (1, 7, 391):
        optim = OptimConfig(epochs=200, warmup_epochs=5)
        assert optim.lr_factor(0, spe) == pytest.approx(1 / (5 * spe))


def test_step_schedule_with_another_gamma():
    optim = OptimConfig(epochs=6, warmup_epochs=1, schedule="step", milestones=[2, 4], gamma=0.5)
    spe = 4
    assert optim.lr_factor(1 * spe, spe) == pytest.approx(1.0)
    assert optim.lr_factor(3 * spe, spe) == pytest.approx(0.5)
    assert optim.lr_factor(4 * spe, spe) == pytest.approx(0.25)
    assert optim.lr_factor(5 * spe + 3, spe) == pytest.approx(0.25)


def test_the_cosine_schedule():
    optim = OptimConfig(epochs=60, warmup_epochs=5, schedule="cosine")
    spe = 4
    assert optim.lr_factor(0, spe) == pytest.approx(1 / 20)
    assert optim.lr_factor(19, spe) == pytest.approx(1.0)  # last warm-up step
    assert optim.lr_factor(5 * spe, spe) == pytest.approx(1.0)  # cos(0)
    assert optim.lr_factor(130, spe) == pytest.approx(0.5)  # epoch 32.5: half way, cos(pi / 2)
    # epoch 16: progress 11 / 55 = 0.2
    assert optim.lr_factor(16 * spe, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    # epoch 46.25: progress 0.75 -> (1 - sqrt(2) / 2) / 2
    assert optim.lr_factor(185, spe) == pytest.approx((1 - math.sqrt(2) / 2) / 2)
    assert optim.lr_factor(60 * spe, spe) == pytest.approx(0.0, abs=1e-12)
    assert optim.lr_factor(70 * spe, spe) == pytest.approx(0.0, abs=1e-12)  # stays at 0


def test_cosine_without_warmup():
    optim = OptimConfig(epochs=10, warmup_epochs=0, schedule="cosine")
    spe = 10
    assert optim.lr_factor(0, spe) == pytest.approx(1.0)
    assert optim.lr_factor(5 * spe, spe) == pytest.approx(0.5)
    assert optim.lr_factor(10 * spe, spe) == pytest.approx(0.0, abs=1e-12)


def test_the_constant_schedule():
    optim = OptimConfig(epochs=10, warmup_epochs=2, schedule="constant", milestones=[3])
    spe = 5
    assert optim.lr_factor(0, spe) == pytest.approx(1 / 10)
    assert optim.lr_factor(4, spe) == pytest.approx(5 / 10)
    for step in (10, 20, 49, 1000):
        assert optim.lr_factor(step, spe) == pytest.approx(1.0)


def test_a_run_shorter_than_its_warmup_warms_up_over_the_whole_run():
    optim = OptimConfig(epochs=3, warmup_epochs=5, schedule="cosine")
    spe = 2
    # warm-up = min(5, 3) = 3 epochs = 6 steps
    assert optim.lr_factor(0, spe) == pytest.approx(1 / 6)
    assert optim.lr_factor(2, spe) == pytest.approx(3 / 6)
    assert optim.lr_factor(5, spe) == pytest.approx(1.0)
    # at the end of the run: progress 0 / max(0, 1) -> cos(0)
    assert optim.lr_factor(6, spe) == pytest.approx(1.0)


# --- validate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"lr": 0.0},
        {"lr": -0.1},
        {"epochs": 0},
        {"epochs": -5},
        {"schedule": "linear"},
        {"schedule": "poly"},
        {"name": "adam"},
        {"name": "rmsprop"},
    ],
)
def test_validate_rejects_bad_settings(changes):
    with pytest.raises(ValueError):
        OptimConfig(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [{}, {"name": "adamw"}, {"schedule": "step", "milestones": [3]}, {"schedule": "constant"},
     {"epochs": 1, "lr": 1e-6}],
)
def test_validate_accepts_good_settings(changes):
    assert OptimConfig(**changes).validate() is None


# --- build -------------------------------------------------------------------------------


def _run_scheduler(optimizer, scheduler, steps):
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_build_gives_sgd_whose_rate_follows_the_schedule():
    model = nn.Linear(3, 2)
    optim = OptimConfig(lr=0.2, epochs=4, warmup_epochs=1, schedule="step", milestones=[2, 3])
    optimizer, scheduler = optim.build(model.parameters(), steps_per_epoch=3)
    assert isinstance(optimizer, torch.optim.SGD)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert group["initial_lr"] == pytest.approx(0.2)
    rates = _run_scheduler(optimizer, scheduler, 12)
    expected = [
        0.2 / 3, 0.4 / 3, 0.2,  # epoch 0: warm-up
        0.2, 0.2, 0.2,  # epoch 1
        0.02, 0.02, 0.02,  # epoch 2: one milestone passed
        0.002, 0.002, 0.002,  # epoch 3: two
    ]
    assert rates == pytest.approx(expected)


def test_build_gives_adamw_with_the_cosine_schedule():
    model = nn.Linear(3, 2)
    optim = OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, epochs=2, warmup_epochs=0)
    optimizer, scheduler = optim.build(model.parameters(), steps_per_epoch=2)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    rates = _run_scheduler(optimizer, scheduler, 5)
    # progress 0, 1/4, 1/2, 3/4, 1 of the cosine
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert rates[2] == pytest.approx(0.5e-3)
