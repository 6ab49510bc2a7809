"""Class descriptions on disk: read plain files and `awt describe` files, write the latter atomically.

Two formats are read:

* plain JSON ``{classname: [sentence, ...]}``, as published by the AWT authors and CuPL;
* an ``awt describe`` file, which carries its provenance::

    {"format": "awt-descriptions", "version": 1,
     "meta": {"llm": ..., "endpoint_host": ..., "questions": [...], "per_class": 50, ...},
     "classes": [{"index": 0, "name": "face", "descriptions": [...]}, ...]}

  The file lists classes in class order, so duplicate class names stay distinct. A file
  left by an unfinished run lists every class; classes not done yet have fewer than
  ``meta.per_class`` descriptions (an empty list if never attempted), and
  ``meta.complete`` is false.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awt.errors import DescriptionsError
from awt.files import atomic_write_text

FILE_FORMAT = "awt-descriptions"
FILE_VERSION = 1
_SHOWN = 5  # how many missing class names an error message lists


def normalize_name(name: str) -> str:
    """Loose key for class-name lookup: casefold, '_' -> ' ', whitespace collapsed."""
    return " ".join(name.replace("_", " ").casefold().split())


def _name_list(names: Sequence[str], total: int) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" and {total - _SHOWN} more" if total > _SHOWN else "")


@dataclass
class DescriptionSet:
    """Descriptions of a list of classes, in file order."""

    names: list[str]
    descriptions: list[list[str]]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def per_class(self) -> int | None:
        """The number of descriptions per class an ``awt describe`` file was made for (else None)."""
        value = self.meta.get("per_class")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def has_provenance(self) -> bool:
        """True when read from an ``awt describe`` file (which records how it was made)."""
        return bool(self.meta)

    def last_wins(self) -> "DescriptionSet":
        """The set as ``json.load`` reads a plain file: a name the file repeats keeps only its last
        entry, so every class of that name takes it (an ``awt describe`` file, a list in class
        order, is returned as it is)."""
        if self.has_provenance:
            return self
        last = {name: i for i, name in enumerate(self.names)}
        keep = sorted(last.values())
        return DescriptionSet([self.names[i] for i in keep], [list(self.descriptions[i]) for i in keep],
                              dict(self.meta), self.source)

    def for_classes(self, classnames: Sequence[str]) -> list[list[str]]:
        """Descriptions aligned with ``classnames``.

        Equal name lists (same order) align by index, which keeps duplicate names apart.
        Otherwise each class is looked up by exact name, then by normalised name; the
        k-th occurrence of a repeated name takes the k-th entry of that name in the file
        (or its first when the file has fewer). Raises DescriptionsError naming missing
        classes and classes with no descriptions.
        """
        wanted = list(classnames)
        if wanted == self.names:
            picked: list[list[str] | None] = [list(d) for d in self.descriptions]
        else:
            exact: dict[str, list[int]] = defaultdict(list)
            loose: dict[str, list[int]] = defaultdict(list)
            for i, name in enumerate(self.names):
                exact[name].append(i)
                loose[normalize_name(name)].append(i)
            seen: dict[str, int] = defaultdict(int)
            picked = []
            for name in wanted:
                hits = exact.get(name) or loose.get(normalize_name(name))
                if not hits:
                    picked.append(None)
                    continue
                k = seen[name]
                seen[name] += 1
                picked.append(list(self.descriptions[hits[k] if k < len(hits) else hits[0]]))
        missing = [n for n, d in zip(wanted, picked) if d is None]
        if missing:
            raise DescriptionsError(
                f"{self.source} has no descriptions for {len(missing)} of {len(wanted)} classes: "
                f"{_name_list(missing, len(missing))}"
            )
        empty = [n for n, d in zip(wanted, picked) if not d]
        if empty:
            hint = " (an unfinished `awt describe` run? rerun it to complete the file)" if self.has_provenance else ""
            raise DescriptionsError(
                f"{self.source} has an empty description list for {len(empty)} classes: "
                f"{_name_list(empty, len(empty))}{hint}"
            )
        return [d for d in picked if d is not None]


class _Obj(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, so repeated keys survive parsing."""


def _read_json(path: Path) -> Any:
    src = str(path)
    if not path.exists():
        raise DescriptionsError(f"descriptions file not found: {src}")
    if path.is_dir():
        raise DescriptionsError(f"descriptions path is a directory, not a file: {src}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DescriptionsError(f"cannot read descriptions file {src}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DescriptionsError(f"{src} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise DescriptionsError(f"descriptions file is empty: {src}")
    try:
        return json.loads(text, object_pairs_hook=_Obj)
    except json.JSONDecodeError as e:
        raise DescriptionsError(
            f"{src} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from None


def _string_list(value: Any, where: str, src: str) -> list[str]:
    if isinstance(value, _Obj) or not isinstance(value, list):
        raise DescriptionsError(
            f"{src}: descriptions of {where} must be a list of strings, got {_json_type(value)}"
        )
    for j, item in enumerate(value):
        if not isinstance(item, str):
            raise DescriptionsError(
                f"{src}: description {j} of {where} must be a string, got {_json_type(item)}"
            )
    return list(value)


def _json_type(value: Any) -> str:
    if isinstance(value, _Obj):
        return "an object"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), "a value")


def _as_dict(obj: _Obj) -> dict[str, Any]:
    return {k: v for k, v in obj}  # later keys win, as with plain json


def _to_plain(value: Any) -> Any:
    """Turn parsed pairs back into ordinary dicts and lists."""
    if isinstance(value, _Obj):
        return {k: _to_plain(v) for k, v in value}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _parse_described(top: dict[str, Any], src: str) -> DescriptionSet:
    version = top.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DescriptionsError(f"{src}: `awt describe` file has no integer 'version'")
    if version > FILE_VERSION:
        raise DescriptionsError(
            f"{src}: `awt describe` file format version {version} is newer than this awt supports ({FILE_VERSION}); upgrade awt"
        )
    meta = _to_plain(top.get("meta", _Obj()))
    if not isinstance(meta, dict):
        raise DescriptionsError(f"{src}: 'meta' must be an object")
    classes = top.get("classes")
    if isinstance(classes, _Obj) or not isinstance(classes, list) or not all(isinstance(c, _Obj) for c in classes):
        raise DescriptionsError(f"{src}: 'classes' must be a list of objects")
    entries: dict[int, tuple[str, list[str]]] = {}
    for pos, pairs in enumerate(classes):
        entry = _as_dict(pairs)
        index, name = entry.get("index", pos), entry.get("name")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise DescriptionsError(f"{src}: class entry {pos} has no valid 'index'")
        if not isinstance(name, str):
            raise DescriptionsError(f"{src}: class entry {pos} has no string 'name'")
        if index in entries:
            raise DescriptionsError(f"{src}: class index {index} appears twice")
        entries[index] = (name, _string_list(entry.get("descriptions", []), f"class {name!r}", src))
    if sorted(entries) != list(range(len(entries))):
        raise DescriptionsError(f"{src}: class indices must be 0..{len(entries) - 1} without gaps")
    ordered = [entries[i] for i in range(len(entries))]
    meta = dict(meta)
    meta.setdefault("complete", False)
    return DescriptionSet(
        names=[n for n, _ in ordered], descriptions=[d for _, d in ordered], meta=meta, source=src
    )


def load_descriptions(path: str | os.PathLike[str]) -> DescriptionSet:
    """Read a plain ``{classname: [sentences]}`` file or an ``awt describe`` file."""
    p = Path(path)
    src = str(p)
    data = _read_json(p)
    if not isinstance(data, _Obj):
        raise DescriptionsError(
            f"{src}: expected a JSON object mapping class names to lists of descriptions, got {_json_type(data)}"
        )
    top = _as_dict(data)
    if top.get("format") == FILE_FORMAT:
        return _parse_described(top, src)
    if not data:
        raise DescriptionsError(f"{src}: the JSON object has no classes")
    names: list[str] = []
    descriptions: list[list[str]] = []
    for name, value in data:  # repeated keys are kept, in file order
        names.append(name)
        descriptions.append(_string_list(value, f"class {name!r}", src))
    return DescriptionSet(names=names, descriptions=descriptions, meta={}, source=src)


def described_document(names: Sequence[str], descriptions: Sequence[Sequence[str]], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document an ``awt describe`` file holds."""
    if len(names) != len(descriptions):
        raise ValueError(f"{len(names)} names but {len(descriptions)} description lists")
    return {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "meta": dict(meta),
        "classes": [
            {"index": i, "name": n, "descriptions": list(d)}
            for i, (n, d) in enumerate(zip(names, descriptions))
        ],
    }


def save_descriptions(
    path: str | os.PathLike[str],
    names: Sequence[str],
    descriptions: Sequence[Sequence[str]],
    meta: dict[str, Any],
) -> None:
    """Write an ``awt describe`` file atomically (temp file in the same folder + fsync + os.replace)."""
    doc = described_document(names, descriptions, meta)
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")

