"""Atomic file writes: a kill leaves the previous good file, never a truncated one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The rename is atomic on POSIX file systems, so readers see either the old file or
    the complete new one. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        # after the writer: some (safetensors) replace the file they are given, and its mode
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Call ``write(file)`` on a temporary file, flush it to disk, rename it onto ``path``.

    A write that fails (a full disk, a file-size limit) raises an ``OSError`` naming
    ``path``; the previous file stays as it was and the temporary one is removed.
    """
    try:
        with atomic_path(path) as temporary:
            with open(temporary, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
    except (OSError, RuntimeError) as error:
        cause = error if isinstance(error, OSError) else error.__context__  # torch.save wraps it
        if not isinstance(cause, OSError):
            raise
        raise OSError(f"{path}: cannot write ({cause.strerror or cause}); the previous file is kept") from None


def refuse_irregular(path: str | Path) -> None:
    """``OSError`` when ``path`` exists and is not a regular file: reading a FIFO or a
    device named like a data file would block the run."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OSError("not a regular file")


def read_text(path: str | Path) -> str:
    """The text of the regular file ``path`` (``refuse_irregular``)."""
    refuse_irregular(path)
    return Path(path).read_text()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing each checkpoint atomically."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f), mode="wb")
