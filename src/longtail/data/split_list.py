"""Split lists: the ImageNet-LT / iNaturalist 2018 / Places-LT convention.

A split list is a text file of ``relative/path label`` lines; the paths are relative to
an image root. Labels are integers in ``[0, C)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longtail.data.decoding import ImageSource
from longtail.data.images import DataSplits, LabeledImages
from longtail.data.storage import decoded


def read_split_list(list_path: str | Path, root: str | Path | None = None) -> tuple[list[Path], np.ndarray]:
    """The files and labels of a split list. With ``root``, every file must exist there.

    Errors name the list, the line and the problem.
    """
    list_path = Path(list_path)
    try:
        lines = list_path.read_text().splitlines()
    except OSError as error:
        raise ValueError(f"{list_path}: cannot read split list ({error.strerror or error})") from None
    files, labels = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_path}:{number}: expected 'relative/path label', got {line.strip()!r}")
        relative, label = parts[0], int(parts[1])
        if label < 0:
            raise ValueError(f"{list_path}:{number}: label {label} is negative")
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ValueError(f"{list_path}:{number}: {relative!r} leads outside the image root; "
                             "a split list names paths relative to data.root, without '..'")
        path = Path(root) / relative if root is not None else Path(relative)
        if root is not None and not path.is_file():
            problem = "not a regular file" if path.exists() else "no such image"
            raise ValueError(f"{list_path}:{number}: {problem}: {path}")
        files.append(path)
        labels.append(label)
    if not files:
        raise ValueError(f"{list_path}: empty split list")
    return files, np.asarray(labels, dtype=np.int64)


def list_counts(list_path: str | Path) -> list[int]:
    """Images per class of a split list (its labels only; the images need not be here)."""
    _, labels = read_split_list(list_path)
    return np.bincount(labels).tolist()


def _read(list_path: Path, root: Path, num_classes: int | None, cache_dir: Path | None,
          on_corrupt: str, resize: int | None, num_workers: int | None, decode: bool) -> LabeledImages:
    files, labels = read_split_list(list_path, root)
    if num_classes is not None and labels.max() >= num_classes:
        line = int(np.argmax(labels >= num_classes)) + 1
        raise ValueError(f"{list_path}: label {labels.max()} (e.g. entry {line}) is absent from the "
                         f"training list, whose labels are 0..{num_classes - 1}")
    classes = [str(c) for c in range(num_classes if num_classes is not None else int(labels.max()) + 1)]
    source = ImageSource(list_path.stem, files, labels, classes, resize, on_corrupt)
    return decoded(source, {"reader": "list", "list": str(list_path.resolve())}, cache_dir, num_workers, decode)


def read_lists(
    root: str | Path,
    train_list: str | Path,
    test_list: str | Path,
    val_list: str | Path | None = None,
    cache_dir: str | Path | None = None,
    on_corrupt: str = "error",
    resize: int | None = None,
    num_workers: int | None = None,
    decode: bool = True,
) -> DataSplits:
    """Training, test and (optional) validation sets from split lists over ``root``
    (the other arguments: see ``longtail.data.readers.read_folder``)."""
    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else None

    def read(list_path: str | Path, num_classes: int | None) -> LabeledImages:
        return _read(Path(list_path), root, num_classes, cache_dir, on_corrupt, resize, num_workers, decode)

    train = read(train_list, None)
    test = read(test_list, len(train.classes))
    return DataSplits(train, test, read(val_list, len(train.classes)) if val_list else None)
