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


# --------------------------------------------------------------------------
# input that used to end in a traceback
# --------------------------------------------------------------------------
def run_main(capsys, *args):
    """``longtail ARGS`` in this process: the exit code and the error lines."""
    from longtail.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    captured = capsys.readouterr()
    run_main.out = captured.out
    return code, [line for line in captured.err.splitlines() if line.strip()]


def refused(capsys, *args, words=()):
    code, lines = run_main(capsys, *args)
    assert code == 2 and len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def bomb_png(path, side=40_000):
    """A PNG whose header claims ``side`` x ``side`` pixels (1.6 G), with almost no data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def image_folder(root, per_class=(6, 4), side=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", per_class), ("test", (2, 2))):
        for c, n in enumerate(counts):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / split / f"c{c}" / f"{i}.png")


def test_a_decompression_bomb_is_refused_or_skipped_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "data")
    bomb = tmp_path / "data" / "train" / "c0" / "bomb.png"
    bomb_png(bomb)
    common = ["data.root=data", "data.cache=false", "method.name=ce", "data.num_workers=0"]
    refused(capsys, "data", "info", *common, words=["bomb.png", "decompression bomb"])
    refused(capsys, "train", *common, "optim.epochs=1", "--no-progress", words=["bomb.png", "decompression bomb"])
    with pytest.warns(UserWarning, match="bomb.png"):
        code, _ = run_main(capsys, "train", *common, "data.on_corrupt=skip", "optim.epochs=1", "--no-progress")
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_files"] == 1
    code, lines = run_main(capsys, "predict", str(run_dir), "data/test", str(bomb), "--top-k", "1")
    assert code == 0
    assert any("bomb.png" in line and "decompression bomb" in line for line in lines)
    assert len(run_main.out.strip().splitlines()) == 1 + 4  # the header and the four good images


@pytest.mark.parametrize("override, key", [
    ("trainer.checkpoint_every=-5", "trainer.checkpoint_every"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every"),
    ("trainer.devices=abc", "trainer.devices"),
    ("trainer.accelerator=foo", "trainer.accelerator"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("seed=-1", "seed"),
    ("data.seed=-1", "data.seed"),
    ("data.num_workers=-1", "data.num_workers"),
    ("model.hidden_dim=0", "model.hidden_dim"),
    ("method.name=[bcl]", "method.name"),
    ("method.alpha=-1", "method 'bcl'"),
    ("loss.tau=-1", "loss 'logit_adjusted'"),
])
def test_bad_config_values_name_their_key(capsys, tmp_path, monkeypatch, override, key):
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "train", override, words=[key])
    assert line.split("error: ", 1)[1].startswith(key)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, words", [
    (["predict", "run", "x.png", "--top-k", "0"], ["--top-k", "at least 1"]),
    (["predict", "run", "x.png", "--top-k", "-1"], ["--top-k", "at least 1"]),
    (["eval", "run", "--resample", "-5"], ["--resample", "at least 0"]),
    (["eval", "run", "optim.lr=1"], ["optim.lr=1", "data.*"]),
])
def test_bad_command_arguments_are_one_line(capsys, args, words):
    refused(capsys, *args, words=words)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("finished")
    result = longtail("train", "method.name=ce", "optim.epochs=1", "data.num_workers=0", "--no-progress", cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


@pytest.mark.parametrize("metadata, words", [
    ({"longtail": "[1, 2]"}, ["run information is list"]),
    ({"longtail": "{}"}, ["lacks 'config'"]),
    ({"longtail": "not json"}, ["not JSON"]),
    ({}, ["metadata lacks 'longtail'"]),
])
def test_weights_whose_metadata_is_not_a_runs_are_refused(finished_run, tmp_path, capsys, metadata, words):
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "model.safetensors"
    save_file(load_file(finished_run / "model.safetensors"), str(weights), metadata=metadata)
    refused(capsys, "eval", str(weights), words=["model.safetensors", *words])
    refused(capsys, "predict", str(weights), str(tmp_path), words=["model.safetensors", *words])


def test_weights_that_do_not_fit_the_config_name_the_tensor(finished_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    weights = load_file(finished_run / "model.safetensors")
    weights["classifier.weight"] = torch.zeros(3, 64)
    info = json.loads(__import__("safetensors").safe_open(str(finished_run / "model.safetensors"), "pt").metadata()["longtail"])
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"longtail": json.dumps(info)})
    line = refused(capsys, "eval", str(tmp_path / "model.safetensors"), words=["classifier.weight", "[3, 64]"])
    assert len(line) < 300


def test_resume_of_a_checkpoint_whose_weights_do_not_fit_names_the_tensor(finished_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    checkpoint["state_dict"]["backbone.stem.0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(checkpoint, run_dir / "checkpoints/last.ckpt")
    refused(capsys, "train", "--resume", str(run_dir), words=["last.ckpt", "backbone.stem.0.weight", "[4, 3, 3, 3]"])


@pytest.mark.parametrize("content", ["{}", "[]", '{"test": []}', "not json"])
def test_report_and_compare_refuse_metrics_that_are_not_a_runs(finished_run, tmp_path, capsys, content):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.json").write_text(content)
    refused(capsys, "report", str(run_dir), words=["metrics.json"])
    refused(capsys, "compare", str(run_dir), str(finished_run), words=["metrics.json"])
    assert not (run_dir / "report.html").exists()


def test_compare_shows_both_runs_whose_folders_share_a_name(finished_run, tmp_path, capsys):
    import shutil

    for parent in ("a", "b"):
        shutil.copytree(finished_run, tmp_path / parent / finished_run.name)
    code, _ = run_main(capsys, "compare", str(tmp_path / "a" / finished_run.name), str(tmp_path / "b" / finished_run.name),
                       "--format", "csv")
    assert code == 0
    rows = run_main.out.strip().splitlines()[1:]
    assert len(rows) == 2 and rows[0].split(",")[0] != rows[1].split(",")[0]


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous(tmp_path, monkeypatch):
    import errno

    from longtail.files import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def fill_the_disk(checkpoint, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fill_the_disk)
    with pytest.raises(OSError) as error:
        io.save_checkpoint({"step": 2}, path)
    assert str(error.value).startswith(f"{path}: cannot write (No space left on device)")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_run_past_the_file_size_limit_stops_with_one_line_naming_the_checkpoint(tmp_path):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # a checkpoint is about 2 MB

    result = subprocess.run([sys.executable, "-m", "longtail", "train", "method.name=ce", "optim.epochs=1",
                             "data.num_workers=0", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, preexec_fn=limit)
    one_error_line(result, "last.ckpt", "cannot write", "File too large")
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_refused_start_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines = run_main(capsys, "train", "method.name=ce", "trainer.accelerator=gpu", "optim.epochs=1")
    assert code == 2 and len(lines) == 1
    assert not any((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else True


# --------------------------------------------------------------------------
# data that must not be lost or mixed
# --------------------------------------------------------------------------
def test_a_run_directory_left_in_the_environment_is_not_overwritten(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    monkeypatch.setenv("LONGTAIL_RUN_DIR", str(finished_run))
    refused(capsys, "train", "method.name=ce", "optim.epochs=1", words=["LONGTAIL_RUN_DIR", "already holds a run"])
    assert before == {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    monkeypatch.setenv("LONGTAIL_RUN_DIR", str(tmp_path / "fresh"))  # a new directory is taken
    code, _ = run_main(capsys, "train", "method.name=ce", "optim.epochs=1", "data.num_workers=0", "--no-progress")
    assert code == 0 and (tmp_path / "fresh" / "metrics.json").is_file()


def test_runs_started_at_once_never_share_a_directory(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from longtail.config import load_config
    from longtail.run import new_run_dir

    config = load_config([], ["method.name=ce", f"out_dir={tmp_path}"])
    with ThreadPoolExecutor(16) as pool:
        made = list(pool.map(lambda _: new_run_dir(config), range(32)))
    assert len(set(made)) == 32 and all(d.is_dir() for d in made)


# --------------------------------------------------------------------------
# hangs and paths
# --------------------------------------------------------------------------
@pytest.fixture
def alarm():
    """Fail instead of hanging: a blocked open of a FIFO ends the test after 60 s."""
    import signal

    def hung(*_):
        raise TimeoutError("hung on a non-regular file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifos_named_like_images_never_block(finished_run, tmp_path, capsys, alarm):
    from longtail.data import read_folder, read_lists

    image_folder(tmp_path / "data")
    os.mkfifo(tmp_path / "data" / "train" / "c0" / "fifo.jpg")
    splits = read_folder(tmp_path / "data")
    assert len(splits.train) == 10  # the FIFO is no image of the set

    os.mkfifo(tmp_path / "pipe.png")
    code, lines = run_main(capsys, "predict", str(finished_run), str(tmp_path / "data" / "train"),
                           str(tmp_path / "pipe.png"), "--top-k", "1")
    assert code == 0 and any("pipe.png" in line and "not a regular file" in line for line in lines)
    assert "fifo.jpg" not in run_main.out and "0.png" in run_main.out

    os.mkfifo(tmp_path / "config.yaml")
    refused(capsys, "train", "--config", str(tmp_path / "config.yaml"), words=["config.yaml", "not a regular file"])
    os.mkfifo(tmp_path / "prior.json")
    refused(capsys, "predict", str(finished_run), str(tmp_path / "data" / "test"), "--prior",
            str(tmp_path / "prior.json"), words=["prior.json", "not a regular file"])

    (tmp_path / "train.txt").write_text("train/c0/0.png 0\ntrain/c0/fifo.jpg 0\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: not a regular file"):
        read_lists(tmp_path / "data", tmp_path / "train.txt", tmp_path / "train.txt")


@pytest.mark.parametrize("line", ["../outside.png 0", "/etc/passwd 0", "train/../../outside.png 1"])
def test_split_list_lines_leading_outside_the_root_are_refused_with_their_line(tmp_path, line):
    from longtail.data import read_split_list

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "list.txt").write_text(f"a.png 0\n{line}\n")
    with pytest.raises(ValueError, match=r"list\.txt:2: .* leads outside the image root"):
        read_split_list(tmp_path / "list.txt", tmp_path)


def test_eval_reads_the_data_the_user_names_over_the_checkpoints(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "data")
    code, _ = run_main(capsys, "train", "data.root=data", "data.cache=false", "method.name=ce", "optim.epochs=1",
                       "data.num_workers=0", "--no-progress")
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    shutil.move(tmp_path / "data", tmp_path / "moved")
    refused(capsys, "eval", str(run_dir), "--no-progress", words=["data.root"])
    code, _ = run_main(capsys, "eval", str(run_dir), "data.root=moved", "--no-progress")
    assert code == 0 and "overall" in run_main.out


@pytest.mark.parametrize("weights", ['["a", 1]', "[NaN, 1]", '{"0": -1}', '"uniform"', "[1e400, 1]"])
def test_a_prior_file_that_is_not_weights_is_refused_by_name(finished_run, tmp_path, capsys, weights):
    (tmp_path / "prior.json").write_text(weights)
    refused(capsys, "predict", str(finished_run), str(tmp_path), "--prior", str(tmp_path / "prior.json"),
            words=["prior.json"])
