"""The base carries new methods: a loss added in this file alone, a second stage on a
frozen backbone, a method holding a momentum encoder and a queue, resumed exactly."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from short_runs import uninterrupted_and_resumed

from longtail.cli import main
from longtail.losses import CLASSIFICATION_LOSSES, LabelledQueue, contrastive_loss
from longtail.methods import METHODS, ClassifierMethod, MethodEntry
from longtail.models import MomentumEncoder

QUICK = ["optim.epochs=1", "optim.warmup_epochs=0", "data.num_workers=0", "--no-progress"]


class TargetMarginLoss(nn.Module):
    """A toy loss: cross-entropy with the target's logit lowered by ``margin``."""

    instances = []

    def __init__(self, class_counts, margin: float = 0.0, weight=None):
        super().__init__()
        self.margin = margin
        TargetMarginLoss.instances.append(self)

    def forward(self, logits, targets):
        return F.cross_entropy(logits - self.margin * F.one_hot(targets, logits.shape[1]), targets)


def only(folder):
    (path,) = folder.iterdir()
    return path


def test_a_loss_added_in_a_test_file_trains_from_the_cli_with_its_own_argument(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(CLASSIFICATION_LOSSES, "target_margin", TargetMarginLoss)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=supervised", "loss.name=target_margin", "loss.margin=0.25", *QUICK]) == 0
    run_dir = only(tmp_path / "runs")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["loss"] == {"name": "target_margin", "margin": 0.25}
    assert TargetMarginLoss.instances[-1].margin == 0.25
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["overall"] is not None

    capsys.readouterr()
    assert main(["train", "loss.name=target_margin", "loss.margn=0.25", *QUICK]) == 2
    error = capsys.readouterr().err
    assert "loss.margn" in error and "loss.margin" in error and len(error.strip().splitlines()) == 1
    assert main(["methods"]) == 0
    assert "target_margin" in capsys.readouterr().out.replace("margin=0.0", "")  # listed, with its argument


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert main(["train", "method.name=ce", *QUICK]) == 0
    return only(cwd / "runs")


def test_a_second_stage_trains_a_new_classifier_on_the_first_stages_frozen_backbone(first_stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=crt", f"model.init_from={first_stage}", "data.sampler=class_balanced",
                 *QUICK]) == 0
    first = load_file(first_stage / "model.safetensors")
    second = load_file(only(tmp_path / "runs") / "model.safetensors")
    backbone = [key for key in first if key.startswith("backbone.")]
    assert backbone and all(torch.equal(first[key], second[key]) for key in backbone)  # statistics too
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])


def test_init_from_names_the_tensor_that_does_not_fit(first_stage, tmp_path, monkeypatch, capsys):
    weights = load_file(first_stage / "model.safetensors")
    weights["backbone.stem.0.weight"] = torch.zeros(8, 3, 3, 3)
    save_file(weights, str(tmp_path / "other.safetensors"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=crt", "model.init_from=other.safetensors", *QUICK]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "other.safetensors" in error and "backbone.stem.0.weight" in error and "[8, 3, 3, 3]" in error
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


class MomentumQueue(ClassifierMethod):
    """A test method holding a momentum encoder and a labelled queue (MoCo-style supervised
    contrast): the queries of the first view against the keys of the second and the queue."""

    num_views = 2

    def __init__(self, *, queue_size: int = 96, **parts):
        super().__init__(**parts)
        self.key_encoder = MomentumEncoder(self.backbone, momentum=0.9, final_momentum=0.99)
        self.queue = LabelledQueue(queue_size, self.backbone.num_features)

    def training_losses(self, views, targets):
        features = self.features(views[:, 0])
        queries = F.normalize(features, dim=1)
        keys = F.normalize(self.key_encoder(views[:, 1].contiguous(memory_format=torch.channels_last)), dim=1)
        self.pending = keys, targets
        queued, queued_labels = self.queue()
        contrastive = contrastive_loss(queries, targets, torch.cat([keys, queued]), torch.cat([targets, queued_labels]),
                                       0.2, own=torch.arange(len(queries)), own_is_positive=True)
        return {"classifier": self.classifier_loss(self.classifier(features), targets), "contrastive": contrastive}

    def after_step(self):
        self.key_encoder.update(self.backbone, self.global_step / self.trainer.estimated_stepping_batches)
        self.queue.push(*self.pending)


def test_a_method_with_a_momentum_encoder_and_a_queue_resumes_bit_identically(monkeypatch, tmp_path):
    monkeypatch.setitem(METHODS, "momentum_queue", MethodEntry(MomentumQueue, "a test method", "ce"))
    overrides = ["method.name=momentum_queue", "optim.epochs=2", "optim.warmup_epochs=1", "data.num_workers=0",
                 "trainer.deterministic=true", "trainer.checkpoint_every=4"]
    full_dir, full, resumed_dir, resumed, stopped_at = uninterrupted_and_resumed(tmp_path, overrides, 10)
    assert stopped_at["global_step"] == 8  # mid-epoch (9 steps an epoch), the queue full and wrapped
    assert stopped_at["state_dict"]["queue.written"].all()

    assert resumed["test"] == full["test"] and resumed["steps"] == full["steps"] == 18
    a, b = load_file(full_dir / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert {"queue.keys", "queue.labels", "queue.position", "key_encoder.encoder.stem.0.weight"} <= set(a)
    assert all(torch.equal(a[key], b[key]) for key in a)
    # the key encoder followed the backbone without being it
    assert not torch.equal(a["key_encoder.encoder.stem.0.weight"], a["backbone.stem.0.weight"])
