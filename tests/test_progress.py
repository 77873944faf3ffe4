"""The throughput a run reports: per-epoch rates, their median, kept across a resume."""

from types import SimpleNamespace

import pytest

from longtail import progress
from longtail.progress import Throughput


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=100.0)
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now.t)
    return now


def run_epochs(meter, clock, trainer, batch_seconds, batches=3, images=10, finish=True):
    meter.on_train_epoch_start(trainer, None)
    for index in range(batches):
        clock.t += batch_seconds
        meter.on_train_batch_end(trainer, None, None, (None, [0] * images), index)
    if finish:
        meter.on_train_epoch_end(trainer, None)


def test_the_rate_is_the_median_of_the_completed_epochs(clock):
    meter, trainer = Throughput(), SimpleNamespace(current_epoch=0)
    meter.on_fit_start(trainer, None)
    meter.on_train_start(trainer, None)
    for epoch, seconds in enumerate([1.0, 2.0, 8.0]):  # 10, 5 and 1.25 images per second
        trainer.current_epoch = epoch
        run_epochs(meter, clock, trainer, seconds)
        clock.t += 30  # validation and checkpoints: not training time
    assert meter.images_per_s == pytest.approx(5.0)
    trainer.current_epoch = 3
    run_epochs(meter, clock, trainer, 0.5)  # 20 images per second
    assert meter.images_per_s == pytest.approx((5.0 + 10.0) / 2)
    assert meter.wall_s == pytest.approx(3 * 1 + 3 * 2 + 3 * 8 + 3 * 30 + 3 * 0.5)


def test_a_resumed_run_reports_the_whole_run(clock):
    meter, trainer = Throughput(), SimpleNamespace(current_epoch=0)
    meter.on_fit_start(trainer, None)
    meter.on_train_start(trainer, None)
    run_epochs(meter, clock, trainer, 1.0)
    trainer.current_epoch = 1
    run_epochs(meter, clock, trainer, 1.0, batches=2, finish=False)  # killed after a checkpoint here
    state = meter.state_dict()
    clock.t += 1000  # the time between the kill and the resume is not the run's

    resumed = Throughput()
    resumed.load_state_dict(state)
    resumed.on_fit_start(trainer, None)
    resumed.on_train_start(trainer, None)
    clock.t += 4.0  # the rest of epoch 1: one batch, after the loader's start
    resumed.on_train_batch_end(trainer, None, None, (None, [0] * 10), 2)
    resumed.on_train_epoch_end(trainer, None)
    assert resumed.epochs[1][:2] == [30, pytest.approx(6.0)]
    assert resumed.images_per_s == pytest.approx((10.0 + 5.0) / 2)
    assert resumed.wall_s == pytest.approx(5.0 + 4.0)


def test_before_any_epoch_completes_the_rate_is_the_whole_run(clock):
    meter, trainer = Throughput(), SimpleNamespace(current_epoch=0)
    meter.on_fit_start(trainer, None)
    meter.on_train_start(trainer, None)
    run_epochs(meter, clock, trainer, 2.0, batches=2, finish=False)
    assert meter.images_per_s == pytest.approx(5.0)
