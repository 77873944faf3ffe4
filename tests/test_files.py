import os

import pytest

from longtail.files import atomic_write_text


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    from longtail.files import atomic_write

    path = tmp_path / "metrics.json"
    atomic_write_text(path, "good")

    def write_then_fail(f):
        f.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, write_then_fail)
    assert path.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.yaml", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_weights_and_test_outputs_follow_the_umask_too(tmp_path):
    import torch

    from longtail.checkpoints import save_outputs, save_weights

    old = os.umask(0o022)
    try:
        save_weights(tmp_path / "model.safetensors", {"w": torch.zeros(2)}, {"classes": ["a"]})
        save_outputs(tmp_path / "test_outputs.safetensors", torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    finally:
        os.umask(old)
    for name in ("model.safetensors", "test_outputs.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
