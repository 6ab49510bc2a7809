"""Class files: one name per line, in label order. Light (no torch), shared by every command."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Sequence

from .errors import AWTError
from .files import read_lines


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line; blank lines and ``#`` comments ignored. Order is label order."""
    names = [line for _, line in read_lines(path, "class")]
    if not names:
        raise AWTError(f"{path}: class file has no class names")
    return names


def duplicate_names(names: Sequence[str]) -> dict[str, int]:
    """Names that occur more than once, with their counts."""
    return {n: c for n, c in Counter(names).items() if c > 1}


def duplicates_message(names: Sequence[str], where: str = "") -> str | None:
    """The one line that says which names occur more than once (None if none do)."""
    dups = duplicate_names(names)
    if not dups:
        return None
    listed = ", ".join(f"{n!r} x{c}" for n, c in list(dups.items())[:5]) + (" ..." if len(dups) > 5 else "")
    return (f"{where + ': ' if where else ''}duplicate class names appear more than once, kept as distinct "
            f"classes (by index): {listed}")


def warn_duplicates(names: Sequence[str], where: str = "") -> None:
    """One warning listing duplicate names; they stay distinct classes (by index)."""
    message = duplicates_message(names, where)
    if message:
        warnings.warn(message, stacklevel=2)
