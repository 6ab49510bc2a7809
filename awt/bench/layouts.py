"""The 18 datasets of the AWT paper: where each lives under a data root, as CoOp's ``DATASETS.md``
and SuS-X's ``DATA.md`` lay them out, and which guide section describes it. A missing split file,
image folder or class folder of one of them is then reported in one line naming the guide."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COOP_GUIDE = ("CoOp's DATASETS.md", "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md")
SUSX_GUIDE = ("SuS-X's DATA.md", "https://github.com/vishaal27/SuS-X/blob/main/data/DATA.md")


@dataclass(frozen=True)
class Layout:
    """Where one of the paper's datasets lives under the data root, and which guide describes it."""

    key: str                 # the AWT authors' dataset id (their --test_set), e.g. "food101"
    title: str               # the guide's section title
    folder: str              # the dataset's folder under the data root (CoOp's / the authors' name)
    format: str              # coop, imagenet or fgvc-aircraft
    split: str | None        # split file in ``folder`` (coop)
    images: str              # image folder (or class-folder tree) inside ``folder``; "" = folder itself
    classes: int             # number of classes
    guide: tuple[str, str]   # (guide name, url)
    anchor: str              # the guide's section anchor
    aliases: tuple[str, ...] = ()   # other folder names it goes by (SuS-X's, the inner tree's)

    @property
    def where(self) -> str:
        """The guide section, for messages: ``Food101: CoOp's DATASETS.md, https://...#food101``."""
        return f"{self.title}: {self.guide[0]}, {self.guide[1]}{self.anchor}"


def _layouts() -> dict[str, Layout]:
    c, s = COOP_GUIDE, SUSX_GUIDE
    rows = [
        Layout("imagenet", "ImageNet", "imagenet", "imagenet", None, "images/val", 1000, c, "#imagenet"),
        Layout("imagenetv2", "ImageNetV2", "imagenetv2", "imagenet", None,
               "imagenetv2-matched-frequency-format-val", 1000, c, "#imagenetv2",
               ("imagenetv2-matched-frequency-format-val",)),
        Layout("imagenet_sketch", "ImageNet-Sketch", "imagenet-sketch", "imagenet", None, "images", 1000, c,
               "#imagenet-sketch"),
        Layout("imagenet_a", "ImageNet-A", "imagenet-adversarial", "imagenet", None, "imagenet-a", 200, c,
               "#imagenet-a", ("imagenet-a",)),
        Layout("imagenet_r", "ImageNet-R", "imagenet-rendition", "imagenet", None, "imagenet-r", 200, c,
               "#imagenet-r", ("imagenet-r",)),
        Layout("caltech101", "Caltech101", "caltech-101", "coop", "split_zhou_Caltech101.json",
               "101_ObjectCategories", 100, c, "#caltech101", ("caltech101",)),
        Layout("oxford_pets", "OxfordPets", "oxford_pets", "coop", "split_zhou_OxfordPets.json", "images", 37, c,
               "#oxfordpets", ("oxfordpets",)),
        Layout("stanford_cars", "StanfordCars", "stanford_cars", "coop", "split_zhou_StanfordCars.json", "", 196, c,
               "#stanfordcars", ("stanfordcars",)),
        Layout("oxford_flowers", "Flowers102", "oxford_flowers", "coop", "split_zhou_OxfordFlowers.json", "jpg", 102,
               c, "#flowers102", ("flowers102",)),
        Layout("food101", "Food101", "food-101", "coop", "split_zhou_Food101.json", "images", 101, c, "#food101",
               ("food101",)),
        Layout("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "fgvc-aircraft", None, "images", 100, c,
               "#fgvcaircraft", ("fgvcaircraft",)),
        Layout("sun397", "SUN397", "sun397", "coop", "split_zhou_SUN397.json", "SUN397", 397, c, "#sun397"),
        Layout("dtd", "DTD", "dtd", "coop", "split_zhou_DescribableTextures.json", "images", 47, c, "#dtd"),
        Layout("eurosat", "EuroSAT", "eurosat", "coop", "split_zhou_EuroSAT.json", "2750", 10, c, "#eurosat"),
        Layout("ucf101", "UCF101", "ucf101", "coop", "split_zhou_UCF101.json", "UCF-101-midframes", 101, c,
               "#ucf101"),
        Layout("caltech256", "Caltech256", "caltech256", "coop", "split_Caltech256.json", "256_ObjectCategories",
               257, s, "#caltech256"),
        Layout("cub", "CUB", "cub", "coop", "split_CUB.json", "images", 200, s, "#cub"),
        Layout("birdsnap", "Birdsnap", "birdsnap", "coop", "split_Birdsnap.json", "images", 500, s, "#birdsnap"),
    ]
    return {row.key: row for row in rows}


LAYOUTS: dict[str, Layout] = _layouts()
_BY_FOLDER: dict[str, Layout] = {}
for _layout in LAYOUTS.values():
    for _name in (_layout.folder, *_layout.aliases):
        _BY_FOLDER.setdefault(_name.lower(), _layout)


def find_layout(path: str | os.PathLike | None = None, classnames: str | os.PathLike | None = None) -> Layout | None:
    """The known dataset a path belongs to: by its folder name (the path, or the folder of a split
    file), else by the class file's name (``food101.txt`` -> food101); None when neither is known."""
    if path is not None:
        p = Path(path)
        names = [p.name] if not p.suffix.lower() == ".json" else []
        names += [p.parent.name]
        for n in names:
            if n.lower() in _BY_FOLDER:
                return _BY_FOLDER[n.lower()]
        if p.suffix.lower() == ".json":
            for layout in LAYOUTS.values():
                if layout.split == p.name:
                    return layout
    if classnames is not None:
        return LAYOUTS.get(Path(classnames).stem.lower())
    return None


def known_folder(name: str) -> bool:
    """Whether ``name`` is the folder name of one of the known datasets."""
    return name.lower() in _BY_FOLDER


def guide_hint(layout: Layout | None) -> str:
    if layout is None:
        return (f"see {COOP_GUIDE[0]} ({COOP_GUIDE[1]}) or, for Caltech256, CUB and Birdsnap, "
                f"{SUSX_GUIDE[0]} ({SUSX_GUIDE[1]})")
    return f"see {layout.where}"


def explain_missing(path: str | os.PathLike, what: str = "dataset path") -> str:
    """One line for a dataset path that does not exist: what is missing and which guide describes it.

    For the benchmark config loader, so that a missing dataset folder names the guide too.
    """
    p = Path(path)
    layout = find_layout(p)
    if layout is None:
        for parent in p.parents:        # a file or folder inside a known dataset's folder
            layout = _BY_FOLDER.get(parent.name.lower())
            if layout is not None:
                break
    return f"{what} {p} not found; {guide_hint(layout)}"


def explain_all_missing(missing: list[tuple[str, str, Path]]) -> str:
    """One line for the missing files of several datasets, ``(dataset, what, path)`` (``what``: ``""``
    for the dataset's own path, else ``"descriptions "`` and the like): each under their common
    folder, then the guides that describe the dataset folders (each once)."""
    paths = [p for _, _, p in missing]
    try:
        common = Path(os.path.commonpath([str(p) for p in paths]))
    except ValueError:   # no common folder (relative and absolute, other drives)
        common = None
    if common is not None and common in paths:
        common = common.parent

    def shown(p: Path) -> str:
        return str(p.relative_to(common)) if common is not None else str(p)

    folders = [p for _, what, p in missing if not what]
    layouts = [find_layout(p) for p in folders]
    guides = list(dict.fromkeys(f"{g[0]} ({g[1]})" for g in ([lay.guide for lay in layouts if lay is not None]
                                                             or ([COOP_GUIDE, SUSX_GUIDE] if folders else []))))
    where = f" under {common}" if common is not None else ""
    line = (f"{len(missing)} files of {len({n for n, _, _ in missing})} datasets not found{where}: "
            + ", ".join(f"{name} ({what}{shown(p)})" for name, what, p in missing))
    return line + (f"; the dataset folders are laid out as {' and '.join(guides)} describe" if guides else "")
