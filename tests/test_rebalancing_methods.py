"""The re-balancing family in training: every loss trains from the config, deferred
re-weighting switches at its epoch, LDAM is kept from a second scale."""

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from short_runs import uninterrupted_and_resumed

from longtail.config import load_config
from longtail.losses import CLASSIFICATION_LOSSES
from longtail.losses.reweighting import effective_number_weights
from longtail.run import train

QUICK = ["data.num_workers=0", "optim.warmup_epochs=0", "data.batch_size=64"]


class RecordLossWeight(Callback):
    """The classifier loss's ``weight`` at the first batch of every epoch."""

    def __init__(self):
        self.weights = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        weight = pl_module.classifier_loss.weight
        self.weights.setdefault(trainer.current_epoch, None if weight is None else weight.clone())


def test_deferred_re_weighting_switches_to_class_balanced_weights_at_its_epoch(tmp_path):
    config = load_config([], QUICK + ["method.name=supervised", "loss.name=ldam", "model.classifier=normalized",
                                      "method.drw_epoch=2", "method.drw_beta=0.999", "optim.epochs=3",
                                      f"out_dir={tmp_path}"])
    recorder = RecordLossWeight()
    _, metrics = train(config, progress=False, callbacks=[recorder])
    assert recorder.weights[0] is None and recorder.weights[1] is None
    expected = effective_number_weights(metrics["train_counts"], 0.999)
    torch.testing.assert_close(recorder.weights[2], expected)
    assert expected[-1] > expected[0]  # the rarest class weighs most


def test_a_drw_run_resumed_mid_epoch_after_the_switch_ends_bit_identical(tmp_path):
    from safetensors.torch import load_file

    overrides = QUICK + ["method.name=ce", "method.drw_epoch=1", "optim.epochs=2", "trainer.deterministic=true",
                         "trainer.checkpoint_every=4"]
    full_dir, full, resumed_dir, resumed, stopped_at = uninterrupted_and_resumed(tmp_path, overrides, 14)
    assert stopped_at["global_step"] == 12  # epoch 1 of 9 steps, after the switch
    assert resumed["test"] == full["test"]
    a, b = load_file(full_dir / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("name", sorted(set(CLASSIFICATION_LOSSES) - {"ce", "logit_adjusted", "balanced_softmax"}))
def test_every_new_loss_trains_a_step_from_the_config(tmp_path, name):
    classifier = "normalized" if name == "ldam" else "linear"
    config = load_config([], QUICK + ["method.name=supervised", f"loss.name={name}", f"model.classifier={classifier}",
                                      "optim.epochs=1", f"out_dir={tmp_path}"])
    _, metrics = train(config, progress=False)
    assert 0 <= metrics["test"]["overall"] <= 100


def test_val_per_class_holds_a_balanced_split_out_before_the_long_tail():
    from longtail.data import read_splits

    plain = read_splits("digits")
    held = read_splits("digits", val_per_class=5)
    assert held.val.counts() == [5] * 10 and plain.val is None
    train_images = {bytes(image) for image in np.asarray(held.train.images)}
    assert not any(bytes(image) in train_images for image in np.asarray(held.val.images))
    assert held.train.counts()[0] > held.train.counts()[-1]  # still long-tailed after the hold-out


class RecordValidation(Callback):
    """Each validation pass's per-class accuracy, computed here from the outputs."""

    def __init__(self):
        self.accuracy, self._batches = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batches.append((outputs["logits"].argmax(1), outputs["targets"]))

    def on_validation_epoch_end(self, trainer, pl_module):
        predictions = torch.cat([p for p, _ in self._batches])
        targets = torch.cat([t for _, t in self._batches])
        self._batches = []
        if not trainer.sanity_checking:
            self.accuracy.append([(predictions[targets == c] == c).double().mean().item() for c in range(10)])


def difficulty_weights(accuracy, tau):
    raw = [(1 - a) ** tau for a in accuracy]
    return torch.tensor([w * len(raw) / sum(raw) for w in raw], dtype=torch.float32)


@pytest.mark.parametrize("sampler", ["random", "class_difficulty"])
def test_class_difficulty_weights_follow_the_held_out_accuracy(tmp_path, sampler):
    config = load_config([], QUICK + ["method.name=ce", "method.cdb_tau=1.5", "data.val_per_class=5",
                                      f"data.sampler={sampler}", "optim.epochs=2", f"out_dir={tmp_path}"])
    weights, validation = RecordLossWeight(), RecordValidation()

    class RecordSampler(Callback):
        def __init__(self):
            self.weights = {}

        def on_train_epoch_start(self, trainer, pl_module):
            self.weights[trainer.current_epoch] = trainer.datamodule.train_sampler.class_weights

    sampled = RecordSampler()
    train(config, progress=False, callbacks=[weights, validation, sampled])
    expected = difficulty_weights(validation.accuracy[0], 1.5)  # measured after epoch 0, used in epoch 1
    if sampler == "random":
        torch.testing.assert_close(weights.weights[0], torch.ones(10))
        torch.testing.assert_close(weights.weights[1], expected)
    else:
        assert weights.weights[1] is None  # the loss is left as it is
        torch.testing.assert_close(sampled.weights[1], expected)


def test_cdb_without_held_out_data_is_refused_by_name(tmp_path, capsys):
    from longtail.cli import main

    assert main(["train", "method.name=ce", "method.cdb_tau=1", *QUICK, "optim.epochs=1", f"out_dir={tmp_path}"]) == 2
    assert "data.val_per_class" in capsys.readouterr().err
