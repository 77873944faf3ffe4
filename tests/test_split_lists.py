"""Split lists (ImageNet-LT / iNaturalist / Places-LT convention) and their errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longtail.data import list_counts, read_lists, shot_groups

SPLITS = Path(__file__).parents[2] / "shared" / "data" / "splits"


def make(tmp_path, train_counts=(4, 2), test_per_class=2):
    root = tmp_path / "images"
    lines = {"train": [], "test": []}
    for split, counts in (("train", train_counts), ("test", [test_per_class] * len(train_counts))):
        for label, n in enumerate(counts):
            for i in range(n):
                relative = f"{split}/c{label}/{i}.png"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((6, 6, 3), 30 * label + i, dtype=np.uint8)).save(root / relative)
                lines[split].append(f"{relative} {label}")
    for split, content in lines.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(content) + "\n")
    return root


def test_lists_read_images_and_labels(tmp_path):
    root = make(tmp_path)
    splits = read_lists(root, tmp_path / "train.txt", tmp_path / "test.txt", cache_dir=tmp_path / "cache")
    assert splits.train.counts() == [4, 2] and splits.test.counts() == [2, 2]
    assert splits.train.images[4, 0, 0, 0] == 30  # first image of class 1


def test_a_line_naming_a_missing_file_gives_its_line_number(tmp_path):
    root = make(tmp_path)
    (root / "train/c1/1.png").unlink()
    with pytest.raises(ValueError, match=r"train\.txt:6: no such image"):
        read_lists(root, tmp_path / "train.txt", tmp_path / "test.txt")


def test_a_malformed_line_and_a_negative_label_are_named(tmp_path):
    root = make(tmp_path)
    (tmp_path / "bad.txt").write_text("train/c0/0.png 0\ntrain/c0/1.png zero\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected 'relative/path label'"):
        read_lists(root, tmp_path / "bad.txt", tmp_path / "test.txt")
    (tmp_path / "neg.txt").write_text("train/c0/0.png -1\n")
    with pytest.raises(ValueError, match=r"neg\.txt:1: label -1"):
        read_lists(root, tmp_path / "neg.txt", tmp_path / "test.txt")


def test_a_test_label_absent_from_training_is_named(tmp_path):
    root = make(tmp_path)
    with open(tmp_path / "test.txt", "a") as f:
        f.write("test/c0/0.png 7\n")
    with pytest.raises(ValueError, match="label 7 .* absent from the training list"):
        read_lists(root, tmp_path / "train.txt", tmp_path / "test.txt")


def test_the_cli_infers_the_list_format_and_names_a_missing_list(tmp_path):
    from longtail.config import ConfigError, load_config

    root = make(tmp_path)
    config = load_config([], [f"data.root={root}", f"data.train_list={tmp_path / 'train.txt'}",
                              f"data.test_list={tmp_path / 'test.txt'}"])
    assert config.data.format == "list"
    with pytest.raises(ConfigError, match="data.test_list"):
        load_config([], [f"data.root={root}", f"data.train_list={tmp_path / 'train.txt'}"])


@pytest.mark.slow
def test_places_lt_class_statistics_from_the_real_list():
    if not SPLITS.exists():
        pytest.skip("../shared/data/splits is absent")
    counts = list_counts(SPLITS / "Places_LT_train.txt")
    groups = shot_groups(counts)
    assert len(counts) == 365 and sum(counts) == 62500 and min(counts) == 5 and max(counts) == 4980
    assert (groups.count("many"), groups.count("medium"), groups.count("few")) == (131, 163, 71)
    assert set(list_counts(SPLITS / "ImageNet_LT_test.txt")) == {50}
