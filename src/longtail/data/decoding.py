"""Decoding image files on every core, chunk by chunk, into an array in memory or a file.

The loader processes decode chunks of files; the main process writes each chunk where it
belongs as it arrives, in order, so memory holds a few chunks whatever the set's size.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from torch.utils.data import DataLoader, Dataset

from longtail.data.images import LabeledImages, open_image, unreadable

#: Bytes of decoded pixels per chunk: large enough that a chunk's overhead is small (ten
#: 256-pixel images), small enough that the chunks in flight (two per loader process, each
#: also pickled once on its way) stay a few tens of MB.
CHUNK_BYTES = 2 << 20


@dataclass
class ImageSource:
    """Image files to decode: their labels, the class names, a name for messages and for
    the cache entry, and how to decode them (``resize``, ``on_corrupt``)."""

    name: str
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    resize: int | None = None
    on_corrupt: str = "error"

    def labeled(self, images, skipped: set[int], storage: str) -> LabeledImages:
        """The ``LabeledImages`` of ``images``, the files of the positions in ``skipped`` left out."""
        kept = np.setdiff1d(np.arange(len(self.files)), np.fromiter(skipped, dtype=np.int64))
        return LabeledImages(images, self.labels[kept], self.classes,
                             [str(self.files[i]) for i in sorted(skipped)], storage)


class Chunk(NamedTuple):
    """A decoded chunk: the pixels of its readable files ``[k, H, W, 3]``, their positions,
    the unreadable files (position, reason), and the first file of another size (position,
    shape), at which the chunk stopped."""

    pixels: np.ndarray
    kept: list[int]
    failed: list[tuple[int, str]]
    mismatch: tuple[int, tuple[int, ...]] | None


class _Chunks(Dataset):
    """Chunk ``i`` is the files ``bounds[i]`` decoded by ``read_image``.

    The paths are held in one NumPy array, not a list of ``Path`` objects: a forked loader
    process reading a Python object writes its reference count, and so copies the page it
    lies on; one array of characters is read without writing anything, so the processes
    share it whatever the number of files."""

    def __init__(self, source: ImageSource, shape: tuple[int, int, int], bounds: list[tuple[int, int]]) -> None:
        self.paths = np.array([os.fspath(path) for path in source.files])
        self.resize, self.shape, self.bounds = source.resize, shape, np.asarray(bounds)

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, index: int) -> Chunk:
        from longtail.data.images import read_image

        start, stop = (int(bound) for bound in self.bounds[index])
        pixels = np.empty((stop - start, *self.shape), dtype=np.uint8)
        kept, failed = [], []
        for position in range(start, stop):
            try:
                image = read_image(Path(str(self.paths[position])), self.resize)
            except OSError as error:
                failed.append((position, str(error)))
                continue
            except Exception as error:  # a damaged file makes Pillow raise almost any type
                failed.append((position, f"{type(error).__name__}: {error}"))
                continue
            if image.shape != self.shape:
                return Chunk(pixels[: len(kept)], kept, failed, (position, image.shape))
            pixels[len(kept)] = image
            kept.append(position)
        return Chunk(pixels[: len(kept)], kept, failed, None)


def _as_is(chunk: Chunk) -> Chunk:
    return chunk


def first_shape(source: ImageSource) -> tuple[int, int, int]:
    """The decoded shape of the set's images: ``resize``'s square, or the size in the
    header of the first file that opens (no pixels are read)."""
    if source.resize is not None:
        return (source.resize, source.resize, 3)
    for path in source.files:
        try:
            with open_image(path) as image:
                width, height = image.size
                return (height, width, 3)
        except OSError:
            continue
    raise ValueError(f"{source.name}: no readable image")


def uniform_shape(source: ImageSource) -> tuple[int, int, int] | None:
    """``first_shape`` when every file's header says that size (read until one differs),
    else ``None``, with a warning naming two sizes."""
    shape = first_shape(source)
    if source.resize is not None:
        return shape
    for position, path in enumerate(source.files):
        try:
            with open_image(path) as image:
                width, height = image.size
        except OSError:
            continue
        if (height, width, 3) != shape:
            _warn_sizes_differ(source, shape, position, (height, width, 3))
            return None
    return shape


@dataclass
class Progress:
    """Where a decoding stands: files done (every file before ``done`` decoded or
    skipped), rows written, and the positions skipped as unreadable."""

    done: int = 0
    written: int = 0
    skipped: set[int] | None = None

    def __post_init__(self) -> None:
        self.skipped = set(self.skipped or ())


def decode_into(
    source: ImageSource,
    shape: tuple[int, int, int],
    write: Callable[[int, np.ndarray], None],
    num_workers: int | None = None,
    progress: Progress | None = None,
    checkpoint: Callable[[Progress], None] | None = None,
    checkpoint_every: float = 5.0,
) -> Progress | None:
    """Decode ``source``'s files, from ``progress.done`` on, with ``num_workers`` loader
    processes (``None``: one per core available; 0: in this process), calling ``write(row, pixels)``
    with each chunk's images at the next free rows, in file order, and ``checkpoint``
    every ``checkpoint_every`` seconds and at the end.

    An unreadable file is an error naming it, or with ``on_corrupt="skip"`` a warning and
    a position in ``skipped``. Returns the final ``Progress``, or ``None`` when a file
    decodes to another shape than ``shape`` (images of different sizes, without resize).
    """
    progress = progress or Progress()
    total = len(source.files)
    rows = max(1, min(1024, CHUNK_BYTES // int(np.prod(shape))))
    bounds = [(start, min(start + rows, total)) for start in range(progress.done, total, rows)]
    workers = len(os.sched_getaffinity(0)) if num_workers is None else num_workers
    loader = DataLoader(_Chunks(source, shape, bounds), batch_size=None, collate_fn=_as_is,
                        num_workers=min(workers, len(bounds) - 1))  # a single chunk: no process to start
    report = _Report(source.name, total, progress.done)
    last_checkpoint = time.monotonic()
    for (start, stop), chunk in zip(bounds, _chunks(loader, source.name)):
        for position, reason in chunk.failed:
            unreadable(source.files[position], OSError(reason), source.on_corrupt)
            progress.skipped.add(position)
        if chunk.mismatch is not None:
            report.close()
            _warn_sizes_differ(source, shape, *chunk.mismatch)
            return None
        if chunk.kept:
            write(progress.written, chunk.pixels)
        progress.written += len(chunk.kept)
        progress.done = stop
        report.update(progress.done)
        if checkpoint is not None and time.monotonic() - last_checkpoint > checkpoint_every:
            checkpoint(progress)
            last_checkpoint = time.monotonic()
    report.close()
    if progress.written == 0:
        raise ValueError(f"{source.name}: no readable image")
    if checkpoint is not None:
        checkpoint(progress)
    return progress


def _chunks(loader: DataLoader, name: str):
    """The loader's chunks; a loader process that died (killed for memory) is one line."""
    try:
        yield from loader
    except RuntimeError as error:
        raise ValueError(f"{name}: a decoding process stopped ({str(error).splitlines()[0]}); "
                         "data.num_workers=0 decodes in the main process") from None


def _warn_sizes_differ(source: ImageSource, shape: tuple[int, ...], position: int, other: tuple[int, ...]) -> None:
    warnings.warn(
        f"{source.name}: images differ in size (the first is {shape[1]}x{shape[0]}, "
        f"{source.files[position].name} {other[1]}x{other[0]}): they are read from their files every "
        "epoch; data.resize=N decodes them once, resized", stacklevel=4)


class _Report:
    """Progress of a long decoding: a bar on a terminal (images, images/s, time left), a
    line a minute in a log."""

    def __init__(self, name: str, total: int, done: int) -> None:
        from tqdm import tqdm

        self.name, self.total, self.start_done = name, total, done
        self.start = self.last_line = time.monotonic()
        self.bar = tqdm(total=total, initial=done, desc=f"decoding {name}", unit="image", unit_scale=True,
                        disable=not sys.stderr.isatty())

    def update(self, done: int) -> None:
        self.bar.update(done - self.bar.n)
        now = time.monotonic()
        if self.bar.disable and now - self.last_line > 60:
            rate = (done - self.start_done) / (now - self.start)
            left = (self.total - done) / rate if rate > 0 else float("inf")
            print(f"decoding {self.name}: {done}/{self.total} images, {rate:.0f} images/s, "
                  f"{left / 60:.0f} min left", file=sys.stderr, flush=True)
            self.last_line = now

    def close(self) -> None:
        self.bar.close()


def decode_in_memory(source: ImageSource, shape: tuple[int, int, int],
                     num_workers: int | None = None) -> LabeledImages | None:
    """``source`` decoded into one array in memory (``decode_into``); ``None`` when its
    images differ in size."""
    images = np.empty((len(source.files), *shape), dtype=np.uint8)

    def write(row: int, pixels: np.ndarray) -> None:
        images[row : row + len(pixels)] = pixels

    progress = decode_into(source, shape, write, num_workers)
    if progress is None:
        return None
    return source.labeled(images[: progress.written], progress.skipped, "decoded in memory")

