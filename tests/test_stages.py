"""The run's stages: the checkpoint tested with a validation split, what a resume refuses,
features from evaluation, the un-augmented training set."""

import json

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from PIL import Image

from longtail.config import load_config
from longtail.errors import ConfigError
from longtail.run import evaluate, train

COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


def colour_folders(root, per_class=(24, 12, 6), held_out=6, seed=0):
    """train/val/test folders of 8x8 images, each class a colour in noise."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", per_class), ("val", [held_out] * 3), ("test", [held_out] * 3)):
        for c, n in enumerate(counts):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.asarray(COLOURS[c]) + rng.normal(0, 30, (8, 8, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


class SpoilTheLastStep(Callback):
    """Zeroes the classifier after the last training step: the last weights predict one
    class for every image, so the validation split must choose an earlier epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last_epoch = trainer.current_epoch == trainer.max_epochs - 1
        if last_epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                pl_module.classifier.weight.zero_()
                pl_module.classifier.bias.zero_()


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("validated")
    colour_folders(root / "data")
    config = load_config([], [f"data.root={root / 'data'}", "method.name=ce", "optim.epochs=3", "optim.lr=0.05",
                              "optim.warmup_epochs=0", "data.batch_size=6", "data.num_workers=0",
                              "data.cache=false", f"out_dir={root / 'runs'}"])
    return train(config, progress=False, callbacks=[SpoilTheLastStep()])


def test_with_a_validation_split_the_test_is_of_the_checkpoint_chosen_on_it(validated_run):
    run_dir, metrics = validated_run
    assert metrics["checkpoint"].endswith("best.ckpt")
    best = evaluate(run_dir / "checkpoints" / "best.ckpt", progress=False).results
    last = evaluate(run_dir / "checkpoints" / "last.ckpt", progress=False).results
    assert last["overall"] == pytest.approx(100 / 3)  # the spoiled weights: one class for all
    assert metrics["test"]["overall"] == best["overall"] > 100 / 3
    assert metrics["test"]["per_class"] == best["per_class"]
    # the run directory's weights and `longtail eval RUN_DIR` are the tested ones
    for path in (run_dir, run_dir / "model.safetensors"):
        assert evaluate(path, progress=False).results["per_class"] == best["per_class"]


def test_evaluation_gives_features_of_any_split_unaugmented(validated_run):
    run_dir, metrics = validated_run
    test = evaluate(run_dir, progress=False, features=True)
    assert test.outputs.features.shape == (18, 64) and test.outputs.logits.shape == (18, 3)
    train_set = evaluate(run_dir, progress=False, features=True, split="train")
    assert train_set.outputs.targets.tolist() == [0] * 24 + [1] * 12 + [2] * 6  # in order, every image once
    again = evaluate(run_dir, progress=False, features=True, split="train")
    assert torch.equal(train_set.outputs.features, again.outputs.features)  # no augmentation
    # the features are what the classifier reads
    logits = test.method.classifier(test.outputs.features)
    torch.testing.assert_close(logits, test.outputs.logits, rtol=1e-5, atol=1e-5)


def test_resume_refuses_a_config_edited_since_the_checkpoint_and_clears_temporary_files(tmp_path):
    config = load_config([], ["method.name=ce", "optim.epochs=1", "data.num_workers=0", f"out_dir={tmp_path}"])
    run_dir, finished = train(config, progress=False)
    leftover = run_dir / "checkpoints" / ".last.ckpt.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    values = yaml.safe_load((run_dir / "config.yaml").read_text())
    edited = json.loads(json.dumps(values))
    edited["optim"]["epochs"] = 5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(ConfigError, match=r"optim\.epochs changed since the checkpoint \(1 -> 5\)"):
        train(None, progress=False, resume=run_dir)
    assert leftover.exists()  # nothing was touched
    values["data"]["num_workers"] = 1  # a change that keeps the run exact is taken
    (run_dir / "config.yaml").write_text(yaml.safe_dump(values))
    _, resumed = train(None, progress=False, resume=run_dir)
    assert resumed["test"] == finished["test"]
    assert not leftover.exists()
