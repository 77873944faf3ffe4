"""The contrastive family as methods: what each trains and updates, the two-stage
protocol, and a PaCo run stopped mid-epoch and resumed, bit-identical."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from short_runs import SHORT, last_states, uninterrupted_and_resumed

from longtail.config import load_config
from longtail.errors import ConfigError
from longtail.run import train
TWO_VIEWS = "data.views=[standard, standard]"
THREE_VIEWS = "data.views=[standard, standard, standard]"


def run(tmp_path, *overrides, callbacks=()):
    config = load_config([], [*SHORT, f"out_dir={tmp_path}", *overrides])
    return train(config, progress=False, callbacks=list(callbacks))


class Watch(Callback):
    """Keeps the method's state at the start and after the last step."""

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        self.end = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_paco_fills_its_queue_and_moves_its_key_encoder_toward_the_online_weights(tmp_path):
    watch = Watch()
    run(tmp_path, "method.name=paco", TWO_VIEWS, "method.queue_size=100", "method.momentum=0.9", callbacks=[watch])
    assert watch.start["queue.written"].sum() == 0 and watch.end["queue.written"].all()
    assert set(watch.end["queue.labels"].tolist()) == set(range(10))
    name = next(k for k in watch.end if k.startswith("key_encoder.encoder.backbone.") and k.endswith("weight"))
    online = name.replace("key_encoder.encoder.", "")
    assert torch.equal(watch.start[name], watch.start[online])  # a copy at the start
    assert not torch.equal(watch.end[name], watch.start[name])  # that followed the online weights
    assert not torch.equal(watch.end[name], watch.end[online])  # and lags them


def test_gpaco_has_no_momentum_encoder_and_queues_the_second_views(tmp_path):
    watch = Watch()
    run(tmp_path, "method.name=gpaco", TWO_VIEWS, "method.queue_size=64", callbacks=[watch])
    assert not any(k.startswith("key_encoder") for k in watch.end)
    assert watch.end["queue.written"].all()


def test_rescom_keeps_the_same_number_of_keys_of_every_class(tmp_path):
    watch = Watch()
    run(tmp_path, "method.name=rescom", TWO_VIEWS, "method.queue_per_class=5", callbacks=[watch])
    assert watch.end["queue.written"].sum(dim=1).tolist() == [5] * 10


def test_tsc_assigns_every_class_its_own_target(tmp_path):
    watch = Watch()
    run(tmp_path, "method.name=tsc", THREE_VIEWS, callbacks=[watch])
    assert sorted(watch.end["contrastive_loss.assignment"].tolist()) == list(range(10))
    assert (watch.end["contrastive_loss.centroids"].norm(dim=1) > 0.99).all()  # every class seen
    assert torch.equal(watch.end["contrastive_loss.targets"], watch.start["contrastive_loss.targets"])


def test_supcon_pretraining_leaves_the_classifier_to_a_second_stage(tmp_path):
    watch = Watch()
    first, pretrained = run(tmp_path / "first", "method.name=supcon", "method.alpha=0", THREE_VIEWS, "optim.epochs=8",
                            callbacks=[watch])
    assert pretrained["probe"].startswith("k-NN")  # tested by its representation, not its untrained classifier
    assert pretrained["test"]["overall"] > 25
    assert torch.equal(watch.start["classifier.weight"], watch.end["classifier.weight"])  # no gradient reached it
    assert not torch.equal(watch.start["projection.0.weight"], watch.end["projection.0.weight"])
    _, metrics = run(tmp_path / "second", "method.name=crt", f"model.init_from={first}", "data.views=[standard]",
                     "optim.epochs=4", "optim.lr=0.05")
    assert metrics["test"]["overall"] > 25  # a linear classifier on the pre-trained features learns (chance: 10)


def test_paco_takes_its_prior_from_balanced_softmax_only():
    with pytest.raises(ConfigError, match="balanced_softmax"):
        load_config([], [*SHORT, "method.name=paco", "loss.name=ce", TWO_VIEWS])


def test_paco_stopped_mid_epoch_and_resumed_ends_bit_identical(tmp_path):
    """Digits-LT has 9 steps an epoch: stopped at step 13, resumed from the checkpoint of
    step 12, the queue, the key encoder and the weights end as the uninterrupted run's."""
    args = [*SHORT, "method.name=paco", TWO_VIEWS, "method.queue_size=100", "trainer.checkpoint_every=4"]
    full_dir, full, resumed_dir, resumed, stopped_at = uninterrupted_and_resumed(tmp_path, args, 13)
    assert stopped_at["global_step"] == 12
    assert resumed["test"] == full["test"]
    a, b = last_states(full_dir, resumed_dir)
    assert a.keys() == b.keys() and any(k.startswith("queue.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_queue_or_momentum_update_follows_a_step_the_gradient_scaler_skipped():
    """float16's scaler skips a step whose gradients overflowed and halves its scale;
    after_step, which moves the queue and the key encoder, must not run then."""
    from types import SimpleNamespace

    from lightning.pytorch import LightningModule

    from longtail.methods.base import ClassifierMethod

    class Scaler:
        def __init__(self):
            self.scale = 1024.0

        def get_scale(self):
            return self.scale

    calls = []

    class Probe(ClassifierMethod):
        def after_step(self):
            calls.append("after_step")

    method = Probe(backbone=torch.nn.Identity(), classifier=torch.nn.Identity(), loss=torch.nn.Identity())
    scaler = Scaler()
    method._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
    method._step_applied = True
    skipped = lambda *args, **kwargs: setattr(scaler, "scale", scaler.scale / 2)  # noqa: E731
    applied = lambda *args, **kwargs: None  # noqa: E731
    for step, expected in ((skipped, []), (applied, ["after_step"])):
        calls.clear()
        with pytest.MonkeyPatch.context() as patch:  # Lightning's step: skipped, or applied
            patch.setattr(LightningModule, "optimizer_step", step)
            method.optimizer_step()
        assert calls == expected


def test_a_pretraining_takes_two_contrastive_views_and_no_classifier_view():
    config = load_config([], [*SHORT, "method.name=supcon", "method.alpha=0", TWO_VIEWS])
    from longtail.run import build_method

    method = build_method(config, [50] * 10)
    assert method.num_views == 2 and not method.trains_classifier
    assert method.training_losses(torch.randn(4, 2, 3, 8, 8), torch.tensor([0, 1, 0, 1])).keys() == {"contrastive"}
    with pytest.raises(ConfigError, match="needs 2 views"):
        load_config([], [*SHORT, "method.name=supcon", "method.alpha=0", "data.views=[standard]"])
    with pytest.raises(ConfigError, match="needs 3 views"):
        load_config([], [*SHORT, "method.name=supcon", TWO_VIEWS])
