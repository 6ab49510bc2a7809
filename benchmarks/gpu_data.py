"""Inputs for the GPU check: real JPEG files made from the repository's example photos, a small
labelled set with descriptions, and tiny open_clip configs for the CPU rehearsal.

Nothing here needs ../shared (it does not travel to a lent GPU machine) or the network.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "awt" / "data" / "examples"
# (photo, class name): the four example photos
PHOTOS = [("astronaut", "astronaut"), ("cat", "cat"), ("coffee", "cup of coffee"), ("rocket", "rocket")]

# open_clip configs small enough for a 2-core CPU (random weights; the real tokenizer)
_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
               "interpolation": "bicubic", "resize_mode": "shortest"}
TINY_CONFIGS = {
    "tiny-b": {"embed_dim": 64,
               "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}},
    "tiny-l": {"embed_dim": 96,
               "vision_cfg": {"image_size": 64, "layers": 3, "width": 96, "patch_size": 8, "head_width": 32},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}},
}


def write_tiny_model(folder: Path, name: str) -> str:
    """A ``local-dir:`` model folder holding only a config (random weights); returns the model name."""
    from awt.files import atomic_write_text  # steps may write it at once (the CPU rehearsal's --jobs)

    atomic_write_text(folder / "open_clip_config.json",
                      json.dumps({"model_cfg": TINY_CONFIGS[name], "preprocess_cfg": _PREPROCESS}))
    return f"local-dir:{folder}"


def _variant(photo, k: int):
    """The ``k``-th variant of a photo: a crop, a mirror, a turn and a colour change, at an
    ImageNet-like size (its short side 300 to 420 pixels)."""
    from PIL import ImageEnhance, ImageOps

    w, h = photo.size
    dx, dy = (k * 37) % max(1, w // 5), (k * 23) % max(1, h // 5)
    image = photo.crop((dx, dy, w - (k * 11) % max(1, w // 6), h - (k * 7) % max(1, h // 6)))
    if k % 2:
        image = ImageOps.mirror(image)
    if k % 3 == 1:
        image = image.rotate(5 + k % 7)
    image = ImageEnhance.Color(image).enhance(0.7 + 0.1 * (k % 6))
    short = 300 + (k * 29) % 121
    scale = short / min(image.size)
    return image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))))


def _photos() -> list:
    from PIL import Image

    out = []
    for stem, _ in PHOTOS:
        with Image.open(EXAMPLES / f"{stem}.jpg") as src:
            out.append(src.convert("RGB"))
    return out


def image_files(folder: Path, distinct: int, count: int) -> list[str]:
    """``count`` paths cycling over ``distinct`` JPEG files written once into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"image_{k:04d}.jpg" for k in range(distinct)]
    if not all(p.is_file() for p in paths):
        photos = _photos()
        for k, path in enumerate(paths):
            _variant(photos[k % len(photos)], k).save(path, quality=90)
    return [str(paths[i % distinct]) for i in range(count)]


def labelled_set(root: Path, per_class: int) -> dict[str, Path]:
    """``root/<class>/image_k.jpg`` for the four example classes, with ``labels.csv``
    (path,label,classname), ``classes.txt`` and ``descriptions.json`` (five sentences per class).
    Written once; returns those paths and the image folder."""
    labels, classes, descriptions = root / "labels.csv", root / "classes.txt", root / "descriptions.json"
    if not labels.is_file():
        photos = _photos()
        rows = []
        for label, ((stem, name), photo) in enumerate(zip(PHOTOS, photos)):
            (root / stem).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                path = root / stem / f"image_{k:03d}.jpg"
                _variant(photo, 5 * k + label).save(path, quality=90)
                rows.append((path.relative_to(root).as_posix(), label, name))
        classes.write_text("".join(f"{name}\n" for _, name in PHOTOS))
        descriptions.write_text(json.dumps({name: [f"A photo of a {name}, seen {how}." for how in (
            "from the front", "from the side", "up close", "from far away", "in bright light")]
            for _, name in PHOTOS}, indent=1))
        with open(labels, "w", newline="") as f:  # last: its presence says the set is whole
            writer = csv.writer(f)
            writer.writerow(["path", "label", "classname"])
            writer.writerows(rows)
    return {"root": root, "labels": labels, "classes": classes, "descriptions": descriptions}
