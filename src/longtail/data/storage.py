"""Where a set's decoded images are held: the cache, memory, or their files (read every epoch)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from longtail.data.cache import CacheEntry, cached, free_bytes, human_bytes, npy_layout
from longtail.data.decoding import ImageSource, decode_in_memory, first_shape
from longtail.data.images import ImageFiles, LabeledImages, open_image, unreadable

#: The share of the machine's memory a set may take decoded in memory when the cache is
#: off; a larger set is read from its files every epoch.
MEMORY_SHARE = 0.25

SIZES_DIFFER = "read from the files every epoch (they differ in size; data.resize=N decodes them once)"


def decoded(source: ImageSource, options: dict, cache_dir: Path | None, num_workers: int | None = None,
            decode: bool = True) -> LabeledImages:
    """The images of ``source``, held the best way this machine allows (``storage`` says
    which):

    - with ``cache_dir``, decoded once into the cache (``longtail.data.cache``, an entry
      keyed by the files and ``options``) and memory-mapped from it;
    - without, decoded into memory when they take under ``MEMORY_SHARE`` of it;
    - else, and whenever the images differ in size (without ``resize``), read from their
      files every epoch (their headers checked now).

    Decoding runs on ``num_workers`` loader processes (``None``: one per core). With
    ``decode=False`` only the headers are read: the files come back as ``ImageFiles`` and
    ``storage`` says what a run would do, and at what size (``longtail data info``).
    """
    entry = None
    if cache_dir is not None:
        if source.resize is not None:  # resized JPEGs are decoded in draft mode since it came in
            options = {**options, "resize": source.resize, "decoding": "draft"}
        entry = CacheEntry(cache_dir, source, {**options, "on_corrupt": source.on_corrupt})
    if not decode:
        return planned(source, entry)
    if entry is not None:
        images = cached(entry, num_workers)
    else:
        shape = first_shape(source)
        if _decoded_size(source, shape) > MEMORY_SHARE * machine_memory():
            return read_when_used(source, _too_large(source, shape))
        images = decode_in_memory(source, shape, num_workers)
    return images if images is not None else read_when_used(source, SIZES_DIFFER)


def planned(source: ImageSource, entry: CacheEntry | None) -> LabeledImages:
    """``source``'s readable files, their ``storage`` what ``decoded`` would do with them."""
    built = entry.built() if entry is not None else None
    if built is not None:
        return built
    kept, sizes = _readable(source)
    listed = read_when_used(source, "", kept)
    shape = first_shape(source) if source.resize is not None or len(sizes) == 1 else None
    if shape is None:
        would = human_bytes(len(kept) * 256 * 256 * 3)
        listed.storage = f"{SIZES_DIFFER[:-1]}; at 256, {would})"
    elif entry is not None:
        size = npy_layout(shape, len(source.files))[1]
        listed.storage = (f"to be decoded once into the cache at {shape[1]}x{shape[0]}: {human_bytes(size)} in "
                          f"{entry.directory}, which has {human_bytes(free_bytes(entry.directory))} free")
        stopped = entry.stopped_build(shape)
        if stopped is not None:
            listed.storage += f"; a stopped build continues from image {stopped.done} of {len(source.files)}"
    elif _decoded_size(source, shape) > MEMORY_SHARE * machine_memory():
        listed.storage = _too_large(source, shape)
    else:
        listed.storage = f"decoded in memory when a run starts ({human_bytes(_decoded_size(source, shape))})"
    return listed


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _decoded_size(source: ImageSource, shape: tuple[int, int, int]) -> int:
    return len(source.files) * int(np.prod(shape))


def _too_large(source: ImageSource, shape: tuple[int, int, int]) -> str:
    return (f"read from the files every epoch (decoded, they would take {human_bytes(_decoded_size(source, shape))},"
            f" over {MEMORY_SHARE:.0%} of this machine's memory; the cache, data.cache=true, holds them on disk)")


def read_when_used(source: ImageSource, storage: str, readable: list[int] | None = None) -> LabeledImages:
    """``source`` as ``ImageFiles`` of its ``readable`` files (by default, those whose
    header reads: an unreadable one is an error, or left out with ``on_corrupt="skip"``)."""
    kept = _readable(source)[0] if readable is None else readable
    skipped = set(range(len(source.files))) - set(kept)
    return source.labeled(ImageFiles([source.files[i] for i in kept], source.resize), skipped, storage)


def _readable(source: ImageSource) -> tuple[list[int], set[tuple[int, int]]]:
    """The positions of the files whose image header reads (no pixels are read), and
    the sizes the headers give."""
    from tqdm import tqdm

    kept, sizes = [], set()
    for position, path in enumerate(tqdm(source.files, desc=f"checking {source.name}", unit="image",
                                         disable=not sys.stderr.isatty())):
        try:
            with open_image(path) as image:
                sizes.add(image.size)
        except OSError as error:
            unreadable(path, error, source.on_corrupt)
            continue
        kept.append(position)
    return kept, sizes
