"""A decoded-image cache: images decoded once into a uint8 array on disk, memory-mapped.

An entry is keyed by the source files (path, size, modification time) and the options
that shape the decoding, so a changed, added or removed file makes a new entry. Each
entry is two files, written atomically: ``<key>.npy`` (the images, ``[N, H, W, 3]``
uint8) and ``<key>.json`` (labels and class names), the second written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from longtail.data.images import LabeledImages
from longtail.files import atomic_path, atomic_write_text


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/longtail``, by default ``~/.cache/longtail``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longtail"


def fingerprint(files: Sequence[Path], options: dict) -> str:
    """A key that changes when any file's path, size or modification time changes."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _load(images_path: Path, meta_path: Path) -> LabeledImages:
    meta = json.loads(meta_path.read_text())
    images = np.load(images_path, mmap_mode="r")
    labels = np.asarray(meta["labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"holds {images.shape} {images.dtype} for {len(labels)} labels")
    size = images_path.stat().st_size
    if size != images.offset + images.nbytes:
        raise ValueError(f"{size} bytes where {images.offset + images.nbytes} were written")
    return LabeledImages(images, labels, list(meta["classes"]), list(meta.get("skipped", [])))


def cached(
    cache_dir: str | Path,
    name: str,
    files: Sequence[Path],
    options: dict,
    build: Callable[[], LabeledImages],
) -> LabeledImages:
    """The images ``build()`` decodes from ``files``, from the cache when it has them
    (images that ``build`` leaves in their files are not kept).

    A damaged entry (a truncated or foreign file) is reported in a warning naming the
    file, and rebuilt.
    """
    key = f"{name}-{fingerprint(files, options)}"
    images_path = Path(cache_dir) / f"{key}.npy"
    meta_path = images_path.with_suffix(".json")
    if meta_path.exists():
        try:
            return _load(images_path, meta_path)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
            warnings.warn(f"damaged cache entry {images_path} ({error}): rebuilding it", stacklevel=2)
    start = time.perf_counter()
    data = build()
    if not isinstance(data.images, np.ndarray):  # read from the files when used: nothing to keep
        return data
    with atomic_path(images_path) as temporary:
        with open(temporary, "wb") as f:
            np.save(f, np.ascontiguousarray(data.images))
    meta = {"labels": data.labels.tolist(), "classes": data.classes, "skipped": data.skipped}
    atomic_write_text(meta_path, json.dumps(meta))
    print(f"cached {len(data)} decoded images in {time.perf_counter() - start:.0f} s: {images_path}",
          file=sys.stderr)
    return _load(images_path, meta_path)
