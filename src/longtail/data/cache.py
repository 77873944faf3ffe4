"""A decoded-image cache: images decoded once into a uint8 ``.npy`` on disk, memory-mapped.

An entry is keyed by the source files (path, size, modification time) and the options
that shape the decoding, so a changed, added or removed file makes a new entry. An entry
is ``<key>.npy`` (the images, ``[N, H, W, 3]`` uint8) and ``<key>.json`` (labels, class
names, skipped files), the second written last: only an entry with both loads.

The ``.npy`` is written as it is decoded, so memory holds a few chunks whatever the set's
size: ``<key>.partial.npy`` is allocated on disk at its full size (after a check that the
disk has room), filled in file order by ``decode_into``, and renamed when complete.
``<key>.partial.json`` records how far it got every few seconds, so a build that was
stopped continues where it stopped. A lock keeps two processes from building one entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from longtail.data.decoding import ImageSource, Progress, decode_into, uniform_shape
from longtail.data.images import LabeledImages
from longtail.files import atomic_write_text, read_text

_DAMAGE = (OSError, ValueError, KeyError, TypeError, EOFError)

#: Seconds between the records of how far a build got (each waits for its pixels to reach the disk).
CHECKPOINT_SECONDS = 5.0


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


def npy_header(shape: tuple[int, int, int], count: int) -> bytes:
    """The header of a uint8 ``.npy`` of ``count`` images of ``shape``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (count, *shape)})
    return buffer.getvalue()


def npy_layout(shape: tuple[int, int, int], count: int) -> tuple[int, int]:
    """The header length and the total size in bytes of a uint8 ``.npy`` of ``count`` images."""
    offset = len(npy_header(shape, count))
    return offset, offset + count * int(np.prod(shape))


def human_bytes(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class CacheEntry:
    """The files of one entry: ``<key>.npy`` and ``<key>.json`` when built, ``<key>.partial.npy``
    and ``<key>.partial.json`` while it is built, ``.<key>.lock`` held by its builder."""

    def __init__(self, directory: str | Path, source: ImageSource, options: dict) -> None:
        self.directory = Path(directory)
        self.source = source
        key = f"{source.name}-{fingerprint(source.files, options)}"
        self.images = self.directory / f"{key}.npy"
        self.meta = self.directory / f"{key}.json"
        self.partial = self.directory / f"{key}.partial.npy"
        self.state = self.directory / f"{key}.partial.json"
        self.lock = self.directory / f".{key}.lock"

    def load(self) -> LabeledImages:
        """The entry, memory-mapped; ``ValueError`` (or ``OSError``) when it is damaged."""
        meta = json.loads(read_text(self.meta))
        images = np.load(self.images, mmap_mode="r")
        labels = np.asarray(meta["labels"], dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) < len(labels):
            raise ValueError(f"holds {images.shape} {images.dtype} for {len(labels)} labels")
        size = self.images.stat().st_size
        if size != images.offset + images.nbytes:
            raise ValueError(f"{size} bytes where {images.offset + images.nbytes} were written")
        return LabeledImages(images[: len(labels)], labels, list(meta["classes"]), list(meta.get("skipped", [])),
                             f"decoded once into the cache: {self.images}")

    def built(self) -> LabeledImages | None:
        """The entry when it is built and sound; a damaged one is named in a warning."""
        if not self.meta.exists():
            return None
        try:
            return self.load()
        except _DAMAGE as error:
            warnings.warn(f"damaged cache entry {self.images} ({error}): rebuilding it", stacklevel=3)
            return None

    def stopped_build(self, shape: tuple[int, int, int]) -> Progress | None:
        """How far a stopped build of this entry got, when its record is sound and its file
        (``.partial.npy``, or ``.npy`` when the build stopped after renaming it) is whole."""
        if not self.state.exists():
            return None
        try:
            state = json.loads(read_text(self.state))
            total, size = len(self.source.files), npy_layout(shape, len(self.source.files))[1]
            if tuple(state["shape"]) != shape or state["total"] != total:
                raise ValueError("it was for another shape")
            done, written, skipped = int(state["done"]), int(state["written"]), {int(i) for i in state["skipped"]}
            if not (0 <= done <= total and written + len(skipped) == done and all(0 <= i < done for i in skipped)):
                raise ValueError("its record does not add up")
            built = self.partial if self.partial.exists() else self.images
            if built.stat().st_size != size:
                raise ValueError(f"{built} holds {built.stat().st_size} bytes, not {size}")
            return Progress(done, written, skipped)
        except _DAMAGE as error:
            print(f"a stopped build of the cache of {self.source.name} cannot be continued ({error}): "
                  "building it again", file=sys.stderr)
            return None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Held while the entry is built: a second process waits, then finds it built. (The
        loader processes share the lock's open file: after a kill it is free once they have
        noticed and ended, within seconds.)"""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process that is caching {self.source.name} ({self.lock})",
                      file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(self, shape: tuple[int, int, int], num_workers: int | None = None) -> LabeledImages | None:
        """Decode the source into the entry, continuing a stopped build; ``None`` when the
        images turn out to differ in size. A build stopped by an error (an unreadable image)
        leaves nothing; one stopped by a kill or Ctrl-C is continued by the next."""
        total = len(self.source.files)
        offset, size = npy_layout(shape, total)
        progress = self.stopped_build(shape)
        if progress is not None and not self.partial.exists():  # stopped between the rename and the meta
            if progress.done == total:
                return self._finish(progress)
            progress = None
        if progress is None:
            self.discard()
        self._remove_stale_builds()
        room = size - (self.partial.stat().st_blocks * 512 if progress is not None else 0)
        check_disk_space(self.directory, room, self.source.name)
        if progress is None:
            self._allocate(shape, total, size)
            print(f"caching {total} images of {self.source.name} at {shape[1]}x{shape[0]} "
                  f"({human_bytes(size)}): {self.images}", file=sys.stderr, flush=True)
        else:
            print(f"continuing the cache of {self.source.name} where a stopped build left it: "
                  f"{progress.done} of {total} images done", file=sys.stderr, flush=True)
        start = time.perf_counter()
        row_bytes = int(np.prod(shape))
        descriptor = os.open(self.partial, os.O_RDWR)
        try:
            def write(row: int, pixels: np.ndarray) -> None:
                _write_all(descriptor, np.ascontiguousarray(pixels), offset + row * row_bytes)

            def checkpoint(progress: Progress) -> None:
                os.fsync(descriptor)  # the pixels reach the disk before the record that says so
                atomic_write_text(self.state, json.dumps({
                    "shape": list(shape), "total": total, "done": progress.done,
                    "written": progress.written, "skipped": sorted(progress.skipped)}))

            progress = decode_into(self.source, shape, write, num_workers, progress, checkpoint, CHECKPOINT_SECONDS)
        except ValueError:  # an unreadable image, or none readable: nothing to continue
            self.discard()
            raise
        finally:
            os.close(descriptor)
        if progress is None:
            self.discard()
            return None
        print(f"cached {progress.written} images of {self.source.name} in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
        return self._finish(progress)

    def _finish(self, progress: Progress) -> LabeledImages:
        """Rename the complete ``.partial.npy`` and write the meta, which makes the entry."""
        if self.partial.exists():
            os.replace(self.partial, self.images)
        kept = self.source.labeled(None, progress.skipped, "")
        atomic_write_text(self.meta, json.dumps(
            {"labels": kept.labels.tolist(), "classes": kept.classes, "skipped": kept.skipped}))
        self.state.unlink(missing_ok=True)
        return self.load()

    def _remove_stale_builds(self) -> None:
        """Remove the stopped builds of this set's name under another key (its files or
        options changed since) that no process is building: they can never continue."""
        prefix = self.images.name.rsplit("-", 1)[0]
        for partial in self.directory.glob(f"{prefix}-*.partial.npy"):
            key = partial.name.removesuffix(".partial.npy")
            if partial == self.partial or not key.removeprefix(f"{prefix}-").isalnum():
                continue
            with open(self.directory / f".{key}.lock", "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being built now
                print(f"removing a stopped build of {self.source.name} for other files or options: {partial}",
                      file=sys.stderr)
                partial.unlink(missing_ok=True)
                (self.directory / f"{key}.partial.json").unlink(missing_ok=True)

    def _allocate(self, shape: tuple[int, int, int], total: int, size: int) -> None:
        """A ``.partial.npy`` with its header, its whole size reserved on disk (so that a
        disk filled by someone else fails here, not in the middle)."""
        self.state.unlink(missing_ok=True)
        descriptor = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(descriptor, npy_header(shape, total))
            os.posix_fallocate(descriptor, 0, size)
        except OSError as error:
            self.partial.unlink(missing_ok=True)
            raise ValueError(f"{self.directory}: cannot reserve {size} bytes to cache "
                             f"{self.source.name} ({error.strerror or error})") from None
        finally:
            os.close(descriptor)

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)


def _write_all(descriptor: int, pixels: np.ndarray, position: int) -> None:
    view = memoryview(pixels).cast("B")
    while view:
        written = os.pwrite(descriptor, view, position)
        view, position = view[written:], position + written


def free_bytes(directory: Path) -> int:
    """The bytes free on the disk of ``directory`` (or of its nearest existing parent)."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return shutil.disk_usage(directory).free


def check_disk_space(directory: Path, needed: int, name: str) -> None:
    """``ValueError`` naming the bytes and the directory when ``needed`` bytes do not fit."""
    free = free_bytes(directory)
    if needed > free:
        raise ValueError(
            f"{directory}: too little disk space to cache {name}: {needed} bytes ({human_bytes(needed)}) "
            f"needed, {free} ({human_bytes(free)}) free; free some, set data.cache_dir to a larger disk, "
            "or data.cache=false to read the images from their files every epoch")


def cached(entry: CacheEntry, num_workers: int | None = None) -> LabeledImages | None:
    """The images of ``entry``, decoded into it first when it is not built
    (``CacheEntry.build``); ``None`` when the images differ in size.

    A damaged entry (a truncated or foreign file) is reported in a warning naming the
    file, and rebuilt.
    """
    images = entry.built()
    if images is not None:
        return images
    shape = uniform_shape(entry.source)  # without resize: every header read, until one differs
    if shape is None:
        return None
    with entry.locked():
        return entry.built() or entry.build(shape, num_workers)  # built meanwhile by another process?
