"""What a sweep reads before any encoding: each dataset with its class names and descriptions, and
each backbone (an inline model config becomes a ``local-dir:`` model folder in the cache)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..classes import duplicate_names, warn_duplicates
from ..errors import AWTError
from ..files import atomic_write_text
from .config import BackboneSpec, DatasetSpec, Settings
from .datasets import LabeledImages, clean_classname, read_dataset

_DEFAULT_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass
class PreparedDataset:
    spec: DatasetSpec
    images: LabeledImages            # the (limited) images scored
    total_images: int
    prompt_names: list[str]
    descriptions: list[list[str]] | None
    subset_note: str
    duplicate_names: dict[str, dict] = field(default_factory=dict)  # name -> its labels, same descriptions?


def prepare_dataset(spec: DatasetSpec, per_class_needed: int, config_path: Path) -> PreparedDataset:
    """Read a dataset's image list, class names and descriptions; every problem is one AWTError."""
    full = read_dataset(spec.path, spec.format, image_dir=spec.image_dir, classnames=spec.classnames,
                        classname_column=spec.classname_column, part=spec.part, split=spec.split)
    if spec.limit is not None and spec.limit < len(full):
        images = full.subset(stratified_subset(full.paths, full.labels, spec.limit, spec.subset_seed))
        covered = len(set(images.labels))
        note = (f"{len(images)} of {len(full)} images, class-stratified round robin (subset_seed "
                f"{spec.subset_seed}), {covered} of {len(full.classnames)} classes")
    else:
        images, note = full, f"all {len(full)} images"
    warn_duplicates(full.classnames, spec.name)
    prompt_names = [clean_classname(n) for n in full.classnames] if spec.clean_names else list(full.classnames)
    aligned = None
    if spec.descriptions is not None:
        from ..descriptions import load_descriptions

        described = load_descriptions(spec.descriptions)
        if spec.repeated_names == "last":   # as json.load reads a file that repeats a name
            described = described.last_wins()
        aligned = described.for_classes(full.classnames)
        if per_class_needed and not spec.allow_fewer_descriptions:
            short = [(n, len(d)) for n, d in zip(full.classnames, aligned) if len(d) < per_class_needed]
            if short:
                listed = ", ".join(f"{n!r} ({k})" for n, k in short[:5])
                raise AWTError(f"{config_path}: datasets ({spec.name}).descriptions: {len(short)} class(es) have fewer "
                               f"than {per_class_needed} descriptions in {spec.descriptions}: {listed}; lower "
                               "settings.descriptions_per_class or set allow_fewer_descriptions: true")
    # each repeated name stays one class per label; a file keyed by name gives them the same descriptions
    duplicates = {}
    for name in duplicate_names(full.classnames):
        labels = [i for i, n in enumerate(full.classnames) if n == name]
        same = None if aligned is None else all(aligned[i] == aligned[labels[0]] for i in labels)
        duplicates[name] = {"labels": labels, "same_descriptions": same}
    return PreparedDataset(spec, images, len(full), prompt_names, aligned, note, duplicates)


def _write_inline_model(spec: BackboneSpec, cache_dir: Path) -> str:
    doc = {"model_cfg": spec.model_cfg, "preprocess_cfg": spec.preprocess_cfg or _DEFAULT_PREPROCESS}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    folder = cache_dir / "models" / f"{spec.name}-{digest}"
    target = folder / "open_clip_config.json"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        atomic_write_text(target, text)
    return f"local-dir:{folder.resolve()}"


def load_backbone(spec: BackboneSpec, settings: Settings, cache_dir: Path, device: str | None = None):
    """The backbone of ``spec`` on ``device`` (default: the settings' device)."""
    from ..backbones import create_backbone

    model = _write_inline_model(spec, cache_dir) if spec.model_cfg is not None else spec.model
    return create_backbone(model, spec.pretrained, device or settings.device, spec.precision)


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
