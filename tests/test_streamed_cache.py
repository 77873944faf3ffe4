"""The cache written as it is decoded: equal to the in-memory decoding, continued after a
kill, refused when the disk is too small, and bounded in memory whatever the set's size."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from longtail.data import read_folder


def write_jpegs(root, counts, sides=(40, 90), seed=0, test_per_class=2):
    """JPEGs of mixed sizes (each side drawn from ``sides``) in ``root/{train,test}/<class>/``:
    smooth gradients with noise, so that resizing and JPEG scaling have something to change."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", counts), ("test", [test_per_class] * len(counts))):
        for c, n in enumerate(per_class):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                height, width = rng.integers(*sides, size=2)
                y, x = np.mgrid[:height, :width]
                base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 40 * c % 256)], axis=-1)
                noise = rng.integers(-20, 21, base.shape)
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def run_python(code, *args):
    """``code`` in a fresh interpreter; its stdout, stderr and return code."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_a_streamed_cache_equals_the_in_memory_decoding_byte_for_byte(tmp_path, monkeypatch, capsys):
    import longtail.data.decoding as decoding

    write_jpegs(tmp_path / "data", [120, 60, 30, 12])
    monkeypatch.setattr(decoding, "CHUNK_BYTES", 16 * 16 * 3 * 7)  # 7 images a chunk: many chunks
    (tmp_path / "data/train/class001/0003.jpg").write_bytes(b"not an image")  # a hole to close up
    with pytest.warns(UserWarning, match="0003.jpg"):
        in_memory = read_folder(tmp_path / "data", resize=16, on_corrupt="skip", num_workers=0)
    with pytest.warns(UserWarning, match="0003.jpg"):
        streamed = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, on_corrupt="skip",
                               num_workers=2)
    err = capsys.readouterr().err
    assert "caching 222 images of data-train at 16x16" in err and "cached 221 images of data-train" in err
    assert isinstance(streamed.train.images, np.memmap) and not isinstance(in_memory.train.images, np.memmap)
    assert streamed.train.images.shape == (221, 16, 16, 3)
    assert np.asarray(streamed.train.images).tobytes() == in_memory.train.images.tobytes()
    assert np.array_equal(streamed.train.labels, in_memory.train.labels)
    assert streamed.train.skipped == in_memory.train.skipped == [str(tmp_path / "data/train/class001/0003.jpg")]
    assert np.asarray(streamed.test.images).tobytes() == in_memory.test.images.tobytes()
    # and each image is its file resized on its own, as the per-epoch path reads it
    from longtail.data.images import read_image

    files = sorted((tmp_path / "data/train").glob("*/*.jpg"))
    kept = [f for f in files if str(f) not in streamed.train.skipped]
    assert len(kept) == len(streamed.train.images)
    for row, path in enumerate(kept):
        assert np.array_equal(streamed.train.images[row], read_image(path, 16)), path


KILLED_BUILD = """
    import os, signal, sys
    import longtail.data.cache as cache
    import longtail.data.decoding as decoding
    from longtail.data import read_folder

    decoding.CHUNK_BYTES = 16 * 16 * 3 * 10  # 10 images a chunk
    cache.CHECKPOINT_SECONDS = 0  # a record offered after every chunk, kept for every third
    write_record = cache.atomic_write_text
    offered, writes = [], []

    def every_third(path, text):
        if str(path).endswith(".partial.json"):
            offered.append(path)
            if len(offered) % 3:
                return
        write_record(path, text)

    pwrite = os.pwrite

    def write_then_die(descriptor, data, position):
        writes.append(position)
        if len(writes) == int(sys.argv[3]):  # killed in the middle of a chunk's write
            pwrite(descriptor, bytes(data)[: len(data) // 2], position)
            os.kill(os.getpid(), signal.SIGKILL)
        return pwrite(descriptor, data, position)

    cache.atomic_write_text = every_third
    cache.os.pwrite = write_then_die
    read_folder(sys.argv[1], cache_dir=sys.argv[2], resize=16, num_workers=2, on_corrupt="skip")
"""


def test_a_killed_build_leaves_nothing_that_loads_and_the_next_continues_it(tmp_path, capsys):
    write_jpegs(tmp_path / "data", [120, 60, 30, 12])
    for name in ("class000/0004.jpg", "class000/0047.jpg"):  # one before the last record, one after it
        (tmp_path / "data/train" / name).write_bytes(b"damaged")
    killed = run_python(KILLED_BUILD, tmp_path / "data", tmp_path / "cache", 5)
    assert killed.returncode == -9, killed.stderr
    (state,) = (tmp_path / "cache").glob("data-train-*.partial.json")
    record = json.loads(state.read_text())
    assert record["done"] == 30 and record["skipped"] == [4]  # the rows of chunks 4 and 5 went unrecorded
    assert not list((tmp_path / "cache").glob("data-train-*[0-9a-f].json"))  # no entry that loads
    assert not list((tmp_path / "cache").glob("data-train-*[0-9a-f].npy"))
    key = state.name.removesuffix(".partial.json")

    with pytest.warns(UserWarning, match="0047.jpg"):
        continued = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, num_workers=2,
                                on_corrupt="skip")
    err = capsys.readouterr().err
    assert "continuing the cache of data-train where a stopped build left it: 30 of 222 images done" in err
    assert "caching 222 images of data-train" not in err
    assert sorted(p.name for p in (tmp_path / "cache").glob(f"{key}*")) == [f"{key}.json", f"{key}.npy"]
    with pytest.warns(UserWarning):
        expected = read_folder(tmp_path / "data", resize=16, num_workers=0, on_corrupt="skip")
    assert np.asarray(continued.train.images).tobytes() == expected.train.images.tobytes()
    assert continued.train.skipped == expected.train.skipped and len(continued.train.skipped) == 2
    assert np.array_equal(continued.train.labels, expected.train.labels)


def test_a_stopped_build_that_cannot_continue_is_built_again(tmp_path, capsys):
    write_jpegs(tmp_path / "data", [20, 10])
    killed = run_python(KILLED_BUILD.replace("% 3", "% 1"), tmp_path / "data", tmp_path / "cache", 2)
    assert killed.returncode == -9
    (state,) = (tmp_path / "cache").glob("data-train-*.partial.json")
    state.write_text("{not json")
    again = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, num_workers=0, on_corrupt="skip")
    err = capsys.readouterr().err
    assert "cannot be continued" in err and "building it again" in err
    assert "caching 30 images of data-train" in err
    expected = read_folder(tmp_path / "data", resize=16, num_workers=0)
    assert np.asarray(again.train.images).tobytes() == expected.train.images.tobytes()


def test_a_build_on_a_disk_too_small_is_refused_before_it_starts(tmp_path, monkeypatch):
    import shutil

    write_jpegs(tmp_path / "data", [20, 10])
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=20_000))
    needed = 128 + 30 * 32 * 32 * 3  # the .npy's header and its pixels
    with pytest.raises(ValueError) as refused:
        read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=32, num_workers=0)
    message = str(refused.value)
    assert f"{tmp_path / 'cache'}: too little disk space" in message
    assert f"{needed} bytes" in message and "20000" in message and "data.cache=false" in message
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]  # nothing written


def test_the_cli_names_the_bytes_and_the_directory_in_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    from longtail.cli import main

    write_jpegs(tmp_path / "data", [20, 10])
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    code = main(["train", f"data.root={tmp_path / 'data'}", "data.resize=32", f"data.cache_dir={tmp_path / 'c'}",
                 "data.num_workers=0", "method.name=ce", f"out_dir={tmp_path / 'runs'}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "too little disk space" in lines[0] and str(tmp_path / "c") in lines[0]


def test_a_second_process_waits_for_the_builder_then_finds_the_entry(tmp_path):
    from longtail.data.cache import CacheEntry
    from longtail.data.decoding import ImageSource
    from longtail.data.readers import _class_folder_files

    write_jpegs(tmp_path / "data", [20, 10])
    classes, files, labels = _class_folder_files(tmp_path / "data/train")
    source = ImageSource("data-train", files, np.asarray(labels), classes, 16, "error")
    options = {"reader": "folder", "classes": classes, "resize": 16, "decoding": "draft", "on_corrupt": "error"}
    entry = CacheEntry(tmp_path / "cache", source, options)
    reader = "from longtail.data import read_folder; import sys; read_folder(sys.argv[1], cache_dir=sys.argv[2], resize=16, num_workers=0)"
    with entry.locked():
        waiting = subprocess.Popen([sys.executable, "-c", reader, tmp_path / "data", tmp_path / "cache"],
                                   stderr=subprocess.PIPE, text=True)
        first_line = waiting.stderr.readline()
        assert "waiting for another process that is caching data-train" in first_line
        assert not list((tmp_path / "cache").glob("*.partial.*"))
        entry.build((16, 16, 3), num_workers=0)
    rest = waiting.communicate(timeout=120)[1]
    assert waiting.returncode == 0
    assert "of data-train" not in rest and "caching 4 images of data-test" in rest  # it found the training entry


MEMORY = """
    import json, sys
    from longtail.data import read_folder
    from longtail.hardware import PeakMemory

    cache = sys.argv[2] if sys.argv[2] != "-" else None
    with PeakMemory() as memory:
        splits = read_folder(sys.argv[1], cache_dir=cache, resize=128, num_workers=int(sys.argv[3]))
    print(json.dumps({"growth": memory.peak - memory.start, "decoded": splits.train.images.nbytes}))
"""


@pytest.fixture(scope="module")
def three_thousand(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    write_jpegs(root / "data", [1500, 800, 400, 200, 100], sides=(130, 180), test_per_class=1)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_peak_memory_while_caching_stays_below_what_an_in_memory_build_needs(three_thousand, workers):
    root = three_thousand
    streamed = run_python(MEMORY, root / "data", root / f"cache{workers}", workers)
    in_memory = run_python(MEMORY, root / "data", "-", workers)
    assert streamed.returncode == 0 and in_memory.returncode == 0, streamed.stderr + in_memory.stderr
    streamed, in_memory = json.loads(streamed.stdout), json.loads(in_memory.stdout)
    decoded = streamed["decoded"]
    assert decoded == 3000 * 128 * 128 * 3  # 147 MB, which an in-memory build holds whole
    if workers == 0:
        assert streamed["growth"] < decoded / 4 < decoded < in_memory["growth"], (streamed, in_memory)
    else:  # with loader processes (each a forked copy of what it touches): still under the set
        assert streamed["growth"] < decoded / 2 < decoded < in_memory["growth"], (streamed, in_memory)


def test_jpegs_far_larger_than_the_target_are_decoded_scaled_down(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    from longtail.data.images import read_image

    y, x = np.mgrid[:600, :800]
    pixels = np.stack([x * 255 // 800, y * 255 // 600, (x + y) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "large.jpg", quality=95)
    drafted = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    scaled = read_image(tmp_path / "large.jpg", resize=64)
    assert drafted == [(100, 75)]  # an eighth: still at least 64 on the shorter side
    full = np.asarray(Image.open(tmp_path / "large.jpg").convert("RGB").resize((85, 64), Image.Resampling.BICUBIC))
    centre = full[:, 10:74].astype(int)
    assert scaled.shape == (64, 64, 3)
    assert np.abs(scaled.astype(int) - centre).mean() < 6  # the same picture, to within JPEG scaling
    read_image(tmp_path / "large.jpg", resize=400)
    assert drafted[-1] == (800, 600)  # not twice the target: decoded at full size


def test_data_info_says_where_each_split_is_held_and_how_large_its_cache_would_be(tmp_path, capsys):
    from longtail.cli import main

    write_jpegs(tmp_path / "data", [20, 10])
    common = [f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["data", "info", *common]) == 0
    out = capsys.readouterr().out
    assert "train: read from the files every epoch (they differ in size" in out
    assert f"at 256, {30 * 256 * 256 * 3 / 1e6:.1f} MB" in out
    assert main(["data", "info", *common, "data.resize=64"]) == 0
    out = capsys.readouterr().out
    size = 128 + 30 * 64 * 64 * 3
    assert f"train: to be decoded once into the cache at 64x64: {size / 1e3:.1f} KB in {tmp_path / 'cache'}" in out
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npy"))  # nothing decoded
    assert main(["data", "info", *common, "data.resize=64", "data.cache=false"]) == 0
    assert "train: decoded in memory when a run starts" in capsys.readouterr().out
    read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=64, num_workers=0)
    assert main(["data", "info", *common, "data.resize=64"]) == 0
    assert "train: decoded once into the cache: " in capsys.readouterr().out


def test_sets_too_large_for_memory_are_read_from_their_files_when_the_cache_is_off(tmp_path, monkeypatch):
    import longtail.data.storage as storage
    from longtail.data.images import ImageFiles

    write_jpegs(tmp_path / "data", [20, 10])
    monkeypatch.setattr(storage, "machine_memory", lambda: 4 * 30 * 32 * 32 * 3 - 4)
    splits = read_folder(tmp_path / "data", resize=32, num_workers=0)
    assert isinstance(splits.train.images, ImageFiles) and "over 25% of this machine's memory" in splits.train.storage
    assert splits.train.images[0].shape == (32, 32, 3)  # resized as it is read
    monkeypatch.setattr(storage, "machine_memory", lambda: 4 * 30 * 32 * 32 * 3)
    assert isinstance(read_folder(tmp_path / "data", resize=32, num_workers=0).train.images, np.ndarray)


def test_images_of_different_sizes_with_the_cache_on_reserve_nothing(tmp_path, monkeypatch):
    import shutil

    from longtail.data.images import ImageFiles

    write_jpegs(tmp_path / "data", [20, 10])  # sides 40 to 90: every size differs
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    splits = read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", num_workers=0)
    assert isinstance(splits.train.images, ImageFiles) and "differ in size" in splits.train.storage
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npy"))


def test_a_build_stopped_by_an_unreadable_image_leaves_nothing(tmp_path):
    write_jpegs(tmp_path / "data", [20, 10])
    (tmp_path / "data/train/class001/0002.jpg").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="0002.jpg"):
        read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, num_workers=0)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    for path in (tmp_path / "data/train").glob("*/*.jpg"):
        path.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="no readable image"):
        read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, num_workers=0, on_corrupt="skip")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]


def test_a_stopped_build_of_files_changed_since_is_removed(tmp_path, capsys):
    import os

    write_jpegs(tmp_path / "data", [20, 10])
    killed = run_python(KILLED_BUILD.replace("% 3", "% 1"), tmp_path / "data", tmp_path / "cache", 2)
    assert killed.returncode == -9
    (stale,) = (tmp_path / "cache").glob("data-train-*.partial.npy")
    changed = tmp_path / "data/train/class000/0001.jpg"
    os.utime(changed, ns=(1, 1))  # another modification time: another key
    read_folder(tmp_path / "data", cache_dir=tmp_path / "cache", resize=16, num_workers=0, on_corrupt="skip")
    assert f"removing a stopped build of data-train for other files or options: {stale}" in capsys.readouterr().err
    assert not stale.exists() and not list((tmp_path / "cache").glob("*.partial.*"))
