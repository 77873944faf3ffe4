"""The re-balancing family in training: every loss trains from the config, deferred
re-weighting switches at its epoch, LDAM is kept from a second scale."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

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


def test_a_drw_run_resumed_mid_epoch_after_the_switch_ends_bit_identical(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    class Crash(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 14:
                raise RuntimeError("crash")

    monkeypatch.chdir(tmp_path)
    overrides = QUICK + ["method.name=ce", "method.drw_epoch=1", "optim.epochs=2", "trainer.deterministic=true",
                         "trainer.checkpoint_every=4"]
    full_dir, full = train(load_config([], overrides + ["out_dir=full"]), progress=False)
    with pytest.raises(RuntimeError, match="crash"):
        train(load_config([], overrides + ["out_dir=crashed"]), progress=False, callbacks=[Crash()])
    (crashed,) = (tmp_path / "crashed").iterdir()
    assert torch.load(crashed / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 12  # epoch 1 of 9 steps
    resumed_dir, resumed = train(None, progress=False, resume=crashed)
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
