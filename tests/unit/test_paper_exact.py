"""Paper-exact runs (issue 20): how files are decoded (one ``Decoding`` value, from the classifier and
the benchmark down to the loader workers and into the cache keys), the precision each run record
states, methods repeated over seeds with their mean and standard deviation, and the paper configs'
settings against the authors' code."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from awt.bench.config import load_config
from awt.bench.features import feature_key
from awt.bench.plan import plan_runs
from awt.bench.runner import run_bench
from awt.errors import AWTError
from awt.images import Decoding, load_image
from awt.loading import ViewSource, view_loader

from conftest import EXAMPLES
from support.bench_configs import EncodeCounter, write_config, write_small_csv

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "benchmarks" / "configs"
AUTHORS = Decoding(exif_transpose=False, draft=False, source_cap=False)


def photo_jpeg(path: Path, orientation: int | None) -> Path:
    """A real photo at 1600 x 1200 as stored, with an EXIF orientation tag or none (the same JPEG data)."""
    with Image.open(EXAMPLES / "coffee.jpg") as src:
        image = src.convert("RGB").resize((1600, 1200), Image.BICUBIC)
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    image.save(path, quality=90, **kwargs)
    return path


def authors_loader(path: Path) -> Image.Image:
    """The AWT authors' loaders (data/fewshot_datasets.py, torchvision's ImageFolder): no EXIF, full size."""
    return Image.open(path).convert("RGB")


# -- Decoding, down to the loader workers -------------------------------------------------------------

def test_decoding_is_one_hashable_value():
    assert Decoding() == Decoding() and hash(Decoding()) == hash(Decoding())
    assert Decoding().key() == ""                             # the default keys nothing: old caches stay valid
    assert AUTHORS.key() == "exif_transpose=False,draft=False,source_cap=False"
    assert Decoding(max_pixels=None).key() == "max_pixels=None"
    assert AUTHORS.as_record() == {"max_pixels": Decoding().max_pixels, "exif_transpose": False, "draft": False,
                                   "source_cap": False}
    assert len({Decoding(), AUTHORS, Decoding(draft=False), Decoding()}) == 3


def test_each_switch_in_the_loader_and_the_authors_pixels(tmp_path, tiny_backbone):
    rotated = photo_jpeg(tmp_path / "rotated.jpg", 6)         # to display: turn 90 degrees clockwise
    side = 4 * max(tiny_backbone.image_size)                   # 256: the views' source cap
    pre = tiny_backbone.preprocess

    def sample(decoding: Decoding):
        s = ViewSource(pre, side, decoding)[(0, str(rotated), 3, 0)]
        assert s.error is None
        return s

    # default: upright, decoded at 1/2 (600 >= 2 x 256), capped to 256 on the short side
    default = sample(Decoding())
    assert tuple(default.pixels.shape) == (3, 341, 256)
    assert tuple(sample(Decoding(exif_transpose=False)).pixels.shape) == (3, 256, 341)   # as stored
    assert tuple(sample(Decoding(source_cap=False)).pixels.shape) == (3, 800, 600)       # the 1/2 decode
    full = sample(Decoding(draft=False))                       # full decode, then capped: a few levels apart
    assert tuple(full.pixels.shape) == (3, 341, 256)
    diff = (full.pixels.float() - default.pixels.float()).abs()
    assert 0 < diff.mean() < 2, diff.mean()

    # all three off: exactly the authors' loader's pixels, and view 0 of them
    theirs = authors_loader(rotated)
    ours = sample(AUTHORS)
    assert tuple(ours.pixels.shape) == (3, 1200, 1600)
    assert torch.equal(ours.pixels.permute(1, 2, 0), torch.from_numpy(np.array(theirs)))
    assert torch.equal(ours.view0, pre(theirs))
    assert np.array_equal(np.asarray(load_image(rotated, exif_transpose=False)), np.asarray(theirs))
    assert load_image(Image.open(rotated), exif_transpose=False).size == (1600, 1200)
    assert load_image(Image.open(rotated)).size == (1200, 1600)


def test_loaders_and_classifier_features_follow_the_decoding(tmp_path, tiny_backbone):
    from awt.classifier import AWTClassifier
    from awt.spec import ClassifierSpec

    rotated = photo_jpeg(tmp_path / "rotated.jpg", 6)
    plain = photo_jpeg(tmp_path / "plain.jpg", None)           # the same stored pixels, no orientation tag
    bb = tiny_backbone
    assert view_loader(bb, 0) is view_loader(bb, 0, Decoding())
    assert view_loader(bb, 0, AUTHORS) is not view_loader(bb, 0) and view_loader(bb, 0, AUTHORS).decoding == AUTHORS

    def features(decoding: Decoding, path: Path) -> torch.Tensor:
        clf = AWTClassifier(bb, ClassifierSpec(["cup", "cat"], views=3, cache_dir=None, decoding=decoding))
        (batch,) = list(clf.iter_image_features([str(path)], num_workers=0))
        return batch.features

    no_exif = features(Decoding(exif_transpose=False), rotated)
    assert torch.equal(no_exif, features(Decoding(), plain))   # the tag ignored: the stored image
    assert not torch.allclose(no_exif, features(Decoding(), rotated), atol=1e-3)


# -- the benchmark: records, cache keys, precision -----------------------------------------------------

def tiny_sweep(tmp_path: Path, images, tiny_model_name: str, methods, **settings) -> Path:
    data = write_small_csv(images, tmp_path / "data")
    base = {"views": 2, "descriptions_per_class": 2, "seed": 0, "batch_size": 4, "workers": 0, "shard_batches": 4,
            "device": "cpu"}
    return write_config(tmp_path / "bench.yaml", name="t", methods=methods, settings={**base, **settings},
                        backbones=[{"name": "tiny", "model": tiny_model_name}],
                        datasets=[{"name": "ex4", "path": str(data.parent), "template": "a photo of a {}.",
                                   "descriptions": str(images.descriptions)}])


def run(config: Path, out: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_bench(load_config(config), out)


def test_decoding_and_precision_in_records_and_keys(labeled_images, tmp_path, tiny_model_name, monkeypatch):
    config = tiny_sweep(tmp_path, labeled_images, tiny_model_name, ["clip", "awt"])
    out = tmp_path / "out"
    first = run(config, out)
    for r in first.records:
        assert r["decoding"] == Decoding().as_record() == r["config"]["decoding"]
        assert r["precision"] == "fp32" and r["config"]["backbone"]["precision"] == "auto"   # resolved; as written
    assert len(list((out / "cache" / "features").glob("*.pt"))) == 1

    # the authors' decoding: every run is made again, from features encoded again into their own entry
    raw = yaml.safe_load(config.read_text())
    raw["settings"]["decoding"] = {"exif_transpose": False, "draft": False, "source_cap": False}
    write_config(config, **raw)
    counter = EncodeCounter(monkeypatch)
    second = run(config, out)
    assert len(second.ran) == 2 and not second.skipped and counter.images(2) == 12
    assert {r["key"] for r in second.records}.isdisjoint(r["key"] for r in first.records)
    assert all(r["decoding"] == AUTHORS.as_record() for r in second.records)
    assert len(list((out / "cache" / "features").glob("*.pt"))) == 2
    paths = load_config(config)
    info = [json.loads(p.read_text()) for p in (out / "cache" / "features").glob("*.json")]
    assert sorted(i["decoding"]["draft"] for i in info) == [False, True]
    assert feature_key("f", ["a.jpg"], 2, 0) == feature_key("f", ["a.jpg"], 2, 0, Decoding())
    assert feature_key("f", ["a.jpg"], 2, 0) != feature_key("f", ["a.jpg"], 2, 0, AUTHORS)
    assert paths.settings.decoding == AUTHORS


# -- repeated seeds -------------------------------------------------------------------------------------

def test_a_method_repeated_over_seeds(labeled_images, tmp_path, tiny_model_name, monkeypatch):
    config = tiny_sweep(tmp_path, labeled_images, tiny_model_name, ["clip", "waffle", "awt"], repeats={"waffle": 3})
    plan = plan_runs(load_config(config))
    assert [(r.method, r.seed) for r in plan] == [("clip", 0), ("waffle", 0), ("waffle", 1), ("waffle", 2), ("awt", 0)]
    counter = EncodeCounter(monkeypatch)
    out = tmp_path / "out"
    result = run(config, out)
    assert counter.images(2) == 12                             # one encoding: view 0 does not depend on the seed
    waffle = [r for r in result.records if r["method"] == "waffle"]
    assert [r["seed"] for r in waffle] == [0, 1, 2]
    assert [r["feature_source"] for r in waffle] == ["reused"] * 3 and {r["features"]["seed"] for r in waffle} == {0}
    # each seed read its own descriptors
    assert len({r["key"] for r in waffle}) == 3
    for seed in range(3):
        assert (out / "runs" / "tiny" / "ex4" / f"waffle_v0_m30_s{seed}.json").is_file()

    # the aggregate: mean and population standard deviation over the three records
    (row,) = list(csv.DictReader(open(out / "summary_seeds.csv")))
    assert (row["method"], row["runs"], row["seeds"]) == ("waffle", "3", "0 1 2")
    for m in ("top1", "top5", "mean_per_class_recall"):
        values = [r[m] for r in waffle]
        mean = sum(values) / 3
        assert float(row[f"{m}_mean"]) == pytest.approx(mean, abs=1e-4)
        assert float(row[f"{m}_std"]) == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 3), abs=1e-4)
    seeds = json.loads((out / "runs" / "tiny" / "ex4" / "waffle_v0_m30_seeds.json").read_text())
    assert seeds["format"] == "awt-bench-seeds" and seeds["seeds"] == [0, 1, 2] and seeds["runs"] == 3
    assert [p["key"] for p in seeds["per_seed"]] == [r["key"] for r in waffle]
    assert seeds["top1_mean"] == float(row["top1_mean"])
    md = (out / "summary.md").read_text()
    assert "## Over seeds" in md and f"| waffle | 0 | 30 | 3 | {float(row['top1_mean']):.2f} ± " in md
    assert len(list(csv.DictReader(open(out / "summary.csv")))) == 5   # one row per run, as before

    # more repeats later: only the new seeds run, from the features on disk, encoding nothing
    raw = yaml.safe_load(config.read_text())
    raw["settings"]["repeats"] = {"waffle": 4}
    write_config(config, **raw)
    counter.calls = counter.rows = 0
    more = run(config, out)
    assert more.ran == ["tiny/ex4/waffle views=0 M=30 seed=3"] and counter.calls == 0
    assert list(csv.DictReader(open(out / "summary_seeds.csv")))[0]["runs"] == "4"


def test_repeats_and_decoding_config_errors(labeled_images, tmp_path, tiny_model_name):
    def check(pattern, methods=("clip", "waffle"), **settings):
        config = tiny_sweep(tmp_path, labeled_images, tiny_model_name, list(methods), **settings)
        with pytest.raises(AWTError, match=pattern) as info:
            load_config(config)
        assert "\n" not in str(info.value) and "bench.yaml" in str(info.value)

    check(r"settings\.repeats\.clip: 'clip' does not depend on the seed: its 7 runs would be equal",
          repeats={"clip": 7})
    check(r"settings\.repeats\.awt: 'awt' is not one of the config's methods", repeats={"awt": 3})
    check(r"settings\.repeats\.wafle: unknown method 'wafle'", repeats={"wafle": 3})
    check(r"settings\.repeats\.waffle: must be >= 1, got 0", repeats={"waffle": 0})
    check(r"settings\.repeats: must be a mapping of method to a number of seeds", repeats=7)
    check(r"settings\.decoding\.exif: unknown key", decoding={"exif": False})
    check(r"settings\.decoding\.draft: must be true or false, got 'no'", decoding={"draft": "no"})
    check(r"settings\.decoding\.max_pixels: must be >= 1", decoding={"max_pixels": 0})
    if not torch.cuda.is_available():
        check(r"settings\.precision: precision amp needs a GPU; use fp32 or bf16 on the CPU \(device cpu\)",
              precision="amp")


# -- the paper configs against the authors' code --------------------------------------------------------

def _raw(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_paper_configs_run_as_the_authors(tmp_path, monkeypatch):
    authors = {"exif_transpose": False, "draft": False, "source_cap": False}
    for name in ("paper.yaml", "rivals.yaml", "coop.yaml", "backbones.yaml"):
        settings = _raw(name)["settings"]
        # pre_extract.py / evaluate.py: clip_model.float(), then torch.cuda.amp.autocast(): fp32 weights, autocast
        assert settings["precision"] == "amp", name
        assert settings["decoding"] == authors, name          # Image.open(path).convert("RGB"), full size
    assert _raw("rivals.yaml")["settings"]["repeats"] == {"waffle": 7}

    # the rivals' own settings: 64 views and "a photo of a {}." for ZERO and MTA, fp16 weights
    own, paper = _raw("rivals_authors.yaml"), _raw("paper.yaml")
    assert own["methods"] == ["clip", "zero", "zero-ensemble", "mta"]
    assert own["settings"]["views"] + 1 == 64 and own["settings"]["precision"] == "fp16"
    assert own["settings"]["decoding"] == authors
    assert [d["name"] for d in own["datasets"]] == [d["name"] for d in paper["datasets"]]
    for mine, theirs in zip(own["datasets"], paper["datasets"]):
        assert mine["template"] == "a photo of a {}" and "descriptions" not in mine
        assert {k: v for k, v in mine.items() if k not in ("template", "descriptions", "classnames")} == \
            {k: v for k, v in theirs.items() if k not in ("template", "descriptions", "classnames")}
        if mine["name"] != "eurosat":
            assert mine["classnames"] == theirs["classnames"]
    from awt.classes import read_class_file
    from awt.prompt_sets import build_prompts

    coop_names = read_class_file(REPO / "benchmarks" / "classnames" / "eurosat_coop.txt")
    assert coop_names[:3] == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"] and len(coop_names) == 10
    assert build_prompts(["apple pie"], "a photo of a {}")[0] == ["a photo of a apple pie."]   # f"{prompt} {name}."

    # they load and plan as on a GPU machine: 18 datasets x 4 methods; the rivals' 18 x 7 WaffleCLIP runs
    from awt.bench.layouts import LAYOUTS

    data, desc = tmp_path / "data", tmp_path / "descriptions"
    for layout in LAYOUTS.values():
        (data / layout.folder).mkdir(parents=True)
    desc.mkdir()
    for d in paper["datasets"]:
        (desc / d["descriptions"]).write_text("{}")
    monkeypatch.setenv("AWT_DATA", str(data))
    monkeypatch.setenv("AWT_DESCRIPTIONS", str(desc))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_config(CONFIGS / "rivals_authors.yaml")
    assert cfg.settings.decoding == AUTHORS and len(plan_runs(cfg)) == 18 * 4
    rivals = plan_runs(load_config(CONFIGS / "rivals.yaml"))
    assert sorted({r.seed for r in rivals if r.method == "waffle"}) == list(range(7))
    assert sum(r.method == "waffle" for r in rivals) == 18 * 7 and {r.seed for r in rivals if r.method != "waffle"} == {0}


def test_a_repeated_name_takes_the_last_entry_as_json_load(labeled_images, tmp_path, tiny_model_name):
    from awt.bench.prepare import prepare_dataset
    from awt.descriptions import load_descriptions

    # label 3 is named 'cat' too; the file names 'cat' twice, as a dict-less JSON writer may
    data = write_small_csv(labeled_images, tmp_path / "dup", per_class=1, rename={3: "cat"})
    desc = tmp_path / "repeats.json"
    desc.write_text('{"astronaut": ["An astronaut."], "cat": ["A first cat."], "cup_of_coffee": ["A cup."], '
                    '"cat": ["A second cat."]}')
    assert load_descriptions(desc).last_wins().names == ["astronaut", "cup_of_coffee", "cat"]
    prepared = {}
    for rule in ("in_order", "last"):
        config = write_config(tmp_path / f"{rule}.yaml", methods=["ensemble"],
                              settings={"views": 0, "descriptions_per_class": 1, "device": "cpu", "repeated_names": rule},
                              backbones=[{"name": "tiny", "model": tiny_model_name}],
                              datasets=[{"name": "dup", "path": str(data.parent), "descriptions": str(desc)}])
        cfg = load_config(config)
        prepared[rule] = prepare_dataset(cfg.datasets[0], 1, config)
        assert ("repeated_names" in cfg.datasets[0].identity) == (rule == "last")   # the default keeps old keys
    assert prepared["in_order"].descriptions[1] == ["A first cat."] and prepared["in_order"].descriptions[3] == ["A second cat."]
    authors = json.load(open(desc))                            # the authors' reader: the last 'cat' wins
    assert prepared["last"].descriptions[1] == prepared["last"].descriptions[3] == authors["cat"]
    for name in ("paper.yaml", "rivals.yaml", "coop.yaml", "backbones.yaml"):
        assert _raw(name)["settings"]["repeated_names"] == "last", name
