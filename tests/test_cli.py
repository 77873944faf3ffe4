"""The ``longtail`` command as a user runs it: a real process, its output and files."""

import json
import subprocess
import sys

import pytest
import torch

SHORT = ["optim.epochs=2", "optim.warmup_epochs=1", "data.num_workers=0"]


def longtail(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "longtail", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default command (BCL on Digits-LT), shortened to two epochs."""
    cwd = tmp_path_factory.mktemp("train")
    result = longtail("train", "--no-progress", *SHORT, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "runs").iterdir()
    return result, run_dir


def test_default_run_prints_the_shot_table(default_run):
    result, run_dir = default_run
    for word in ("overall", "many", "medium", "few", "class", "train", "accuracy"):
        assert word in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    overall = f"{metrics['test']['overall']:5.1f}"
    assert overall in result.stdout
    assert len(metrics["test"]["per_class"]) == 10
    assert metrics["train_counts"][0] > metrics["train_counts"][-1]


def test_default_run_writes_every_file_of_the_run_directory(default_run):
    _, run_dir = default_run
    assert "digits-bcl" in run_dir.name
    assert (run_dir / "config.yaml").read_text().count("name: bcl") == 1
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_size > 0
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(run_dir.rglob("*.tmp"))


def test_a_run_logs_one_line_per_epoch_when_not_on_a_terminal(tmp_path):
    result = longtail("train", *SHORT, "method.name=ce", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr


def test_eval_reprints_the_same_numbers_from_the_checkpoint(default_run):
    result, run_dir = default_run
    evaluated = longtail("eval", "--no-progress", str(run_dir), cwd=run_dir.parent)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['test']['overall']:5.1f}" in evaluated.stdout
    table = result.stdout[result.stdout.index(" overall") :].split("\nrun directory")[0]
    assert table.strip() == evaluated.stdout.strip()


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "method.name=nosuch"], ["method.name", "nosuch"]),
        (["train", "model.backbone=resnet999"], ["model.backbone", "resnet999"]),
        (["train", "optim.lrr=0.1"], ["optim.lrr", "optim.lr"]),
        (["train", "data.root=/no/such/data"], ["data.root", "/no/such/data"]),
        (["train", "data.imbalance_factor=0.5"], ["data.imbalance_factor", "0.5"]),
        (["train", "optim.lr=abc"], ["optim.lr", "abc"]),
        (["train", "--config", "missing.yaml"], ["missing.yaml"]),
        (["eval", "no/such/run"], ["no/such/run"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, args, words):
    """In this process (a real process costs seconds of imports): an exception would fail
    the test, as a traceback would reach the user; the real process is checked below."""
    from longtail.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0]


def test_bad_input_from_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = longtail("train", "optim.lrr=0.1", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.lrr" in lines[0], result.stderr


def test_a_truncated_checkpoint_is_named(default_run, tmp_path):
    _, run_dir = default_run
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    result = longtail("eval", str(broken), cwd=tmp_path)
    assert result.returncode == 2
    assert "broken.ckpt" in result.stderr and "Traceback" not in result.stderr


def test_methods_lists_every_family(tmp_path):
    result = longtail("methods", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("bcl", "ce", "logit_adjustment", "balanced_softmax", "logit_adjusted",
                 "class_balanced", "resnet32", "resnet50", "resnext50_32x4d", "timm:"):
        assert name in result.stdout
    assert "Zhu et al." in result.stdout


def test_data_info_prints_counts_shot_split_and_histogram(tmp_path):
    result = longtail("data", "info", "data.imbalance_factor=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from longtail.data import longtail_counts, read_digits

    pool = min(read_digits().train.counts())
    expected = longtail_counts(pool, 10, 5)
    assert f"{sum(expected)} training images" in result.stdout
    assert "imbalance factor" in result.stdout and "#" in result.stdout
    for count in expected:
        assert f" {count} " in result.stdout


def test_two_process_gloo_run_writes_one_run_directory(tmp_path):
    result = longtail("train", *SHORT, "trainer.devices=2", "trainer.accelerator=cpu",
                      "method.name=ce", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["processes"] == 2
    # each process takes half of each epoch: 585 images, 292 per process, 4 batches of 64
    assert metrics["steps"] == 2 * (585 // 2 // 64)
    assert result.stdout.count("run directory:") == 1


class Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise ValueError("photos/cat.jpg: cannot read image (image file is truncated)")


def test_an_error_in_a_loader_process_is_told_in_its_own_words():
    from longtail.cli import one_line

    with pytest.raises(ValueError) as error:
        next(iter(torch.utils.data.DataLoader(Unreadable(), num_workers=1)))
    assert "\n" in str(error.value)  # PyTorch's wrapping: a header, then the worker's traceback
    assert one_line(error.value) == "photos/cat.jpg: cannot read image (image file is truncated)"
    assert one_line(ValueError("data.root: no such file\nmore")) == "data.root: no such file"


def test_two_process_gloo_contrastive_pretraining_leaves_its_untrained_classifier_out_of_ddp(tmp_path):
    """At alpha 0 no loss reaches SupCon's classifier: DDP, which needs every trained
    parameter used, runs because the classifier is frozen; and a validation split does not
    choose the checkpoint by the untrained classifier's accuracy."""
    result = longtail("train", *SHORT, "trainer.devices=2", "trainer.accelerator=cpu", "method.name=supcon",
                      "method.alpha=0", "data.views=[standard, standard, standard]", "data.val_per_class=5",
                      "model.feat_dim=16", "model.hidden_dim=32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()
