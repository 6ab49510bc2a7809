"""Class files: one name per line, in label order. Light (no torch), shared by every command."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from .errors import AWTError


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line; blank lines and ``#`` comments ignored. Order is label order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AWTError(f"{p}: class file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AWTError(f"{p}: cannot read class file: {e}") from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise AWTError(f"{p}: class file has no class names")
    return names


def duplicate_names(names: Sequence[str]) -> dict[str, int]:
    """Names that occur more than once, with their counts."""
    return {n: c for n, c in Counter(names).items() if c > 1}


def warn_duplicates(names: Sequence[str], where: str = "") -> None:
    """One warning on stderr listing duplicate names; they stay distinct classes (by index)."""
    dups = duplicate_names(names)
    if dups:
        listed = ", ".join(f"{n!r} x{c}" for n, c in list(dups.items())[:5]) + (" ..." if len(dups) > 5 else "")
        print(f"warning: {where + ': ' if where else ''}duplicate class names kept as distinct classes: {listed}",
              file=sys.stderr)
