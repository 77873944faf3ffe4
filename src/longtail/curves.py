"""A run's training curves: the rows of its ``metrics.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from longtail.files import atomic_write_text


def read_curves(path: Path, until_step: int | None = None) -> list[dict]:
    """The rows of a ``metrics.csv`` (up to ``until_step``, when given)."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.endswith("\n"):  # Lightning appends to this file: a kill can cut its last row
        text = text[: text.rfind("\n") + 1]
    rows = [row for row in csv.DictReader(io.StringIO(text)) if None not in row.values()]
    return [row for row in rows if until_step is None or int(row["step"]) <= until_step]


def write_curves(path: Path, rows: list[dict]) -> None:
    """``rows`` as ``path``, one column per key of any row, atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
