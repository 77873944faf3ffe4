"""Labelled image sets: decoded arrays, or image files read when used."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from longtail.files import refuse_irregular


def read_image(path: Path, resize: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB ``[H, W, 3]`` (grey, palette, RGBA and CMYK converted);
    with ``resize``, its shorter side resized to ``resize`` and the centre square kept.
    Raises ``OSError`` when the file is unreadable.

    A JPEG at least twice ``resize`` on both sides is decoded at a half, a quarter or an
    eighth of its size (Pillow's draft mode, the decoder's own DCT scaling), never below
    ``resize``: faster for large sources (iNaturalist's 800 pixels at 256; ImageNet's
    typical 500x375 is under twice 256 and decodes whole).
    """
    from PIL import ImageOps

    with open_image(path) as image:
        if resize is not None:
            image.draft(None, (resize, resize))
        image = image.convert("RGB")
        if resize is not None:
            image = ImageOps.fit(image, (resize, resize), method=Image.Resampling.BICUBIC)
        return np.asarray(image)


def open_image(path: Path):
    """``PIL.Image.open`` of a regular file (a FIFO or a device would block the run), its
    header read. Every refusal is an ``OSError``: an image whose header claims more pixels
    than Pillow's limit (a decompression bomb) too."""
    refuse_irregular(path)
    try:
        with warnings.catch_warnings():  # Pillow only warns between its limit and twice it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise OSError(f"refused as a decompression bomb: {error}") from None


class ImageFiles:
    """Images read from their files whenever they are indexed: for sets too large, or too
    varied in size, to decode once. ``files[i]`` is uint8 ``[H, W, 3]``, resized as
    ``read_image`` does with ``resize``; indexing with an array of positions gives the
    ``ImageFiles`` of those files."""

    def __init__(self, files: Sequence[Path], resize: int | None = None) -> None:
        self.files = list(files)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            try:
                return read_image(self.files[index], self.resize)
            except OSError as error:
                unreadable(self.files[index], error, "error")
        return ImageFiles([self.files[i] for i in np.arange(len(self.files))[index].tolist()], self.resize)


def unreadable(path: Path, error: OSError, on_corrupt: str) -> None:
    """Raise ``ValueError`` naming the unreadable ``path``; with ``on_corrupt="skip"``, warn."""
    if on_corrupt != "skip":
        raise ValueError(f"{path}: cannot read image ({error})") from None
    warnings.warn(f"{path}: skipped, cannot read image ({error})", stacklevel=3)


@dataclass
class LabeledImages:
    """Images ``[N, H, W, 3]`` uint8 (an array, or ``ImageFiles`` of any sizes), labels
    ``[N]`` int64 in ``[0, C)``, class names, the files left out as unreadable (with
    ``on_corrupt="skip"``), and where the images are held, in words (``longtail data info``)."""

    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    storage: str = "decoded in memory"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[indices], self.labels[indices], self.classes, self.skipped, self.storage)

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class DataSplits:
    """The training set, the test set, and a validation set where the data has one."""

    train: LabeledImages
    test: LabeledImages
    val: LabeledImages | None = None


