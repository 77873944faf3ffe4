"""The decoded-image cache: built once, reused, rebuilt when a source changes or is damaged."""

import os

import numpy as np
import pytest
from PIL import Image

from longtail.data import read_folder


def write_images(root, counts, size=6, seed=0):
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", counts), ("test", [2] * len(counts))):
        for c, n in enumerate(per_class):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_folder_reader_matches_the_files(tmp_path):
    write_images(tmp_path / "data", [5, 3])
    splits = read_folder(tmp_path / "data")
    assert splits.train.classes == ["class0", "class1"]
    assert splits.train.counts() == [5, 3] and splits.test.counts() == [2, 2]
    first = np.asarray(Image.open(tmp_path / "data/train/class0/000.png"))
    assert np.array_equal(splits.train.images[0], first)


def test_the_cache_is_built_once_then_memory_mapped(tmp_path):
    write_images(tmp_path / "data", [5, 3])
    fresh = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix in (".npy", ".json"))
    assert len(entries) == 4  # train and test: images and labels each
    again = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert isinstance(again.train.images, np.memmap)
    assert np.array_equal(np.asarray(again.train.images), fresh.train.images)
    assert np.array_equal(again.train.labels, fresh.train.labels)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix in (".npy", ".json")) == entries


def test_a_changed_source_file_makes_a_new_entry(tmp_path):
    write_images(tmp_path / "data", [5, 3])
    read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    changed = tmp_path / "data/train/class1/000.png"
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different modification time, whatever the clock
    splits = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert splits.train.images[5].max() == 0
    assert len(list((tmp_path / "cache").glob("data-train-*.npy"))) == 2


def test_a_truncated_cache_file_is_named_and_rebuilt(tmp_path):
    write_images(tmp_path / "data", [5, 3])
    expected = np.array(read_folder(tmp_path / "data", cache_dir=tmp_path / "cache").train.images)
    (images,) = (tmp_path / "cache").glob("data-train-*.npy")
    images.write_bytes(images.read_bytes()[:200])
    with pytest.warns(UserWarning, match=images.name):
        rebuilt = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert np.array_equal(np.asarray(rebuilt.train.images), expected)


def test_a_corrupt_image_is_named(tmp_path):
    write_images(tmp_path / "data", [2, 2])
    bad = tmp_path / "data/train/class1/001.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="001.png"):
        read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_grey_and_palette_images_become_rgb(tmp_path):
    write_images(tmp_path / "data", [1, 1])
    Image.fromarray(np.full((6, 6), 200, dtype=np.uint8), mode="L").save(tmp_path / "data/train/class0/000.png")
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).convert("P").save(tmp_path / "data/train/class1/000.png")
    splits = read_folder(tmp_path / "data")
    assert splits.train.images.shape == (2, 6, 6, 3)
    assert (splits.train.images[0] == 200).all()


def test_an_empty_class_folder_is_named(tmp_path):
    write_images(tmp_path / "data", [2, 2])
    (tmp_path / "data/train/class2").mkdir()
    with pytest.raises(ValueError, match="class2"):
        read_folder(tmp_path / "data")


def test_a_test_class_absent_from_training_is_named(tmp_path):
    write_images(tmp_path / "data", [2, 2])
    extra = tmp_path / "data/test/class9"
    extra.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(extra / "0.png")
    with pytest.raises(ValueError, match="class9.*absent from the training set"):
        read_folder(tmp_path / "data")


def test_on_corrupt_skip_warns_and_lists_the_file(tmp_path):
    write_images(tmp_path / "data", [3, 2])
    bad = tmp_path / "data/train/class0/001.png"
    bad.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="001.png"):
        splits = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", on_corrupt="skip")
    assert splits.train.counts() == [2, 2]
    assert splits.train.skipped == [str(bad)]
    again = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", on_corrupt="skip")
    assert again.train.skipped == [str(bad)] and again.train.counts() == [2, 2]


def test_a_run_counts_the_skipped_files_in_its_metrics(tmp_path):
    from longtail.config import load_config
    from longtail.run import train

    write_images(tmp_path / "data", [6, 4], size=8)
    (tmp_path / "data/test/class1/000.png").write_bytes(b"")
    config = load_config([], [f"data.root={tmp_path / 'data'}", "data.on_corrupt=skip", "method.name=ce",
                              "optim.epochs=1", "data.batch_size=4", "data.num_workers=0",
                              f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}"])
    with pytest.warns(UserWarning, match="000.png"):
        _, metrics = train(config, progress=False)
    assert metrics["skipped_files"] == 1
    assert metrics["train_counts"] == [6, 4]


def test_rgba_and_cmyk_images_become_rgb(tmp_path):
    write_images(tmp_path / "data", [1, 1])
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 180, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "data/train/class0/000.png")
    (tmp_path / "data/train/class1/000.png").unlink()
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "data/train/class1/000.jpg")  # red in ink
    splits = read_folder(tmp_path / "data")
    assert splits.train.images.shape == (2, 6, 6, 3)
    assert (splits.train.images[0] == [180, 0, 0]).all()
    red, green, blue = splits.train.images[1].reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60


def write_mixed_sizes(root):
    rng = np.random.default_rng(4)
    for split in ("train", "test"):
        for c, sides in enumerate([(10, 14, 10), (12, 10)]):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i, side in enumerate(sides):
                pixels = rng.integers(0, 256, (side, side + 2, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_images_of_different_sizes_are_read_from_their_files(tmp_path):
    from longtail.data.images import ImageFiles

    write_mixed_sizes(tmp_path / "data")
    with pytest.warns(UserWarning, match="differ in size.*data.resize"):
        splits = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert isinstance(splits.train.images, ImageFiles) and len(splits.train.images) == 5
    assert not list((tmp_path / "cache").glob("data-train-*"))  # nothing decoded to keep
    second = np.asarray(Image.open(tmp_path / "data/train/class0/1.png"))
    assert np.array_equal(splits.train.images[1], second)
    assert splits.train.subset(np.array([1, 3])).images.files[0].name == "1.png"


def test_an_unreadable_file_among_files_read_when_used_is_named_or_skipped(tmp_path):
    write_mixed_sizes(tmp_path / "data")
    bad = tmp_path / "data/train/class1/1.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="1.png: cannot read image"):
        read_folder(tmp_path / "data")
    with pytest.warns(UserWarning, match="1.png"):
        splits = read_folder(tmp_path / "data", on_corrupt="skip")
    assert splits.train.counts() == [3, 1] and splits.train.skipped == [str(bad)]


def test_resize_decodes_once_into_the_cache_keeping_the_centre(tmp_path):
    write_mixed_sizes(tmp_path / "data")
    wide = np.zeros((12, 36, 3), dtype=np.uint8)
    wide[:, 12:24] = 255  # the centre square white
    Image.fromarray(wide).save(tmp_path / "data/train/class0/0.png")
    splits = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=8)
    assert splits.train.images.shape == (5, 8, 8, 3) and splits.test.images.shape == (5, 8, 8, 3)
    assert splits.train.images[0].min() > 200
    assert len(list((tmp_path / "cache").glob("data-train-*.npy"))) == 1
    again = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=8)
    assert isinstance(again.train.images, np.memmap)
    assert read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=6).train.images.shape[1] == 6


def test_a_run_trains_on_images_of_different_sizes(tmp_path):
    from longtail.config import load_config
    from longtail.run import train

    write_mixed_sizes(tmp_path / "data")
    common = [f"data.root={tmp_path / 'data'}", "method.name=ce", "optim.epochs=1", "data.batch_size=2",
              "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}"]
    with pytest.warns(UserWarning, match="differ in size"):
        _, metrics = train(load_config([], common + ["data.image_size=8"]), progress=False)
    assert metrics["train_counts"] == [3, 2] and metrics["test"]["overall"] is not None
    _, resized = train(load_config([], common + ["data.resize=10"]), progress=False)
    assert resized["train_counts"] == [3, 2]
