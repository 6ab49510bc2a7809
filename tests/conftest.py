"""Shared fixtures: a tiny randomly initialised open_clip model, a small labelled image set made
from the repository's example photos, and the real data in ../shared.

``AWT_TEST_SHARED=/some/path`` points the ``shared_dir`` fixtures elsewhere; a path that does not
exist shows which tests still need ../shared (they skip) and that the others stand on their own.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("unit", "integration", "e2e", "gpu")
SHARED = Path(os.environ.get("AWT_TEST_SHARED") or REPO.parent / "shared")
EXAMPLES = REPO / "awt" / "data" / "examples"

# A ViT/text-transformer pair small enough for CPU tests; the real tokenizer (49408 tokens).
TINY_CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


def write_tiny_model(directory: Path) -> str:
    """Write a ``local-dir:`` model folder (config only: random weights); returns the model name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(TINY_CONFIG))
    return f"local-dir:{directory}"


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def example_files() -> list[str]:
    """The four packaged example photos (astronaut, cat, coffee, rocket), as paths."""
    return [str(EXAMPLES / f) for f in ("astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg")]


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_name):
    from awt.backbones import create_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(tiny_model_name, None, device="cpu")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def caltech_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "caltech101"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"{path}/labels.csv not found")
    return path


# -- a small labelled image set, made here from awt/data/examples (public domain / CC0 photos) ------

# folder (= source photo), class name in labels.csv, descriptions (AWT-style sentences)
EXAMPLE_CLASSES = [
    ("astronaut", "astronaut", [
        "An astronaut wears a bulky white spacesuit with a helmet and a tinted visor.",
        "The suit of an astronaut carries mission patches and a national flag on the shoulder.",
        "An astronaut is often photographed in an orange or white flight suit before a launch.",
        "A person in a pressurised suit with gloves, boots and a life-support backpack.",
        "Astronauts are shown smiling in official portraits in front of a flag or a model spacecraft.",
        "An astronaut floats weightless inside a space station among cables and handrails.",
    ]),
    ("cat", "cat", [
        "A cat is a small furry animal with pointed ears, whiskers and a long tail.",
        "A tabby cat has a striped coat in shades of brown, grey and black.",
        "A cat's eyes are large and round, with vertical slit pupils in bright light.",
        "A cat often sits upright with its front paws together and its tail wrapped around it.",
        "The face of a cat shows a small pink nose and long white whiskers.",
        "A domestic cat rests on a sofa, a windowsill or a patterned rug.",
    ]),
    ("coffee", "cup_of_coffee", [
        "A cup of coffee is a ceramic cup filled with a dark brown drink, set on a saucer.",
        "A cup of coffee often has a layer of light brown foam or latte art on top.",
        "A cup of coffee stands on a wooden table or a cafe counter, sometimes beside a spoon.",
        "Steam rises from a hot cup of coffee served in a white porcelain cup.",
        "A cup of coffee has a round rim, a handle on one side and a creamy surface.",
        "A cup of coffee is photographed from above, showing a circle of coffee and milk.",
    ]),
    ("rocket", "rocket", [
        "A rocket is a tall white cylinder standing upright on a launch pad.",
        "A rocket lifts off on a bright column of flame and a cloud of smoke and steam.",
        "A rocket has stages stacked on top of one another and a pointed nose cone.",
        "A rocket stands beside a steel launch tower with cables and walkways.",
        "A rocket leaves a long trail of exhaust against a blue sky.",
        "A rocket carries the logo of its maker and a flag painted on its side.",
    ]),
]
# classes the descriptions file names beyond the images' classes (a file made for a larger set)
EXTRA_DESCRIBED = {
    "dog": [
        "A dog is a four-legged animal with fur, a wet nose and floppy or pointed ears.",
        "A dog wags its tail and holds its tongue out when it pants.",
        "A dog wears a collar and walks beside its owner on a leash.",
        "A dog's coat can be short or long, in black, brown, white or spotted colours.",
        "A dog lies on the grass or fetches a ball in a park.",
        "A dog has a long muzzle, strong jaws and sharp canine teeth.",
    ],
    "airplane": [
        "An airplane has a long fuselage, two wings and a tail fin.",
        "An airplane shows a row of small windows along its side and engines under its wings.",
        "An airplane takes off from a runway with its wheels lowered.",
        "An airplane flies high in the sky, leaving white contrails behind it.",
        "An airplane is painted in an airline's colours with its logo on the tail.",
        "An airplane stands at an airport gate beside a jet bridge.",
    ],
}


@dataclass(frozen=True)
class ExampleImages:
    """A small labelled image set: ``root/<folder>/image_000k.{jpg,png,jpeg}`` and ``root/labels.csv``."""

    root: Path
    labels_csv: Path            # path,label,classname (paths relative to root), as ../shared's caltech101
    descriptions: Path          # {classname: [sentence, ...]}: every class here, and EXTRA_DESCRIBED
    classnames: list[str]       # label order
    folders: list[str]          # one image folder per class, label order
    rows: list[tuple[Path, int, str]]   # (absolute path, label, classname), class by class
    per_class: int


def _variants(photo):
    """Four real photos from one: crops, a flip, a slight rotation, colour and size changes."""
    from PIL import Image, ImageEnhance, ImageOps

    w, h = photo.size
    s = min(w, h)
    yield ".jpg", ImageOps.fit(photo, (160, 160), Image.Resampling.BICUBIC)
    left = ImageOps.mirror(photo).crop((0, 0, int(w * 0.8), h))
    yield ".png", left.resize((176, int(176 * h / (w * 0.8))), Image.Resampling.BILINEAR)
    warm = ImageEnhance.Brightness(ImageEnhance.Color(photo).enhance(0.4)).enhance(1.15)
    yield ".jpeg", warm.crop((w - s, 0, w, s)).resize((144, 144), Image.Resampling.LANCZOS)
    turned = photo.rotate(8, resample=Image.Resampling.BICUBIC, expand=False)
    box = (int(w * 0.15), int(h * 0.15), int(w * 0.85), int(h * 0.85))
    cool = ImageEnhance.Contrast(turned.crop(box)).enhance(1.3)
    yield ".png", cool.resize((128, int(128 * (box[3] - box[1]) / (box[2] - box[0]))), Image.Resampling.BICUBIC)


def make_example_images(root: Path) -> ExampleImages:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[Path, int, str]] = []
    per_class = 0
    for label, (folder, name, _) in enumerate(EXAMPLE_CLASSES):
        with Image.open(EXAMPLES / f"{folder}.jpg") as src:
            photo = src.convert("RGB")
        (root / folder).mkdir(exist_ok=True)
        variants = list(_variants(photo))
        per_class = len(variants)
        for k, (suffix, image) in enumerate(variants, start=1):
            path = root / folder / f"image_{k:04d}{suffix}"
            if suffix == ".png":
                image.save(path)
            else:
                image.save(path, quality=90)
            rows.append((path, label, name))
    labels_csv = root / "labels.csv"
    with open(labels_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "classname"])
        for path, label, name in rows:
            w.writerow([path.relative_to(root).as_posix(), label, name])
    descriptions = root / "descriptions.json"
    doc = {name: sentences for _, name, sentences in EXAMPLE_CLASSES} | EXTRA_DESCRIBED
    descriptions.write_text(json.dumps(doc, indent=1))
    return ExampleImages(root, labels_csv, descriptions, [c[1] for c in EXAMPLE_CLASSES],
                         [c[0] for c in EXAMPLE_CLASSES], rows, per_class)


@pytest.fixture(scope="session")
def labeled_images(tmp_path_factory) -> ExampleImages:
    """16 images (4 classes x 4; JPEG and PNG) with labels.csv and a descriptions file; no ../shared needed."""
    return make_example_images(tmp_path_factory.mktemp("examples") / "images")


# -- a real `awt serve` process (tests/support/serve_server.py) ---------------------------------------------

SERVE_VIEWS = 3          # few views: the tests check equality and behaviour, not accuracy
SERVE_MAX_PIXELS = 1_000_000


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_model_name, labeled_images):
    """``awt serve`` on 127.0.0.1 with the tiny model, the example classes as its own set, and small
    limits (8 images, 1 MiB, 10 inline classes, 1 MP images, bodies within 2 s)."""
    pytest.importorskip("fastapi", reason="awt serve needs the serve extra: pip install 'awt[serve]'")
    from support.serve_server import ServeProcess

    work = tmp_path_factory.mktemp("serve")
    classes = work / "classes.txt"
    classes.write_text("\n".join(labeled_images.classnames) + "\n")
    server = ServeProcess(["--model", tiny_model_name, "--pretrained", "none", "--classes", str(classes),
                           "--views", str(SERVE_VIEWS), "--max-pixels", str(SERVE_MAX_PIXELS), "--max-images", "8",
                           "--max-upload-mb", "1", "--max-classes", "10", "--batch-size", "8", "--max-wait-ms", "50",
                           "--queue-size", "32", "--upload-timeout", "2", "--cache-dir", str(work / "cache")])
    server.classes_file, server.cache_dir = classes, work / "cache"
    yield server
    server.stop()


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its layer (its folder) and ``shared`` where it reads ../shared."""
    tests = Path(__file__).resolve().parent
    for item in items:
        layer = Path(str(item.fspath)).resolve().relative_to(tests).parts[0]
        if layer in LAYERS:
            item.add_marker(layer)
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker("shared")
