"""Benchmark datasets: labelled image lists read from the layouts zero-shot papers use.

Four layouts are read (``format:`` in a benchmark config, ``auto`` by default):

``csv``
    a ``labels.csv`` with the columns ``path,label,classname`` (paths relative to the csv's folder;
    ``classname_clip`` is accepted for ``classname``, as in ImageNet samples).
``coop``
    a CoOp split file, ``split_zhou_<Name>.json``, in either of its two shapes: CoOp's own
    ``{"train": [...], "val": [...], "test": [...]}`` or a plain list ``[[relpath, label, classname], ...]``
    (the test part). Paths are relative to an image folder: ``image_dir`` when given, else the
    first of the split's folder and its subfolders in which the listed files exist (CoOp keeps them
    in ``101_ObjectCategories/``, ``images/``, ``jpg/``, ``2750/`` ... beside the split file).
``imagefolder``
    one subfolder per class, classes in sorted folder order (torchvision's ``ImageFolder``); the
    class names are the folder names, or come from ``classnames:`` -- a file with one name per line
    in that order, or CoOp's ImageNet ``classnames.txt`` (``<folder> <class name>`` per line).
``fgvc-aircraft``
    CoOp's FGVC-Aircraft folder: ``variants.txt`` (class order), ``images_variant_<part>.txt``
    (``<image id> <variant>`` per line) and ``images/<image id>.jpg``.

Classes are kept in label order, and a class is its label index: two classes with the same name
(ImageNet's two ``missile``\\ s) stay two classes.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import AWTError
from ..images import IMAGE_EXTENSIONS

FORMATS = ("auto", "csv", "coop", "imagefolder", "fgvc-aircraft")
_CLASSNAME_COLUMNS = ("classname", "classname_clip", "class_name", "class")


@dataclass
class LabeledImages:
    """A dataset's images (absolute paths) with their labels, and its classes in label order."""

    classnames: list[str]
    paths: list[str]
    labels: list[int]
    source: str                       # what was read, for messages and the run records
    format: str
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, positions: Sequence[int]) -> "LabeledImages":
        return LabeledImages(self.classnames, [self.paths[i] for i in positions], [self.labels[i] for i in positions],
                             self.source, self.format, dict(self.extra))


def clean_classname(name: str) -> str:
    """CoOp's and AWT's prompt spelling of a class name: underscores become spaces."""
    return " ".join(name.replace("_", " ").split())


# -- readers ---------------------------------------------------------------------------------------

def _classes_from_pairs(pairs: Sequence[tuple[int, str]], where: str) -> list[str]:
    """Class names in label order from (label, name) pairs; every label 0..K-1 must be named once."""
    names: dict[int, str] = {}
    for label, name in pairs:
        if label < 0:
            raise AWTError(f"{where}: negative label {label}")
        known = names.setdefault(label, name)
        if known != name:
            raise AWTError(f"{where}: label {label} is named both {known!r} and {name!r}")
    if not names:
        raise AWTError(f"{where}: no images listed")
    missing = [i for i in range(max(names) + 1) if i not in names]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise AWTError(f"{where}: labels must run 0..{max(names)} without gaps; no image names label {shown}")
    return [names[i] for i in range(len(names))]


def _int_label(value, where: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise AWTError(f"{where}: label {value!r} is not an integer") from None
    return number


def read_labels_csv(path: str | os.PathLike, classname_column: str | None = None) -> LabeledImages:
    """``labels.csv`` (``path,label,classname``); paths relative to the file's folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "labels.csv"
    if not p.is_file():
        raise AWTError(f"{p}: labels file not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AWTError(f"{p}: cannot read: {e}") from None
    column = classname_column or next((c for c in _CLASSNAME_COLUMNS if c in columns), None)
    for need in ("path", "label", column):
        if need is None or need not in columns:
            wanted = need or "classname"
            raise AWTError(f"{p}: no {wanted!r} column (columns: {', '.join(columns) or 'none'})")
    root = p.parent.resolve()
    paths, labels, pairs = [], [], []
    for line, row in enumerate(rows, start=2):
        label = _int_label(row["label"], f"{p}:{line}")
        paths.append(str(root / row["path"]))
        labels.append(label)
        pairs.append((label, row[column]))
    return LabeledImages(_classes_from_pairs(pairs, str(p)), paths, labels, str(p), "csv")


def _find_image_dir(split_dir: Path, relpaths: Sequence[str]) -> Path | None:
    probe = [r for r in relpaths[:: max(1, len(relpaths) // 5)]][:5]
    candidates = [split_dir] + sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    for root in candidates:
        if probe and all((root / r).is_file() for r in probe):
            return root
    return None


def read_coop_split(path: str | os.PathLike, image_dir: str | os.PathLike | None = None, part: str = "test") -> LabeledImages:
    """A CoOp split file: ``{"train","val","test"}`` of ``[relpath, label, classname]`` or a plain list of them."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("split_zhou_*.json")) or sorted(p.glob("*split_zhou*.json"))
        if len(found) != 1:
            raise AWTError(f"{p}: expected one split_zhou_*.json file, found {len(found)}")
        p = found[0]
    if not p.is_file():
        raise AWTError(f"{p}: split file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AWTError(f"{p}: cannot read split file: {e}") from None
    if isinstance(data, dict):
        if part not in data:
            raise AWTError(f"{p}: split file has no {part!r} part (parts: {', '.join(map(str, data))})")
        entries = data[part]
        everything = [e for v in data.values() if isinstance(v, list) for e in v]
    elif isinstance(data, list):
        entries = everything = data
    else:
        raise AWTError(f"{p}: a split file is a list of [path, label, classname] or an object of such lists")
    for e in everything:
        if not (isinstance(e, (list, tuple)) and len(e) >= 3 and isinstance(e[0], str) and isinstance(e[2], str)):
            raise AWTError(f"{p}: split entries must be [relpath, label, classname], got {e!r}")
    if not entries:
        raise AWTError(f"{p}: the {part!r} part lists no images")
    # every part names classes: a class without test images keeps its label and name
    classnames = _classes_from_pairs([(_int_label(e[1], str(p)), e[2]) for e in everything], str(p))
    rel = [e[0] for e in entries]
    if image_dir is not None:
        root = Path(image_dir)
        if not root.is_dir():
            raise AWTError(f"{root}: image folder not found")
    else:
        root = _find_image_dir(p.parent, rel)
        if root is None:
            raise AWTError(f"{p}: cannot find the listed images (e.g. {rel[0]!r}) under {p.parent} or its "
                           "subfolders; set image_dir")
    root = root.resolve()
    return LabeledImages(classnames, [str(root / r) for r in rel], [_int_label(e[1], str(p)) for e in entries],
                         str(p), "coop", {"image_dir": str(root), "part": part})


def _read_name_file(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise AWTError(f"{path}: cannot read class names: {e}") from None
    return [line for line in lines if line and not line.startswith("#")]


def read_image_folder(root: str | os.PathLike, classnames: str | os.PathLike | None = None) -> LabeledImages:
    """One subfolder per class (sorted); optional class-name file (one per line, or ``folder name``)."""
    r = Path(root)
    if not r.is_dir():
        raise AWTError(f"{r}: image folder not found")
    folders = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise AWTError(f"{r}: no class subfolders")
    names = list(folders)
    if classnames is not None:
        lines = _read_name_file(Path(classnames))
        firsts = [line.split(maxsplit=1) for line in lines]
        mapping = {parts[0]: parts[1].strip() for parts in firsts if len(parts) == 2}
        if all(f in mapping for f in folders):
            names = [mapping[f] for f in folders]
        elif len(lines) == len(folders):
            names = lines
        else:
            raise AWTError(f"{classnames}: {len(lines)} class names for {len(folders)} class folders in {r}, "
                           "and not a '<folder> <name>' list covering every folder")
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in (r / folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        paths.extend(str(f.resolve()) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise AWTError(f"{r}: no images in its class folders")
    return LabeledImages(names, paths, labels, str(r), "imagefolder", {"folders": folders})


def read_fgvc_aircraft(root: str | os.PathLike, part: str = "test") -> LabeledImages:
    """CoOp's FGVC-Aircraft layout: ``variants.txt``, ``images_variant_<part>.txt``, ``images/``."""
    r = Path(root)
    variants_file, list_file = r / "variants.txt", r / f"images_variant_{part}.txt"
    for f in (variants_file, list_file):
        if not f.is_file():
            raise AWTError(f"{f}: not found (FGVC-Aircraft layout)")
    variants = _read_name_file(variants_file)
    index = {v: i for i, v in enumerate(variants)}
    paths, labels = [], []
    for line in _read_name_file(list_file):
        image_id, _, variant = line.partition(" ")
        if variant.strip() not in index:
            raise AWTError(f"{list_file}: unknown variant {variant.strip()!r}")
        paths.append(str((r / "images" / f"{image_id}.jpg").resolve()))
        labels.append(index[variant.strip()])
    return LabeledImages(variants, paths, labels, str(list_file), "fgvc-aircraft", {"part": part})


def detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.suffix.lower() == ".json":
            return "coop"
        raise AWTError(f"{path}: cannot tell the dataset format from the file name; set format")
    if not path.is_dir():
        raise AWTError(f"{path}: dataset path not found")
    if (path / "labels.csv").is_file():
        return "csv"
    if any(path.glob("split_zhou_*.json")):
        return "coop"
    if (path / "variants.txt").is_file() and any(path.glob("images_variant_*.txt")):
        return "fgvc-aircraft"
    return "imagefolder"


def read_dataset(path: str | os.PathLike, format: str = "auto", *, image_dir=None, classnames=None,
                 classname_column: str | None = None, part: str = "test") -> LabeledImages:
    p = Path(path)
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "csv":
        return read_labels_csv(p, classname_column)
    if fmt == "coop":
        return read_coop_split(p, image_dir, part)
    if fmt == "imagefolder":
        return read_image_folder(p, classnames)
    if fmt == "fgvc-aircraft":
        return read_fgvc_aircraft(p, part)
    raise AWTError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")


# -- the image limit -------------------------------------------------------------------------------

def stratified_subset(paths: Sequence[str], labels: Sequence[int], limit: int | None, seed: int = 0) -> list[int]:
    """Positions of a deterministic, class-balanced sample of at most ``limit`` images.

    Round robin over the classes: each round takes one not-yet-taken image of every class that has
    one left, the classes in a seeded random order and each class's images in a seeded random order
    of their sorted paths. So ``limit`` images cover ``min(limit, classes)`` classes, a larger limit
    only adds images (the sample of a smaller limit is part of it), and the sample depends on the
    file list and the seed alone -- not on the row order of the labels file. The positions are
    returned sorted (label order), so the subset keeps the dataset's order.
    """
    n = len(paths)
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        return []
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in sorted(range(n), key=lambda i: (labels[i], paths[i])):
        by_class.setdefault(labels[i], []).append(i)
    classes = sorted(by_class)
    order = [classes[j] for j in rng.permutation(len(classes))]
    queues = {c: [by_class[c][j] for j in rng.permutation(len(by_class[c]))] for c in classes}
    picked: list[int] = []
    depth = 0
    while len(picked) < limit:
        for c in order:
            if depth < len(queues[c]):
                picked.append(queues[c][depth])
                if len(picked) == limit:
                    break
        depth += 1
    return sorted(picked, key=lambda i: (labels[i], paths[i]))
