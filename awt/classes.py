"""Class files: one name per line, in label order. Light (no torch), shared by every command."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Sequence

from .errors import AWTError
from .files import read_lines

_log = logging.getLogger(__name__)


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names in label order: one name per line, or ``<key>\t<name>`` lines (a folder or WordNet
    id, then the name: ``benchmarks/classnames/*.tsv``), of which the names are kept. Blank lines and
    ``#`` comments are ignored."""
    names = [name for _, name in read_keyed_class_file(path, keys=False)]
    if not names:
        raise AWTError(f"{path}: class file has no class names", setting="classes")
    return names


def read_keyed_class_file(path: str | os.PathLike, keys: bool = True) -> list[tuple[str | None, str]]:
    """``(key, name)`` of each line of a class file: ``<key>\t<name>``, or ``<key> <name>`` (the first
    whitespace separates them, as CoOp's ImageNet ``classnames.txt``); with ``keys=False`` a line
    without a tab is a name alone (key None)."""
    out = []
    for number, line in read_lines(path, "class"):
        if "\t" in line:
            key, _, name = line.partition("\t")
        elif keys:
            key, _, name = line.partition(" ")
        else:
            key, name = None, line
        if not name.strip():
            raise AWTError(f"{path}: line {number}: expected '<key> <class name>', got {line!r}", setting="classes")
        out.append((key.strip() if key is not None else None, name.strip()))
    return out


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
        _log.warning(message)
