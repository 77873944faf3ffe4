"""Untrusted files and hostile input: no code runs, no traceback, nothing overwritten."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from longtail.data import read_cifar

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]


def longtail(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "longtail", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def one_error_line(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def write_cifar(root, hundred=False, protocol=4, per_file=4):
    """A small, valid CIFAR folder in the python layout."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    label_key = "fine_labels" if hundred else "labels"

    def batch():
        return {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                label_key: [i % 2 for i in range(per_file)], "batch_label": b"batch"}

    files = CIFAR100_FILES if hundred else CIFAR10_FILES
    for name in files[:-1]:
        (root / name).write_bytes(pickle.dumps(batch(), protocol=protocol))
    names = {"fine_label_names" if hundred else "label_names": ["cat", "dog"]}
    (root / files[-1]).write_bytes(pickle.dumps(names, protocol=protocol))


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_valid_cifar_files_of_any_pickle_protocol_read(tmp_path, protocol):
    write_cifar(tmp_path / "c10", protocol=protocol)
    splits = read_cifar(tmp_path / "c10")
    assert splits.train.images.shape == (20, 32, 32, 3) and splits.train.classes == ["cat", "dog"]
    write_cifar(tmp_path / "c100", hundred=True, protocol=protocol)
    assert read_cifar(tmp_path / "c100").test.labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("name", CIFAR10_FILES + CIFAR100_FILES)
def test_a_crafted_cifar_file_is_refused_by_name_and_runs_nothing(tmp_path, name):
    hundred = name in CIFAR100_FILES
    write_cifar(tmp_path / "data", hundred=hundred)
    marker = tmp_path / "pwned"
    (tmp_path / "data" / name).write_bytes(pickle.dumps({"data": RunsCode(marker), "labels": [0]}))
    with pytest.raises(ValueError) as error:
        read_cifar(tmp_path / "data")
    message = str(error.value)
    assert str(tmp_path / "data" / name) in message and "posix.system" in message and "\n" not in message
    assert not marker.exists()


def test_eval_of_a_checkpoint_pointing_at_a_crafted_cifar_folder_runs_nothing(tmp_path):
    """The attack of the report: a checkpoint whose stored data.root is a folder with a crafted
    `meta` pickle."""
    from longtail.config import load_config

    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "pwned"
    (evil / "meta").write_bytes(pickle.dumps(RunsCode(marker)))
    config = load_config([], ["method.name=ce"]).to_dict()
    config["data"].update(root=str(evil), format=None)
    torch.save({"state_dict": {}, "longtail": {"config": config, "classes": ["a"], "class_counts": [1],
                                               "mean": [0.5] * 3, "std": [0.2] * 3, "image_size": 8}},
               tmp_path / "model.ckpt")
    result = longtail("eval", "model.ckpt", cwd=tmp_path)
    one_error_line(result, "meta", "refused")
    assert not marker.exists()
