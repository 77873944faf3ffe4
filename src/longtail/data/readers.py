"""Readers: each returns uint8 RGB images ``[N, H, W, 3]`` (decoded, or ``ImageFiles`` read
when used), labels and class names."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from longtail.data.decoding import ImageSource
from longtail.data.images import DataSplits, LabeledImages
from longtail.data.storage import decoded
from longtail.files import refuse_irregular


def read_digits(test_per_class: int = 30, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as grey RGB uint8.

    A balanced test set of ``test_per_class`` images per class is drawn with ``seed``;
    the rest is the (balanced) training pool.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    rng = np.random.RandomState(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        is_test[rng.choice(members, test_per_class, replace=False)] = True
    everything = LabeledImages(images, labels, [str(c) for c in range(10)])
    return DataSplits(
        train=everything.subset(np.flatnonzero(~is_test)),
        test=everything.subset(np.flatnonzero(is_test)),
    )


#: The globals a CIFAR pickle may name: NumPy's array reconstruction, and the codec that
#: protocol 2 writes bytes with; nothing that runs code.
CIFAR_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
    for name in ("_reconstruct", "scalar", "_frombuffer")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class CifarUnpickler(pickle.Unpickler):
    """Reads the CIFAR python format and nothing else: dicts, lists, bytes, strings,
    numbers and NumPy arrays. Any other global a pickle names (a function to call, a class
    to build) is refused before it is looked up, so a crafted file runs no code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never holds")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict:
    """A CIFAR pickle: a dict, read with ``CifarUnpickler``; errors name the file."""
    try:
        refuse_irregular(path)
        with open(path, "rb") as f:
            values = CifarUnpickler(f, encoding="latin1").load()
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: refused, not a CIFAR file: {error}; nothing in it was run") from None
    except Exception as error:  # a damaged pickle raises almost any type
        raise ValueError(f"{path}: not a readable CIFAR file ({type(error).__name__}: {error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a CIFAR file (a {type(values).__name__}, not a dict)")
    return values


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (KeyError, ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{path}: not a CIFAR batch ({type(error).__name__}: {error})") from None
    if len(images) != len(labels):
        raise ValueError(f"{path}: not a CIFAR batch ({len(images)} images, {len(labels)} labels)")
    return np.ascontiguousarray(images), labels


def read_cifar(root: str | Path) -> DataSplits:
    """CIFAR-10 or CIFAR-100 in the original python pickle layout.

    CIFAR-10: ``data_batch_1..5``, ``test_batch``, ``batches.meta``; CIFAR-100:
    ``train``, ``test``, ``meta`` (fine labels). The pickles are read by
    ``CifarUnpickler``, which admits only what the format holds, so a crafted file is
    refused and runs no code.
    """
    root = Path(root)
    if (root / "meta").exists():
        files, test_file, meta_file = ["train"], "test", root / "meta"
        label_key, names_key = "fine_labels", "fine_label_names"
    elif (root / "batches.meta").exists():
        files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file = "test_batch", root / "batches.meta"
        label_key, names_key = "labels", "label_names"
    else:
        raise ValueError(f"{root}: no CIFAR 'meta' or 'batches.meta' file")
    meta = read_cifar_pickle(meta_file)
    names = meta.get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise ValueError(f"{meta_file}: not a CIFAR meta file (no list '{names_key}')")
    classes = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    parts = [_read_cifar_batch(root / name, label_key) for name in files]
    train = LabeledImages(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), classes
    )
    test = LabeledImages(*_read_cifar_batch(root / test_file, label_key), classes)
    for split, name in ((train, files[0]), (test, test_file)):
        if len(split.labels) and not 0 <= split.labels.min() <= split.labels.max() < len(classes):
            raise ValueError(f"{root / name}: labels outside 0..{len(classes) - 1}")
    return DataSplits(train=train, test=test)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _class_folder_files(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    """The class names, the image files and their labels of ``root/<class>/<image>``.

    Without ``classes`` (a training set), the classes are the sorted sub-folders and each
    must hold an image. With them (a test or validation set), a class may be missing, but
    a folder of a class not in ``classes`` is an error.
    """
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    every_class_needed = classes is None
    classes = found if classes is None else classes
    if not classes:
        raise ValueError(f"{root}: no class folders")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root / unknown[0]}: class {unknown[0]!r} is absent from the training set")
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        members = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                         and p.is_file()) if folder.is_dir() else []  # not a FIFO that blocks
        if not members and every_class_needed:
            raise ValueError(f"{folder}: empty class folder")
        files += members
        labels += [label] * len(members)
    return classes, files, labels


def _read_class_folders(root: Path, classes: list[str] | None, cache_dir: Path | None, on_corrupt: str,
                        resize: int | None, num_workers: int | None, decode: bool) -> LabeledImages:
    classes, files, labels = _class_folder_files(root, classes)
    source = ImageSource(f"{root.parent.name}-{root.name}", files, np.asarray(labels, dtype=np.int64), classes,
                         resize, on_corrupt)
    return decoded(source, {"reader": "folder", "classes": classes}, cache_dir, num_workers, decode)


def read_folder(root: str | Path, cache_dir: str | Path | None = None, on_corrupt: str = "error",
                resize: int | None = None, num_workers: int | None = None, decode: bool = True) -> DataSplits:
    """Image folders ``root/{train,test}/<class>/<image>`` (and ``root/val`` if present),
    one sub-folder per class as torchvision's ImageFolder; classes in sorted order.

    With ``cache_dir``, the decoded images are kept there (``longtail.data.cache``) and
    read back memory-mapped while the files are unchanged. ``on_corrupt="skip"`` leaves
    unreadable files out, with a warning, and lists them in ``skipped``. ``resize``: the
    shorter side resized to it and the centre square kept (``read_image``); without it,
    images of different sizes are read from their files every epoch. ``num_workers`` and
    ``decode``: see ``longtail.data.storage.decoded``.
    """
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"{root}: no '{split}' folder (expected {root}/{split}/<class>/<image>)")
    cache_dir = Path(cache_dir) if cache_dir is not None else None

    def read(split: str, classes: list[str] | None) -> LabeledImages:
        return _read_class_folders(root / split, classes, cache_dir, on_corrupt, resize, num_workers, decode)

    train = read("train", None)
    val = read("val", train.classes) if (root / "val").is_dir() else None
    return DataSplits(train, read("test", train.classes), val)
