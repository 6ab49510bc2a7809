"""Video benchmark datasets: the test videos of one split of UCF101, HMDB51 or the Kinetics-600
zero-shot protocol, with their labels, read from the files the datasets ship.

Zero-shot action recognition reports the mean and the standard deviation over three splits; each
reader returns one split (1, 2 or 3) as :class:`awt.bench.datasets.LabeledImages` (whose paths are
videos here). Class names are spelt as the AWT authors' class-name list and description files
(``description_generation/utils/cls_names_video.py``, ``AWT_zero_shot/descriptions/video_datasets/``)
spell them, which is how Open-VCLIP's label maps spell them too.

``ucf101`` (UCF101's ``UCF101TrainTestSplits-RecognitionTask.zip`` and ``UCF101.rar``)
    ``classInd.txt`` (``<label> <Folder>``, labels from 1) and ``testlist0<split>.txt``
    (``<Folder>/<video>.avi``), in the folder or its ``ucfTrainTestlist/`` (or ``annotations/``); the
    videos in the folder or its ``UCF-101/`` (or ``UCF101/``, ``videos/``). Label order is
    ``classInd.txt``'s; names split the folder's CamelCase (``ApplyEyeMakeup`` -> ``Apply Eye Makeup``,
    ``YoYo`` -> ``Yoyo``).
``hmdb51`` (HMDB51's ``test_train_splits.rar`` and ``hmdb51_org.rar``)
    ``<class>_test_split<split>.txt`` per class (``<video>.avi <mark>``, mark 2 = test), in the
    folder or its ``testTrainMulti_7030_splits/`` (or ``annotations/``); the videos under
    ``<class>/`` in the folder or its ``hmdb51_org/`` (or ``hmdb51/``, ``videos/``). Classes in sorted
    order, names with ``_`` as spaces.
``k600`` (Kinetics-600 validation videos, ER-ZSAR's protocol)
    The 160 test classes of the split, from a class file in label order
    (``benchmarks/classnames/video/k600_split<split>.txt``) or from ER-ZSAR's
    ``classes620_label_defn.json`` and ``tst_class_idxs.json`` (in the folder or its ``resource/``:
    the split's entry, sorted by name). Every video of a class folder ``val/<class>/`` (spaces as
    ``_``, as Open-VCLIP's lists have them, or as spaces) is a test video of that class.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from ..errors import AWTError
from ..files import read_lines
from ..videos import is_video_path
from ..classes import read_class_file
from .datasets import LabeledImages

SPLITS = (1, 2, 3)


def _check_split(split: int) -> int:
    if split not in SPLITS:
        raise AWTError(f"split must be 1, 2 or 3, got {split!r}")
    return split


def _first_file(root: Path, folders: Sequence[str], name: str, what: str) -> Path:
    for folder in folders:
        if (root / folder / name).is_file():
            return root / folder / name
    where = " or ".join(str(root / f / name) for f in folders)
    raise AWTError(f"{where} not found: {what}")


def _video_root(root: Path, folders: Sequence[str], relpaths: Sequence[str], what: str) -> Path:
    """The first of ``root/<folder>`` under which some of a sample of the listed videos exist (the
    missing ones are reported by :func:`_all_exist`)."""
    probe = list(relpaths[:: max(1, len(relpaths) // 5)])[:5]
    for folder in folders:
        if (root / folder).is_dir() and any((root / folder / r).is_file() for r in probe):
            return root / folder
    where = ", ".join(str(root / f) for f in folders)
    raise AWTError(f"{what}: the listed videos (such as {probe[0]}) are in none of {where}")


def _all_exist(paths: Sequence[str], source: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise AWTError(f"{source}: {len(missing)} of {len(paths)} listed videos are missing, such as {missing[0]}")


def ucf101_name(folder: str) -> str:
    """A UCF101 folder's class name as the AWT authors spell it: ``ApplyEyeMakeup`` -> ``Apply Eye Makeup``."""
    name = " ".join(re.findall(r"[A-Z][^A-Z]*", folder)) or folder
    return "Yoyo" if name == "Yo Yo" else name


def read_ucf101(root: str | os.PathLike, split: int, classnames: str | os.PathLike | None = None) -> LabeledImages:
    """The test videos of UCF101's official split ``split`` (``testlist0<split>.txt``)."""
    root, split = Path(root), _check_split(split)
    lists = ("", "ucfTrainTestlist", "annotations")
    index_file = _first_file(root, lists, "classInd.txt", "UCF101's class index (ucfTrainTestlist/classInd.txt)")
    folders: list[str] = []
    for number, line in read_lines(index_file, "class index"):
        fields = line.split()
        if len(fields) != 2 or fields[0] != str(len(folders) + 1):
            raise AWTError(f"{index_file}:{number}: expected '{len(folders) + 1} <ClassFolder>', got {line!r}")
        folders.append(fields[1])
    label_of = {f: i for i, f in enumerate(folders)}
    test_file = _first_file(root, lists, f"testlist0{split}.txt", f"UCF101's test list of split {split}")
    relpaths, labels = [], []
    for number, line in read_lines(test_file, "test list"):
        relpath = line.split()[0]
        folder = relpath.split("/")[0]
        if folder not in label_of:
            raise AWTError(f"{test_file}:{number}: class folder {folder!r} is not in {index_file.name}")
        relpaths.append(relpath)
        labels.append(label_of[folder])
    videos = _video_root(root, ("", "UCF-101", "UCF101", "videos"), relpaths, f"{test_file}")
    paths = [str(videos / r) for r in relpaths]
    _all_exist(paths, str(test_file))
    names = read_class_file(classnames) if classnames else [ucf101_name(f) for f in folders]
    if len(names) != len(folders):
        raise AWTError(f"{classnames}: {len(names)} class names, but {index_file} has {len(folders)} classes")
    return LabeledImages(names, paths, labels, str(test_file), "ucf101", {"split": split})


def read_hmdb51(root: str | os.PathLike, split: int, classnames: str | os.PathLike | None = None) -> LabeledImages:
    """The test videos (mark 2) of HMDB51's split ``split`` (``<class>_test_split<split>.txt``)."""
    root, split = Path(root), _check_split(split)
    suffix = f"_test_split{split}.txt"
    for folder in ("", "testTrainMulti_7030_splits", "annotations"):
        found = [p for p in (root / folder).glob(f"*{suffix}") if p.is_file()] if (root / folder).is_dir() else []
        # by class name, not file name: climb before climb_stairs ('_' sorts before 't' of "_test")
        found.sort(key=lambda p: p.name[: -len(suffix)])
        if found:
            break
    else:
        raise AWTError(f"{root}: no HMDB51 split files *{suffix} here or in testTrainMulti_7030_splits/")
    classes = [p.name[: -len(suffix)] for p in found]
    relpaths, labels = [], []
    for label, (folder, split_file) in enumerate(zip(classes, found)):
        for number, line in read_lines(split_file, "split"):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise AWTError(f"{split_file}:{number}: expected '<video> <0|1|2>', got {line!r}")
            if fields[1] == "2":
                relpaths.append(f"{folder}/{fields[0]}")
                labels.append(label)
    if not relpaths:
        raise AWTError(f"{found[0].parent}: the split files of split {split} mark no test videos (2)")
    videos = _video_root(root, ("", "hmdb51_org", "hmdb51", "videos"), relpaths, f"{found[0].parent}/*{suffix}")
    paths = [str(videos / r) for r in relpaths]
    _all_exist(paths, f"{found[0].parent}/*{suffix}")
    names = read_class_file(classnames) if classnames else [c.replace("_", " ") for c in classes]
    if len(names) != len(classes):
        raise AWTError(f"{classnames}: {len(names)} class names, but the split files name {len(classes)} classes")
    return LabeledImages(names, paths, labels, f"{found[0].parent}/*{suffix}", "hmdb51", {"split": split})


def k600_test_classes(protocol: str | os.PathLike, split: int) -> list[str]:
    """ER-ZSAR's test classes of ``split``, sorted (label order), from ``classes620_label_defn.json``
    and ``tst_class_idxs.json`` in ``protocol`` or its ``resource/``."""
    folder = Path(protocol)
    folder = folder if (folder / "tst_class_idxs.json").is_file() else folder / "resource"
    files = (folder / "classes620_label_defn.json", folder / "tst_class_idxs.json")
    if not all(f.is_file() for f in files):
        raise AWTError(f"{protocol}: no class file for the Kinetics-600 split, and ER-ZSAR's protocol files "
                       "(classes620_label_defn.json, tst_class_idxs.json) are neither here nor in resource/")
    try:
        words = [entry["word"] for entry in json.loads(files[0].read_text("utf-8"))]
        indices = json.loads(files[1].read_text("utf-8"))[_check_split(split) - 1]
        return sorted(words[i] for i in indices)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise AWTError(f"{folder}: cannot read ER-ZSAR's protocol files: {e}") from None


def read_k600_zsl(root: str | os.PathLike, split: int, classnames: str | os.PathLike | None = None) -> LabeledImages:
    """Every validation video of the split's 160 test classes (ER-ZSAR's Kinetics-600 protocol).

    Args:
        root: the Kinetics-600 folder holding ``val/<class>/``, or ``val/`` itself.
        classnames: the split's class file (label order); without it, ER-ZSAR's protocol files are
            read from ``root`` (see :func:`k600_test_classes`).
    """
    root, split = Path(root), _check_split(split)
    names = read_class_file(classnames) if classnames else k600_test_classes(root, split)
    val = root / "val" if (root / "val").is_dir() else root
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = next((val / f for f in (name.replace(" ", "_"), name) if (val / f).is_dir()), None)
        if folder is None:
            raise AWTError(f"{val}: no folder for class {name!r} ({name.replace(' ', '_')}/)")
        found = sorted(p for p in folder.iterdir() if is_video_path(p.name))
        if not found:
            raise AWTError(f"{folder}: no videos of class {name!r}")
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    return LabeledImages(list(names), paths, labels, str(val), "k600", {"split": split})


#: dataset key -> reader(root, split, classnames)
VIDEO_READERS: dict[str, Callable[..., LabeledImages]] = {
    "ucf101": read_ucf101, "hmdb51": read_hmdb51, "k600": read_k600_zsl}
