"""Benchmark datasets: labelled image lists read from the layouts zero-shot papers use.

Five image layouts are read (``format:`` in a benchmark config, ``auto`` by default), and three
video protocols, named by their format (``ucf101``, ``hmdb51``, ``k600``: :mod:`awt.bench.video_datasets`):

``csv``
    a ``labels.csv`` with the columns ``path,label,classname`` (paths relative to the csv's folder;
    ``classname_clip`` is accepted for ``classname``, as in ImageNet samples).
``coop``
    a split file: CoOp's ``split_zhou_<Name>.json`` or SuS-X's ``split_<Name>.json`` (Caltech256,
    CUB, Birdsnap), in either shape: ``{"train": [...], "val": [...], "test": [...]}`` or a plain
    list ``[[relpath, label, classname], ...]`` (the test part). ``path`` is the file or the
    dataset's folder holding it. Paths in it are relative to an image folder: ``image_dir`` when
    given, else the folder the guide names for a known dataset (``101_ObjectCategories/``,
    ``images/``, ``jpg/``, ``2750/`` ...), else the first of the split's folder and its subfolders
    in which the listed files exist. Every listed image must exist.
``imagefolder``
    one subfolder per class, classes in sorted folder order (torchvision's ``ImageFolder``); the
    class names are the folder names, or come from ``classnames:`` -- a file with one name per line
    in that order, or ``<folder> <class name>`` lines (CoOp's ImageNet ``classnames.txt``) naming
    at least every folder there is.
``imagenet``
    the ImageNet family (ImageNet, -V2, -Sketch, -A, -R): an ``ImageFolder`` tree whose classes are
    exactly those that ``classnames:`` lists as ``<folder> <class name>`` lines (WordNet ids, or
    ImageNet-V2's ``0``..``999``). A listed folder that is missing, or a class folder that is not
    listed, is an error; a listed folder without images is a class without images. Labels follow
    the sorted folder names, as ``ImageFolder`` gives them (and as the AWT authors' code reads
    them). ``path`` is the tree itself or the dataset's folder (``imagenet/`` holding
    ``images/val/``, ``imagenet-adversarial/`` holding ``imagenet-a/`` ...).
``fgvc-aircraft``
    CoOp's FGVC-Aircraft folder: ``variants.txt`` (class order), ``images_variant_<part>.txt``
    (``<image id> <variant>`` per line) and ``images/<image id>.jpg``.

For ``coop`` and ``fgvc-aircraft``, ``classnames:`` (one name per line, in label order) replaces the
names the split file or ``variants.txt`` gives; the number of classes must agree.

Classes are kept in label order, and a class is its label index: two classes with the same name
(ImageNet's two ``missile``\\ s) stay two classes.

The 18 datasets of the AWT paper are known by their folder names (:mod:`awt.bench.layouts`).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import AWTError
from ..classes import read_class_file, read_keyed_class_file
from ..files import read_lines
from ..images import IMAGE_EXTENSIONS
from .layouts import LAYOUTS, explain_missing, find_layout, guide_hint, known_folder

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


def _missing_files(paths: Sequence[str]) -> list[str]:
    return [q for q in paths if not os.path.isfile(q)]


def _lines(path: Path, what: str) -> list[str]:
    return [line for _, line in read_lines(path, what)]


def _named_classes(classnames: str | os.PathLike, found: list[str], where: str) -> list[str]:
    """Class names from a file, replacing the ``found`` ones (same count)."""
    names = read_class_file(classnames)
    if len(names) != len(found):
        raise AWTError(f"{classnames}: {len(names)} class names, but {where} has {len(found)} classes")
    return names


def read_coop_split(path: str | os.PathLike, image_dir: str | os.PathLike | None = None, part: str = "test",
                    classnames: str | os.PathLike | None = None) -> LabeledImages:
    """A split file (CoOp's or SuS-X's): ``{"train","val","test"}`` of ``[relpath, label, classname]``
    or a plain list of them; ``path`` may be the dataset folder holding it."""
    p = Path(path)
    layout = find_layout(p, classnames)
    if p.is_dir():
        if layout is not None and layout.split and known_folder(p.name):
            p = p / layout.split
            if not p.is_file():
                raise AWTError(f"{p} not found: the {layout.title} split file; {guide_hint(layout)}")
        else:
            found = sorted(p.glob("split_zhou_*.json")) or sorted(p.glob("split_*.json")) \
                or sorted(p.glob("*split_zhou*.json"))
            if len(found) != 1:
                raise AWTError(f"{p}: expected one split_zhou_*.json or split_*.json file, found {len(found)}; "
                               f"{guide_hint(layout)}")
            p = found[0]
    if not p.is_file():
        raise AWTError(f"{p} not found: split file; {guide_hint(layout)}")
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
    pairs = [(_int_label(e[1], str(p)), e[2]) for e in everything]
    if classnames is not None:
        # the class file gives the names (in label order); the split's labels must fall in it
        names = read_class_file(classnames)
        top = max(label for label, _ in pairs)
        distinct = len({label for label, _ in pairs})
        if min(label for label, _ in pairs) < 0 or top >= len(names) or (distinct == top + 1 and distinct != len(names)):
            raise AWTError(f"{classnames}: {len(names)} class names, but {p} has labels 0..{top} "
                           f"({distinct} classes)")
        classnames_ = names
    else:
        # every part names classes: a class without test images keeps its label and name
        classnames_ = _classes_from_pairs(pairs, str(p))
    rel = [e[0] for e in entries]
    if image_dir is not None:
        root = Path(image_dir)
        if not root.is_dir():
            raise AWTError(f"{root}: image folder not found; {guide_hint(layout)}")
    elif layout is not None and layout.split == p.name:
        root = p.parent / layout.images if layout.images else p.parent
        if not root.is_dir():
            raise AWTError(f"{root} not found: the {layout.title} image folder; {guide_hint(layout)}")
    else:
        root = _find_image_dir(p.parent, rel)
        if root is None:
            raise AWTError(f"{p}: cannot find the listed images (e.g. {rel[0]!r}) under {p.parent} or its "
                           f"subfolders; set image_dir, or {guide_hint(layout)}")
    root = root.resolve()
    paths = [str(root / r) for r in rel]
    missing = _missing_files(paths)
    if missing:
        raise AWTError(f"{missing[0]} not found ({len(missing)} of the {len(paths)} images that {p.name} lists "
                       f"are missing under {root}); {guide_hint(layout)}")
    return LabeledImages(classnames_, paths, [_int_label(e[1], str(p)) for e in entries],
                         str(p), "coop", {"image_dir": str(root), "part": part})


def _class_folders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)


def read_image_folder(root: str | os.PathLike, classnames: str | os.PathLike | None = None) -> LabeledImages:
    """One subfolder per class (sorted); optional class-name file (one per line, or ``folder name``)."""
    r = Path(root)
    if not r.is_dir():
        raise AWTError(f"{r}: image folder not found")
    folders = _class_folders(r)
    if not folders:
        raise AWTError(f"{r}: no class subfolders")
    names = list(folders)
    if classnames is not None:
        lines = read_class_file(classnames)
        split = (line.split("\t", 1) if "\t" in line else line.split(maxsplit=1) for line in _lines(classnames, "class"))
        mapping = {parts[0]: parts[1].strip() for parts in split if len(parts) == 2}
        if all(f in mapping for f in folders):
            names = [mapping[f] for f in folders]
        elif len(lines) == len(folders):
            names = lines
        else:
            raise AWTError(f"{classnames}: {len(lines)} class names for {len(folders)} class folders in {r}, "
                           "and not a '<folder> <name>' list covering every folder")
    paths, labels = _labelled_images(r, folders)
    if not paths:
        raise AWTError(f"{r}: no images in its class folders")
    return LabeledImages(names, paths, labels, str(r), "imagefolder", {"folders": folders})


def _labelled_images(tree: Path, folders: Sequence[str]) -> tuple[list[str], list[int]]:
    """The images of each class folder of ``tree``, labelled by the folder's position in ``folders``."""
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = _images_in(tree / folder)
        paths.extend(str(f.resolve()) for f in files)
        labels.extend([label] * len(files))
    return paths, labels


def read_imagenet_family(path: str | os.PathLike, classnames: str | os.PathLike | None) -> LabeledImages:
    """An ImageNet-family ``ImageFolder`` tree whose classes are exactly the ``<folder> <name>`` lines of
    ``classnames``, labelled in sorted folder order; ``path`` is the tree or the dataset's folder."""
    p = Path(path)
    layout = find_layout(p, classnames)
    if classnames is None:
        raise AWTError(f"{p}: format imagenet needs classnames: a '<folder> <class name>' file listing the "
                       "dataset's classes (benchmarks/classnames/imagenet*.tsv)")
    pairs = read_keyed_class_file(classnames)
    mapping: dict[str, str] = {}
    for folder, name in pairs:
        if folder in mapping:
            raise AWTError(f"{classnames}: folder {folder!r} is listed twice")
        mapping[folder] = name
    if not p.is_dir():
        raise AWTError(explain_missing(p, "image folder"))
    # the class-folder tree: the path itself, or the guide's subfolder of the dataset folder
    candidates = [p]
    inner = [layout.images] if layout is not None and layout.images else []
    for sub in inner + ["images/val", "val", "images", "imagenet-a", "imagenet-r",
                        "imagenetv2-matched-frequency-format-val"]:
        if (p / sub) not in candidates:
            candidates.append(p / sub)
    tree = next((c for c in candidates if c.is_dir() and any((c / f).is_dir() for f in list(mapping)[:50])), None)
    if tree is None:
        expected = p / layout.images if layout is not None and layout.images else p
        raise AWTError(f"{expected} not found, or holds none of the class folders that {Path(classnames).name} "
                       f"lists (e.g. {pairs[0][0]}); {guide_hint(layout)}")
    on_disk = set(_class_folders(tree))
    missing = [f for f in sorted(mapping) if f not in on_disk]
    if missing:
        raise AWTError(f"{tree / missing[0]} not found ({len(missing)} of the {len(mapping)} class folders that "
                       f"{Path(classnames).name} lists are missing); {guide_hint(layout)}")
    extra = sorted(on_disk - set(mapping))
    if extra:
        raise AWTError(f"{tree / extra[0]}: a class folder that {classnames} does not list ({len(extra)} such); "
                       f"is this the right class file for {tree}?")
    folders = sorted(mapping)
    paths, labels = _labelled_images(tree, folders)
    if not paths:
        raise AWTError(f"{tree}: no images in its class folders; {guide_hint(layout)}")
    return LabeledImages([mapping[f] for f in folders], paths, labels, str(tree), "imagenet",
                         {"folders": folders, "image_dir": str(tree.resolve())})


def read_fgvc_aircraft(root: str | os.PathLike, part: str = "test",
                       classnames: str | os.PathLike | None = None) -> LabeledImages:
    """CoOp's FGVC-Aircraft layout: ``variants.txt``, ``images_variant_<part>.txt``, ``images/``."""
    r = Path(root)
    layout = find_layout(r, classnames) or LAYOUTS["fgvc_aircraft"]
    variants_file, list_file = r / "variants.txt", r / f"images_variant_{part}.txt"
    for f in (variants_file, list_file):
        if not f.is_file():
            raise AWTError(f"{f} not found (FGVC-Aircraft layout); {guide_hint(layout)}")
    variants = _lines(variants_file, "class names")
    index = {v: i for i, v in enumerate(variants)}
    paths, labels = [], []
    for line in _lines(list_file, "image list"):
        image_id, _, variant = line.partition(" ")
        if variant.strip() not in index:
            raise AWTError(f"{list_file}: unknown variant {variant.strip()!r}")
        paths.append(str((r / "images" / f"{image_id}.jpg").resolve()))
        labels.append(index[variant.strip()])
    missing = _missing_files(paths)
    if missing:
        raise AWTError(f"{missing[0]} not found ({len(missing)} of the {len(paths)} images that {list_file.name} "
                       f"lists are missing); {guide_hint(layout)}")
    names = _named_classes(classnames, variants, str(variants_file)) if classnames is not None else variants
    return LabeledImages(names, paths, labels, str(list_file), "fgvc-aircraft", {"part": part})


# -- the reader registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadOptions:
    """What a dataset entry of a config may say besides its path (each reader reads what it needs)."""

    image_dir: str | os.PathLike | None = None
    classnames: str | os.PathLike | None = None
    classname_column: str | None = None
    part: str = "test"
    split: int | None = None          # a video dataset's split (1, 2 or 3)


@dataclass(frozen=True)
class DatasetReader:
    """A dataset layout: its ``format:`` name, its reader, and how ``auto`` recognises it (``detect``
    a path, or None: only by name). ``videos``: its items are videos, read in splits (a config
    runs each split as a dataset of its own)."""

    format: str
    read: Callable[[Path, ReadOptions], LabeledImages]
    detect: Callable[[Path], bool] | None = None
    videos: bool = False


READERS: dict[str, DatasetReader] = {}


def register_reader(reader: DatasetReader) -> DatasetReader:
    """Add a dataset layout; readers are tried in registration order by ``format: auto``."""
    READERS[reader.format] = reader
    return reader


def formats() -> tuple[str, ...]:
    """The ``format:`` values a config may give."""
    return ("auto", *READERS)


def _is_file_named(*suffixes: str) -> Callable[[Path], bool]:
    return lambda p: p.is_file() and p.suffix.lower() in suffixes


register_reader(DatasetReader("csv", lambda p, o: read_labels_csv(p, o.classname_column),
                              lambda p: _is_file_named(".csv")(p) or (p.is_dir() and (p / "labels.csv").is_file())))
register_reader(DatasetReader("coop", lambda p, o: read_coop_split(p, o.image_dir, o.part, o.classnames),
                              lambda p: _is_file_named(".json")(p) or (p.is_dir() and (
                                  any(p.glob("split_zhou_*.json")) or any(p.glob("split_*.json"))))))
register_reader(DatasetReader("imagefolder", lambda p, o: read_image_folder(p, o.classnames)))
register_reader(DatasetReader("imagenet", lambda p, o: read_imagenet_family(p, o.classnames)))
register_reader(DatasetReader("fgvc-aircraft", lambda p, o: read_fgvc_aircraft(p, o.part, o.classnames),
                              lambda p: p.is_dir() and (p / "variants.txt").is_file()
                              and any(p.glob("images_variant_*.txt"))))


def _video_reader(format: str) -> Callable[[Path, ReadOptions], LabeledImages]:
    def read(path: Path, options: ReadOptions) -> LabeledImages:
        from .video_datasets import VIDEO_READERS   # decoding libraries load only for video datasets

        if options.split is None:
            raise AWTError(f"{path}: a {format} dataset is read one split at a time (1, 2 or 3)")
        return VIDEO_READERS[format](path, options.split, options.classnames)
    return read


# the zero-shot video protocols (awt.bench.video_datasets), named by format alone
for _format in ("ucf101", "hmdb51", "k600"):
    register_reader(DatasetReader(_format, _video_reader(_format), videos=True))


def detect_format(path: Path) -> str:
    """The layout of ``path``: the first reader that recognises it; a known dataset folder (the AWT
    paper's) by its name, so that its own reader says what is missing; else ``imagefolder``."""
    if path.is_file() or path.is_dir():
        for reader in READERS.values():
            if reader.detect is not None and reader.detect(path):
                return reader.format
    if path.is_file():
        raise AWTError(f"{path}: cannot tell the dataset format from the file name; set format")
    if not path.is_dir():
        raise AWTError(explain_missing(path))
    layout = find_layout(path)
    if layout is not None and layout.format != "imagenet":
        return layout.format
    return "imagefolder"


def read_dataset(path: str | os.PathLike, format: str = "auto", *, image_dir=None, classnames=None,
                 classname_column: str | None = None, part: str = "test", split: int | None = None) -> LabeledImages:
    """The labelled images (or videos) of a dataset in any registered layout (``auto``:
    :func:`detect_format`); ``split``: a video dataset's split."""
    p = Path(path)
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in READERS:
        raise AWTError(f"unknown dataset format {format!r}; choose one of {', '.join(formats())}")
    return READERS[fmt].read(p, ReadOptions(image_dir, classnames, classname_column, part, split))
