"""Small bench configs over the example photos (a labels.csv, a YAML file, a whole sweep's config),
a quiet run of one, and a counter of the encoder's calls."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import yaml

from awt.backbones.openclip import OpenCLIPBackbone
from awt.bench.config import load_config
from awt.bench.runner import run_bench
from awt.methods import METHODS


def write_small_csv(images, folder: Path, per_class: int = 3, classes=(0, 1, 2, 3),
                    rename: dict[int, str] | None = None) -> Path:
    """A labels.csv over a few of ``images``' photos (absolute paths), labels renumbered 0..k-1."""
    assert per_class <= images.per_class
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "labels.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "classname"])
        for new, old in enumerate(classes):
            picked = [(path, name) for path, label, name in images.rows if label == old][:per_class]
            for path, name in picked:
                w.writerow([str(path), new, (rename or {}).get(new, name)])
    return out


def write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def small_config(tmp_path: Path, images, tiny_model_name: str, **settings) -> Path:
    data = write_small_csv(images, tmp_path / "data")
    base = {"views": 4, "descriptions_per_class": 4, "seed": 0, "batch_size": 4, "workers": 0, "shard_batches": 1,
            "device": "cpu"}
    base.update(settings)
    return write_config(
        tmp_path / "bench.yaml",
        name="test",
        methods=list(METHODS),
        settings=base,
        backbones=[{"name": "tiny", "model": tiny_model_name}],
        datasets=[{"name": "ex4", "path": str(data.parent), "template": "a photo of a {}.",
                   "descriptions": str(images.descriptions)}],
    )


class EncodeCounter:
    """Wraps OpenCLIPBackbone.encode_images (class-wide): counts calls and images; can fail on purpose."""

    def __init__(self, monkeypatch, views: int | None = None, fail=None):
        self.calls, self.rows, self.batches = 0, 0, []
        self.fail = fail
        original = OpenCLIPBackbone.encode_images
        counter = self

        def encode(bb, pixels):
            counter.calls += 1
            if counter.fail is not None:
                counter.fail(counter, pixels)
            counter.rows += pixels.shape[0]
            counter.batches.append(pixels.shape[0])
            return original(bb, pixels)

        monkeypatch.setattr(OpenCLIPBackbone, "encode_images", encode)

    def images(self, views: int) -> int:
        return self.rows // (views + 1)


def quiet_run(config_path: Path, output: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_bench(load_config(config_path), output, **kwargs)
