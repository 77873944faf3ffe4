"""A run killed with SIGKILL mid-epoch, resumed, ends as the uninterrupted run does."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

ARGS = ["optim.epochs=3", "optim.warmup_epochs=1", "trainer.deterministic=true",
        "trainer.checkpoint_every=2", "data.num_workers=1", "--no-progress"]
STEPS_PER_EPOCH = 9  # Digits-LT: 585 training images, batches of 64


def longtail(*args, cwd, wait=True):
    command = [sys.executable, "-m", "longtail", *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def only(folder):
    (path,) = folder.iterdir()
    return path


def kill_after_checkpoint(process, run_parent, past_step):
    """SIGKILL ``process`` once its last checkpoint is past ``past_step``; return that step."""
    deadline = time.time() + 300
    step = 0
    while step <= past_step and time.time() < deadline:
        time.sleep(0.1)
        for checkpoint in run_parent.glob("*/checkpoints/last.ckpt"):
            try:
                step = torch.load(checkpoint, weights_only=True)["global_step"]
            except Exception:  # read while being replaced: try again
                continue
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = only(run_parent)
    assert not (killed / "metrics.json").exists()  # it did not finish
    return torch.load(killed / "checkpoints/last.ckpt", weights_only=True)["global_step"]


def test_sigkill_mid_epoch_twice_then_resume_matches_an_uninterrupted_run(tmp_path):
    longtail("train", *ARGS, "out_dir=full", cwd=tmp_path)
    full = only(tmp_path / "full")

    first = longtail("train", *ARGS, "out_dir=killed", cwd=tmp_path, wait=False)
    first_stop = kill_after_checkpoint(first, tmp_path / "killed", STEPS_PER_EPOCH)
    killed = only(tmp_path / "killed")
    # the resumed run is killed too, in the next epoch: each part keeps the curves of the parts before
    second = longtail("train", "--resume", str(killed), cwd=tmp_path, wait=False)
    second_stop = kill_after_checkpoint(second, tmp_path / "killed", 2 * STEPS_PER_EPOCH)
    assert STEPS_PER_EPOCH < first_stop < 2 * STEPS_PER_EPOCH < second_stop < 3 * STEPS_PER_EPOCH
    assert first_stop % STEPS_PER_EPOCH != 0 and second_stop % STEPS_PER_EPOCH != 0  # mid-epoch

    longtail("train", "--resume", str(killed), cwd=tmp_path)

    expected = json.loads((full / "metrics.json").read_text())
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["test"] == expected["test"]
    assert resumed["steps"] == expected["steps"] == 3 * STEPS_PER_EPOCH
    a = torch.load(full / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(killed / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    # the training curve keeps the rows from before both kills
    assert (killed / "metrics.csv").read_text() == (full / "metrics.csv").read_text()


def test_resume_needs_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "longtail", "train", "--resume", "empty"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "empty" in result.stderr and "last.ckpt" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_training_curve_cut_by_a_kill_keeps_its_whole_rows(tmp_path):
    from longtail.curves import read_curves

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,lr,step,train/loss\n0,0.1,8,2.5\n1,0.1,17,1.9\n2,0.1,2")
    assert [row["step"] for row in read_curves(path)] == ["8", "17"]
    assert [row["step"] for row in read_curves(path, until_step=10)] == ["8"]
