"""The AWT paper's zero-shot protocol (issue 11): benchmarks/configs/paper.yaml and its data files.

* the config and its data files against the protocol, dataset by dataset: templates, class lists and
  their order, description files, prompt joining;
* a miniature of every dataset layout (real folder and file names, real split formats, real class
  counts, one generated image per class) read by ``awt bench`` over all 18 datasets with a tiny
  random model;
* a missing file or folder reported in one line naming the guide;
* with the authors' description files (``../shared``, when present): their keys are our class lists,
  and the prompts built for a class are the authors' prompts.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path

import pytest
import yaml

from awt.bench.datasets import clean_classname, read_dataset
from awt.classes import read_class_file
from awt.bench.layouts import LAYOUTS
from awt.errors import AWTError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "benchmarks" / "configs"
CLASSNAMES = REPO / "benchmarks" / "classnames"
PAPER = CONFIGS / "paper.yaml"
COOP = CONFIGS / "coop.yaml"

TEMPLATES = yaml.safe_load((REPO / "benchmarks" / "templates.yaml").read_text())["templates"]
CATALOG = yaml.safe_load((REPO / "descriptions" / "datasets.yaml").read_text())["datasets"]

# the 18 datasets of the paper's zero-shot tables, by the authors' ids, with their class counts
PAPER_DATASETS = {
    "imagenet": 1000, "imagenetv2": 1000, "imagenet_sketch": 1000, "imagenet_a": 200, "imagenet_r": 200,
    "caltech101": 100, "caltech256": 257, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
    "food101": 101, "fgvc_aircraft": 100, "birdsnap": 500, "cub": 200, "sun397": 397, "dtd": 47, "eurosat": 10,
    "ucf101": 101,
}
# the authors' templates as the issue quotes them
QUOTED_TEMPLATES = {
    "oxford_pets": "a photo of a {} from OxfordPets", "eurosat": "satellite photo of the {}",
    "ucf101": "a photo of a person doing {}", "imagenet_r": "a rendition photo of a {}",
    "imagenet_sketch": "a sketch photo of a {}",
}
SHARES_IMAGENET = ("imagenet", "imagenet_a", "imagenetv2")


def _entries(config: Path) -> dict[str, dict]:
    raw = yaml.safe_load(config.read_text())
    return {d["name"]: d for d in raw["datasets"]}


def _pairs(path: Path) -> list[tuple[str, str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    return [tuple(ln.split("\t", 1)) for ln in lines]


def authors_prompts(name: str, template: str, descriptions: list[str], m: int) -> list[str]:
    """The authors' joining (AWT_zero_shot/evaluate.py), restated: the template filled with the name
    ('_' -> ' '); the bare prompt ends in '.'; a description follows after '. ', as it is."""
    head = template.format(name.replace("_", " "))
    return [head + "."] + [head + ". " + d for d in descriptions[:m]]


# -- the config and its data files ------------------------------------------------------------------

def test_the_18_datasets_everywhere():
    assert set(LAYOUTS) == set(PAPER_DATASETS) == set(TEMPLATES) == set(CATALOG)
    assert list(_entries(PAPER)) == list(_entries(COOP))
    assert set(_entries(PAPER)) == set(PAPER_DATASETS)
    for key, n in PAPER_DATASETS.items():
        assert LAYOUTS[key].classes == n


def test_paper_yaml_follows_the_authors():
    raw = yaml.safe_load(PAPER.read_text())
    assert raw["settings"]["views"] == 50 and raw["settings"]["descriptions_per_class"] == 50
    assert raw["settings"].get("clean_names", True) is True
    assert raw["backbones"][0]["model"] == "ViT-B-16" and raw["backbones"][0]["pretrained"] == "openai"
    assert "data_root" not in raw       # classnames stay relative to the config's folder
    for name, d in _entries(PAPER).items():
        layout = LAYOUTS[name]
        assert d["template"] == TEMPLATES[name]["awt"], name
        assert d["path"] == "${AWT_DATA}/" + layout.folder, name
        assert d["format"] == layout.format, name
        assert (CONFIGS / d["classnames"]).resolve() == (REPO / CATALOG[name]["classes"]).resolve(), name
        assert d["descriptions"] == CATALOG[name]["file"], name
        assert "image_dir" not in d      # the reader knows the guide's image folder and names it when missing
    for name, template in QUOTED_TEMPLATES.items():
        assert _entries(PAPER)[name]["template"] == template
    # ImageNet, -A and -V2 share imagenet.json; -R and -Sketch have their own
    assert {n for n, d in _entries(PAPER).items() if d["descriptions"] == "imagenet.json"} == set(SHARES_IMAGENET)
    assert _entries(PAPER)["imagenet_r"]["descriptions"] == "imagenet_r.json"
    assert _entries(PAPER)["imagenet_sketch"]["descriptions"] == "imagenet_sketch.json"
    assert all(CATALOG[n].get("shares") == "imagenet" for n in ("imagenet_a", "imagenetv2"))
    # "ours used CoOp's templates, which differ on 5 of the 11 CoOp datasets"
    coop11 = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
              "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]
    differ = [n for n in coop11 if TEMPLATES[n]["awt"] + "." != TEMPLATES[n]["coop"]]
    assert sorted(differ) == ["dtd", "eurosat", "fgvc_aircraft", "food101", "oxford_pets"]


def test_coop_yaml_is_paper_yaml_with_coop_templates():
    paper, coop = _entries(PAPER), _entries(COOP)
    for name in paper:
        assert coop[name]["template"] == TEMPLATES[name]["coop"], name
        assert {k: v for k, v in coop[name].items() if k != "template"} == \
               {k: v for k, v in paper[name].items() if k != "template"}, name
    assert TEMPLATES["dtd"]["coop"] == "{} texture." and TEMPLATES["food101"]["coop"] == "a photo of {}, a type of food."


def test_class_files():
    for key, n in PAPER_DATASETS.items():
        path = REPO / CATALOG[key]["classes"]
        names = read_class_file(path)
        assert len(names) == n, key
        for name in names:
            assert name == name.strip() and name and "\t" not in name, (key, name)
            # the engine's prompt spelling is the authors' classname.replace("_", " ")
            assert clean_classname(name) == name.replace("_", " "), (key, name)
    imagenet = _pairs(CLASSNAMES / "imagenet.tsv")
    names = [n for _, n in imagenet]
    wnids = [w for w, _ in imagenet]
    assert wnids == sorted(wnids) and all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert [i for i, n in enumerate(names) if n == "missile"] == [657, 744]
    assert [i for i, n in enumerate(names) if n == "sunglasses"] == [836, 837]
    assert len(set(names)) == 998
    by_wnid = dict(imagenet)
    for sub in ("imagenet_a", "imagenet_r"):
        pairs = _pairs(CLASSNAMES / f"{sub}.tsv")
        assert len(pairs) == 200 and [w for w, _ in pairs] == sorted(w for w, _ in pairs)
        assert all(by_wnid[w] == n for w, n in pairs)    # the matching entries of the ImageNet list
    assert _pairs(CLASSNAMES / "imagenet_a.tsv")[0] == ("n01498041", "stingray")
    assert _pairs(CLASSNAMES / "imagenet_r.tsv")[0] == ("n01443537", "goldfish")
    v2 = _pairs(CLASSNAMES / "imagenetv2.tsv")
    assert [f for f, _ in v2] == sorted(map(str, range(1000)))        # ImageFolder's string order
    assert all(names[int(f)] == n for f, n in v2)
    assert read_class_file(CLASSNAMES / "eurosat.txt")[:3] == ["annual crop land", "forest", "brushland or shrubland"]
    assert read_class_file(CLASSNAMES / "caltech101.txt")[:3] == ["face", "leopard", "motorbike"]


# -- the authors' description files (../shared) ------------------------------------------------------

def _authors_file(shared_dir: Path, key: str) -> Path:
    path = shared_dir / "descriptions" / "awt" / CATALOG[key]["file"]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("key", [k for k in PAPER_DATASETS if CATALOG[k]["file"] not in ("imagenet.json", "imagenet_sketch.json")])
def test_class_lists_are_the_keys_of_the_authors_files(shared_dir, key):
    data = json.loads(_authors_file(shared_dir, key).read_text(encoding="utf-8"))
    assert list(data) == read_class_file(REPO / CATALOG[key]["classes"])


def test_imagenet_names_are_clips_cleaned_names(shared_dir):
    import csv

    labels = shared_dir / "data" / "imagenet-sample" / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    rows = sorted(csv.DictReader(labels.open(encoding="utf-8")), key=lambda r: int(r["label"]))
    assert [(r["wnid"], r["classname_clip"]) for r in rows] == _pairs(CLASSNAMES / "imagenet.tsv")


def _our_prompts(key: str, descriptions_file: Path, m: int = 50) -> tuple[list[str], list[list[str]]]:
    from awt.descriptions import load_descriptions
    from awt.prompt_sets import build_prompts

    names = read_class_file(REPO / CATALOG[key]["classes"])
    aligned = load_descriptions(descriptions_file).for_classes(names)
    prompts = build_prompts([clean_classname(n) for n in names], _entries(PAPER)[key]["template"], aligned, per_class=m)
    return names, prompts


SHARED_KEYS = ["caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
               "sun397", "dtd", "eurosat", "ucf101", "caltech256", "cub", "birdsnap", "imagenet_r"]


@pytest.mark.parametrize("key", SHARED_KEYS)
def test_prompts_are_the_authors_as_the_text_encoder_reads_them(shared_dir, key):
    """Equal up to surrounding whitespace, which CLIP's tokenizer drops (whitespace_clean + strip)."""
    path = _authors_file(shared_dir, key)
    data = json.loads(path.read_text(encoding="utf-8"))
    names, ours = _our_prompts(key, path)
    for name, got in zip(names, ours):
        want = authors_prompts(name, TEMPLATES[key]["awt"], data[name], 50)
        assert len(got) == 51
        assert [" ".join(s.split()) for s in got] == [" ".join(s.split()) for s in want], name


def test_prompts_are_the_authors_string_for_string(shared_dir):
    mismatches = 0
    for key in SHARED_KEYS:
        path = _authors_file(shared_dir, key)
        data = json.loads(path.read_text(encoding="utf-8"))
        names, ours = _our_prompts(key, path)
        for name, got in zip(names, ours):
            mismatches += got != authors_prompts(name, TEMPLATES[key]["awt"], data[name], 50)
    assert mismatches == 0


def test_prompt_joining_examples():
    from awt.prompt_sets import build_prompts

    got = build_prompts(["apple pie"], TEMPLATES["food101"]["awt"], [["Golden crust.", "Lattice top."]], per_class=2)
    assert got == [["a photo of a apple pie from Food101.",
                    "a photo of a apple pie from Food101. Golden crust.",
                    "a photo of a apple pie from Food101. Lattice top."]]
    # for every template of both files, the bare prompt is the authors' t + "."
    for key, t in TEMPLATES.items():
        for template in (t["awt"], t["coop"]):
            bare = build_prompts(["x y"], template)[0][0]
            assert bare == template.rstrip(".").format("x y") + ".", (key, template)


def test_duplicate_imagenet_names_share_a_name_keyed_file(tmp_path):
    from awt.descriptions import load_descriptions

    names = read_class_file(CLASSNAMES / "imagenet.tsv")
    doc = {n: [f"{n} number {i}." for i in range(3)] for n in names}   # a dict: one 'missile' key
    assert len(doc) == 998
    path = tmp_path / "imagenet.json"
    path.write_text(json.dumps(doc))
    aligned = load_descriptions(path).for_classes(names)
    assert aligned[657] == aligned[744] == doc["missile"]
    assert aligned[836] == aligned[837] == doc["sunglasses"]


# -- the miniature of every layout ----------------------------------------------------------------------

def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 20), (120, 80, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _split_relpath(key: str, label: int, name: str) -> str:
    """A test image path as the dataset's split file spells it (relative to its image folder)."""
    folder = name.replace(" ", "_").replace("/", "_")
    return {
        "caltech101": f"{folder}/image_0001.jpg",
        "oxford_pets": f"{folder.capitalize()}_1.jpg",
        "stanford_cars": f"cars_test/{label + 1:05d}.jpg",
        "oxford_flowers": f"image_{label + 1:05d}.jpg",
        "food101": f"{folder}/{1000000 + label}.jpg",
        "sun397": f"{folder[0]}/{folder}/sun_{label:012d}.jpg",
        "dtd": f"{folder}/{folder}_0001.jpg",
        "eurosat": f"{folder.title().replace('_', '')}/{folder.title().replace('_', '')}_1.jpg",
        "ucf101": f"{folder}/v_{folder.replace('_', '')}_g01_c01.jpg",
        "caltech256": f"{label + 1:03d}.{folder}/{label + 1:03d}_0001.jpg",
        "cub": f"{label + 1:03d}.{folder}/{folder}_0001_{label}.jpg",
        "birdsnap": f"{folder}/{label:08x}.jpg",
    }[key]


def build_miniature(root: Path, descriptions: Path, per_class: int = 1) -> None:
    """Every paper dataset under ``root`` as its guide lays it out, one image per class; and a
    descriptions file per dataset in the authors' shape ({name: [sentence, ...]}) under ``descriptions``."""
    jpeg = _jpeg()
    for key, layout in LAYOUTS.items():
        folder = root / layout.folder
        if layout.format == "imagenet":
            tree = folder / layout.images
            for i, (sub, _name) in enumerate(_pairs(REPO / CATALOG[key]["classes"])):
                file = {"imagenet": f"ILSVRC2012_val_{i + 1:08d}.JPEG", "imagenet_sketch": "sketch_0.JPEG",
                        "imagenetv2": f"{i:040x}.jpeg", "imagenet_a": f"0.{i:06d}_sample_0.5.jpg",
                        "imagenet_r": f"art_{i}.jpg"}[key]
                _write(tree / sub / file, jpeg)
            (tree.parent / "README.txt").write_text("not an image folder\n")
        elif layout.format == "fgvc-aircraft":
            variants = read_class_file(REPO / CATALOG[key]["classes"])
            (folder / "images").mkdir(parents=True)
            (folder / "variants.txt").write_text("\n".join(variants) + "\n")
            lines = []
            for i, v in enumerate(variants):
                image_id = f"{1000000 + i:07d}"
                _write(folder / "images" / f"{image_id}.jpg", jpeg)
                lines.append(f"{image_id} {v}")
            for part in ("train", "val", "test"):
                (folder / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
        else:
            names = read_class_file(REPO / CATALOG[key]["classes"])
            images = folder / layout.images if layout.images else folder
            test = []
            for label, name in enumerate(names):
                rel = _split_relpath(key, label, name)
                _write(images / rel, jpeg)
                test.append([rel, label, name])
            doc = {"train": test, "val": [], "test": test}
            (folder / layout.split).write_text(json.dumps(doc))
    descriptions.mkdir(parents=True, exist_ok=True)
    for key, entry in CATALOG.items():
        if entry.get("shares"):
            continue                     # ImageNet-A and -V2 read ImageNet's file
        names = read_class_file(REPO / entry["classes"])
        doc = {n: [f"A {n} seen in a test image, view {j}." for j in range(2)] for n in names}
        (descriptions / entry["file"]).write_text(json.dumps(doc))


# smaller than smoke.yaml's model: 5,548 classes' prompts go through the text encoder
TINY = {
    "model_cfg": {"embed_dim": 32,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}


def miniature_config(tmp_path: Path) -> Path:
    """paper.yaml with a tiny random model, 2 images per dataset, N = 2, M = 1, clip and awt."""
    raw = yaml.safe_load(PAPER.read_text())
    raw["name"] = "paper-miniature"
    raw["methods"] = ["clip", "awt"]
    raw["backbones"] = [{"name": "tiny-random", **TINY}]
    raw["settings"].update({"views": 2, "descriptions_per_class": 1, "limit": 2, "batch_size": 8, "device": "cpu",
                            "precision": "fp32", "workers": 0, "shard_batches": 1})   # amp needs a GPU
    for d in raw["datasets"]:
        d["classnames"] = str((CONFIGS / d["classnames"]).resolve())   # the config moves to tmp_path
    path = tmp_path / "paper-miniature.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def miniature(tmp_path, monkeypatch):
    data, desc = tmp_path / "data", tmp_path / "descriptions"
    build_miniature(data, desc)
    monkeypatch.setenv("AWT_DATA", str(data))
    monkeypatch.setenv("AWT_DESCRIPTIONS", str(desc))
    return data, desc


@pytest.mark.slow
def test_bench_runs_the_paper_config_on_a_miniature_of_every_layout(miniature, tmp_path, caplog):
    from awt.bench.config import load_config
    from awt.bench.runner import run_bench

    started = time.perf_counter()
    config = load_config(miniature_config(tmp_path))
    assert [d.name for d in config.datasets] == list(_entries(PAPER))
    caplog.set_level(logging.INFO, logger="awt.bench")
    result = run_bench(config, tmp_path / "out")
    logs = [r.getMessage() for r in caplog.records if r.name == "awt.bench"]
    seconds = time.perf_counter() - started
    assert len(result.records) == 36 and len(result.ran) == 36
    for record in result.records:
        key = record["dataset"]
        assert record["classes"] == PAPER_DATASETS[key], key
        assert record["images"] == 2, key
        assert record["dataset_info"]["total_images"] == PAPER_DATASETS[key], key   # every class found
        assert record["config"]["dataset"]["template"] == TEMPLATES[key]["awt"]
    for key, n in PAPER_DATASETS.items():
        assert any(line.startswith(f"dataset {key}: ") and line.endswith(f"{n} classes") for line in logs), key
    print(f"\nminiature: 18 datasets, {sum(PAPER_DATASETS.values())} classes, 36 runs in {seconds:.1f} s")


def test_the_readers_on_the_miniature(miniature):
    data, _ = miniature
    entries = _entries(PAPER)
    for key, n in PAPER_DATASETS.items():
        d = entries[key]
        ds = read_dataset(data / LAYOUTS[key].folder, d["format"], classnames=CONFIGS / d["classnames"])
        assert len(ds.classnames) == n and sorted(set(ds.labels)) == list(range(n)), key
        assert ds.classnames == read_class_file(CONFIGS / d["classnames"]), key
    # ImageNet-V2: label i is folder sorted(str)[i]; its name is ImageNet's name of int(folder)
    v2 = read_dataset(data / "imagenetv2", "imagenet", classnames=CLASSNAMES / "imagenetv2.tsv")
    imagenet = read_class_file(CLASSNAMES / "imagenet.tsv")
    assert v2.extra["folders"][:4] == ["0", "1", "10", "100"]
    assert all(imagenet[int(f)] == v2.classnames[i] for i, f in enumerate(v2.extra["folders"]))
    # the path may also be the class-folder tree itself
    a = read_dataset(data / "imagenet-adversarial" / "imagenet-a", "imagenet", classnames=CLASSNAMES / "imagenet_a.tsv")
    assert len(a.classnames) == 200


COOP_URL = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
SUSX_URL = "https://github.com/vishaal27/SuS-X/blob/main/data/DATA.md"


def _error(data: Path, key: str) -> str:
    d = _entries(PAPER)[key]
    with pytest.raises(AWTError) as info:
        read_dataset(data / LAYOUTS[key].folder, d["format"], classnames=CONFIGS / d["classnames"])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_missing_file_or_folder_is_named_with_its_guide(miniature):
    import shutil

    data, _ = miniature
    (data / "food-101" / "split_zhou_Food101.json").unlink()
    m = _error(data, "food101")
    assert "split_zhou_Food101.json not found" in m and COOP_URL + "#food101" in m
    shutil.rmtree(data / "cub" / "images")
    m = _error(data, "cub")
    assert str(data / "cub" / "images") in m and SUSX_URL + "#cub" in m
    (data / "caltech256" / "split_Caltech256.json").unlink()
    assert SUSX_URL + "#caltech256" in _error(data, "caltech256")
    shutil.rmtree(data / "imagenet-adversarial" / "imagenet-a" / "n01498041")
    m = _error(data, "imagenet_a")
    assert "n01498041 not found" in m and "1 of the 200 class folders" in m and COOP_URL + "#imagenet-a" in m
    shutil.rmtree(data / "imagenet-rendition" / "imagenet-r")
    m = _error(data, "imagenet_r")
    assert "imagenet-r not found" in m and COOP_URL + "#imagenet-r" in m
    (data / "fgvc_aircraft" / "images_variant_test.txt").unlink()
    m = _error(data, "fgvc_aircraft")
    assert "images_variant_test.txt not found" in m and COOP_URL + "#fgvcaircraft" in m
    first = next((data / "eurosat" / "2750").rglob("*.jpg"))
    first.unlink()
    m = _error(data, "eurosat")
    assert str(first) in m and "1 of the 10 images" in m and COOP_URL + "#eurosat" in m
    # a dataset folder that is not there at all
    from awt.bench.layouts import explain_missing

    m = explain_missing(data / "birdsnap-missing" / ".." / "sun397x")
    assert "not found" in m
    shutil.rmtree(data / "dtd")
    m = explain_missing(data / "dtd")
    assert str(data / "dtd") in m and COOP_URL + "#dtd" in m


def test_class_file_and_split_must_agree(miniature, tmp_path):
    data, _ = miniature
    short = tmp_path / "dtd.txt"
    short.write_text("\n".join(read_class_file(CLASSNAMES / "dtd.txt")[:40]) + "\n")
    with pytest.raises(AWTError, match="40 class names"):
        read_dataset(data / "dtd", "coop", classnames=short)


def test_paper_config_loads_and_needs_its_two_variables(tmp_path, monkeypatch):
    """load_config on paper.yaml itself: 18 datasets x its methods; AWT_DATA and AWT_DESCRIPTIONS named
    when unset; paper_results.yaml has a slot for every dataset."""
    from awt.bench.config import load_config
    from awt.bench.plan import plan_runs
    from awt.methods import method_names

    METHODS = method_names()

    data, desc = tmp_path / "data", tmp_path / "descriptions"
    for layout in LAYOUTS.values():
        (data / layout.folder).mkdir(parents=True)       # existence is all load_config checks
    desc.mkdir()
    for entry in CATALOG.values():
        (desc / entry["file"]).write_text("{}")
    monkeypatch.setenv("AWT_DATA", str(data))
    monkeypatch.setenv("AWT_DESCRIPTIONS", str(desc))
    import torch

    if not torch.cuda.is_available():   # the authors' precision, amp, needs a GPU: said at once, naming the key
        with pytest.raises(AWTError, match=r"paper\.yaml: settings\.precision: precision amp needs a GPU"):
            load_config(PAPER)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # as on a GPU machine
    cfg = load_config(PAPER)
    assert [d.name for d in cfg.datasets] == list(_entries(PAPER))
    assert cfg.settings.views == [50] and cfg.settings.descriptions_per_class == [50]
    assert cfg.backbones[0].model == "ViT-B-16" and cfg.backbones[0].pretrained == "openai"
    assert all(d.classnames is not None and d.classnames.is_file() for d in cfg.datasets)
    assert {d.name: d.template for d in cfg.datasets} == {k: v["awt"] for k, v in TEMPLATES.items()}
    assert set(cfg.methods) <= set(METHODS) and len(plan_runs(cfg)) == 18 * len(cfg.methods)
    assert len(load_config(COOP).datasets) == 18
    monkeypatch.delenv("AWT_DESCRIPTIONS")
    with pytest.raises(AWTError, match="descriptions_root: environment variable AWT_DESCRIPTIONS is not set"):
        load_config(PAPER)
    monkeypatch.setenv("AWT_DESCRIPTIONS", str(desc))
    monkeypatch.delenv("AWT_DATA")
    with pytest.raises(AWTError, match="environment variable AWT_DATA is not set"):
        load_config(PAPER)
    results = yaml.safe_load((CONFIGS / "paper_results.yaml").read_text())
    assert set(results["top1"]["awt"]) == set(PAPER_DATASETS)
