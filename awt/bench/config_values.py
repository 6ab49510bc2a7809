"""Typed readers of a YAML config's values: each names the file and the key of a value it refuses
(``bench.yaml: settings.views: must be an integer, got 'x'``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import AWTError


def fail(path: Path, key: str, message: str) -> AWTError:
    return AWTError(f"{path}: {key}: {message}")


def check_keys(obj: Any, known: Sequence[str], where: str, path: Path) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise fail(path, where or "config", f"must be a mapping, got {type(obj).__name__}")
    for k in obj:
        if k not in known:
            key = f"{where}.{k}" if where else str(k)
            raise fail(path, key, f"unknown key (known: {', '.join(known)})")
    return obj


def entries(top: dict, section: str, known: Sequence[str], path: Path) -> list[tuple[str, dict]]:
    """The mappings of a non-empty list section, each with its key (``datasets[2]``), keys checked."""
    raw = top.get(section)
    if not isinstance(raw, list) or not raw:
        raise fail(path, section, "must be a non-empty list")
    return [(f"{section}[{i}]", check_keys(item, known, f"{section}[{i}]", path)) for i, item in enumerate(raw)]


def as_int(value: Any, key: str, path: Path, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, key, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise fail(path, key, f"must be >= {minimum}, got {value}")
    return value


def as_number(value: Any, key: str, path: Path, whole: bool = False) -> int | float:
    """A YAML number (``1.0e-3``, ``.nan``) or a string that reads as one (YAML 1.1 reads ``1e-3`` as a
    string); never a boolean. ``whole``: an integer (``2.0`` is 2, ``2.5`` is refused)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(value, bool) or not isinstance(number, (int, float)):
        raise fail(path, key, f"must be a number, got {value!r}")
    if whole:
        if isinstance(number, float) and not number.is_integer():
            raise fail(path, key, f"must be a whole number, got {value!r}")
        return int(number)
    return float(number)


def as_int_list(value: Any, key: str, path: Path, minimum: int) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise fail(path, key, "must not be empty")
    out = [as_int(v, key, path, minimum) for v in values]
    return list(dict.fromkeys(out))


def as_bool(value: Any, key: str, path: Path) -> bool:
    if not isinstance(value, bool):
        raise fail(path, key, f"must be true or false, got {value!r}")
    return value


def as_str(value: Any, key: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(path, key, f"must be a non-empty string, got {value!r}")
    return value


def resolve(value: str, base: Path, key: str = "", config: Path | None = None) -> Path:
    """``~`` and ``$VARS`` expanded; relative to ``base``."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset and config is not None:
        raise fail(config, key, f"environment variable {unset[0]} is not set (in {value!r}); set it or write the path")
    p = Path(expanded)
    return p if p.is_absolute() else base / p


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
