"""Readers: each returns uint8 RGB images ``[N, H, W, 3]`` (decoded, or ``ImageFiles`` read
when used), labels and class names."""

from __future__ import annotations

import pickle
import sys
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

import numpy as np


@dataclass
class LabeledImages:
    """Images ``[N, H, W, 3]`` uint8 (an array, or ``ImageFiles`` of any sizes), labels
    ``[N]`` int64 in ``[0, C)``, class names, and the files left out as unreadable (with
    ``on_corrupt="skip"``)."""

    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[indices], self.labels[indices], self.classes, self.skipped)

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class DataSplits:
    """The training set, the test set, and a validation set where the data has one."""

    train: LabeledImages
    test: LabeledImages
    val: LabeledImages | None = None


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


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a readable CIFAR batch ({type(error).__name__}: {error})") from None
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar(root: str | Path) -> DataSplits:
    """CIFAR-10 or CIFAR-100 in the original python pickle layout.

    CIFAR-10: ``data_batch_1..5``, ``test_batch``, ``batches.meta``; CIFAR-100:
    ``train``, ``test``, ``meta`` (fine labels). Pickles must come from a trusted source.
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
    try:
        with open(meta_file, "rb") as f:
            classes = list(pickle.load(f, encoding="latin1")[names_key])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError) as error:
        raise ValueError(f"{meta_file}: not a readable CIFAR meta file ({error})") from None
    parts = [_read_cifar_batch(root / name, label_key) for name in files]
    train = LabeledImages(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), classes
    )
    test = LabeledImages(*_read_cifar_batch(root / test_file, label_key), classes)
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
        members = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not members and every_class_needed:
            raise ValueError(f"{folder}: empty class folder")
        files += members
        labels += [label] * len(members)
    return classes, files, labels


def read_image(path: Path, resize: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB ``[H, W, 3]`` (grey, palette, RGBA and CMYK converted);
    with ``resize``, its shorter side resized to ``resize`` and the centre square kept.
    Raises ``OSError`` when the file is unreadable."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = image.convert("RGB")
        if resize is not None:
            image = ImageOps.fit(image, (resize, resize), method=Image.Resampling.BICUBIC)
        return np.asarray(image)


class ImageFiles:
    """Images read from their files whenever they are indexed, of any size: for sets too
    large, or too varied in size, to decode once. ``files[i]`` is uint8 ``[H, W, 3]``;
    indexing with an array of positions gives the ``ImageFiles`` of those files."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            try:
                return read_image(self.files[index])
            except OSError as error:
                _unreadable(self.files[index], error, "error")
        return ImageFiles([self.files[i] for i in np.arange(len(self.files))[index].tolist()])


def _unreadable(path: Path, error: OSError, on_corrupt: str) -> None:
    if on_corrupt != "skip":
        raise ValueError(f"{path}: cannot read image ({error})") from None
    warnings.warn(f"{path}: skipped, cannot read image ({error})", stacklevel=3)


def _readable_files(files: list[Path], name: str, on_corrupt: str) -> list[int]:
    """The positions of the files whose image header reads (PIL reads no pixels)."""
    from PIL import Image
    from tqdm import tqdm

    kept = []
    for position, path in enumerate(tqdm(files, desc=f"checking {name}", unit="image",
                                         disable=not sys.stderr.isatty())):
        try:
            Image.open(path).close()
        except OSError as error:
            _unreadable(path, error, on_corrupt)
            continue
        kept.append(position)
    return kept


def decode_images(
    files: list[Path], name: str, on_corrupt: str = "error", resize: int | None = None
) -> tuple[np.ndarray | ImageFiles, list[int]]:
    """Decode image files to one uint8 RGB array ``[N, H, W, 3]``, showing progress; with
    ``resize``, each resized as ``read_image`` does.

    An unreadable file is an error naming it, or with ``on_corrupt="skip"`` a warning.
    Images of different sizes (without ``resize``) are not decoded: they come back as
    ``ImageFiles``, read whenever they are used. Returns the images and the positions in
    ``files`` that were kept.
    """
    from tqdm import tqdm

    images, kept = None, []  # one array, filled in place: a single decoded copy in memory
    progress = tqdm(files, desc=f"decoding {name}", unit="image", disable=not sys.stderr.isatty())
    for position, path in enumerate(progress):
        try:
            pixels = read_image(path, resize)
        except OSError as error:
            _unreadable(path, error, on_corrupt)
            continue
        if images is None:
            images = np.empty((len(files) - position, *pixels.shape), dtype=np.uint8)
        elif pixels.shape != images.shape[1:]:
            progress.close()
            warnings.warn(
                f"{name}: images differ in size ({files[kept[0]].name} is {images.shape[2]}x"
                f"{images.shape[1]}, {path.name} {pixels.shape[1]}x{pixels.shape[0]}): they are "
                "read from their files every epoch; data.resize=N decodes them once, resized", stacklevel=2)
            rest = _readable_files(files[position + 1:], name, on_corrupt)
            kept += [position] + [position + 1 + i for i in rest]
            return ImageFiles([files[i] for i in kept]), kept
        images[len(kept)] = pixels
        kept.append(position)
    if images is None:
        raise ValueError(f"{name}: no readable image")
    return images[: len(kept)], kept


def decoded(
    files: list[Path], labels: Sequence[int], classes: list[str], name: str, options: dict,
    cache_dir: Path | None, on_corrupt: str, resize: int | None = None,
) -> LabeledImages:
    """The images of ``files`` decoded (``decode_images``), through the cache in
    ``cache_dir`` when given (an entry named ``name``, keyed by the files and ``options``)."""

    def build() -> LabeledImages:
        images, kept = decode_images(files, name, on_corrupt, resize)
        skipped = sorted(set(map(str, files)) - {str(files[i]) for i in kept})
        return LabeledImages(images, np.asarray(labels, dtype=np.int64)[kept], classes, skipped)

    if cache_dir is None:
        return build()
    from longtail.data.cache import cached

    if resize is not None:
        options = {**options, "resize": resize}
    return cached(cache_dir, name, files, {**options, "on_corrupt": on_corrupt}, build)


def _read_class_folders(root: Path, classes: list[str] | None, cache_dir: Path | None, on_corrupt: str,
                        resize: int | None) -> LabeledImages:
    classes, files, labels = _class_folder_files(root, classes)
    options = {"reader": "folder", "classes": classes}
    return decoded(files, labels, classes, f"{root.parent.name}-{root.name}", options, cache_dir, on_corrupt,
                   resize)


def read_folder(root: str | Path, cache_dir: str | Path | None = None, on_corrupt: str = "error",
                resize: int | None = None) -> DataSplits:
    """Image folders ``root/{train,test}/<class>/<image>`` (and ``root/val`` if present),
    one sub-folder per class as torchvision's ImageFolder; classes in sorted order.

    With ``cache_dir``, the decoded images are kept there (``longtail.data.cache``) and
    read back memory-mapped while the files are unchanged. ``on_corrupt="skip"`` leaves
    unreadable files out, with a warning, and lists them in ``skipped``. ``resize``: see
    ``decode_images``.
    """
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"{root}: no '{split}' folder (expected {root}/{split}/<class>/<image>)")
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    train = _read_class_folders(root / "train", None, cache_dir, on_corrupt, resize)
    val = (_read_class_folders(root / "val", train.classes, cache_dir, on_corrupt, resize)
           if (root / "val").is_dir() else None)
    return DataSplits(train, _read_class_folders(root / "test", train.classes, cache_dir, on_corrupt, resize), val)
