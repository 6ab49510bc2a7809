"""The zero-shot video protocol (issue 21): benchmarks/configs/video.yaml on a miniature of the three
datasets' layouts (their real file names and split files, their real class counts, tiny generated
videos), run by ``awt bench`` with a tiny random model: each split a dataset, the mean and the
standard deviation over the splits, video features keyed by their sampling."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from support.video_files import write_video

from awt.bench.datasets import read_dataset
from awt.classes import read_class_file
from awt.errors import AWTError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "benchmarks" / "configs"
VIDEO = CONFIGS / "video.yaml"
CLASSNAMES = REPO / "benchmarks" / "classnames" / "video"
CLASSES = {"ucf101": 101, "hmdb51": 51, "k600": 160}
FOLDERS = {"ucf101": "ucf101_videos", "hmdb51": "hmdb51", "k600": "kinetics600"}
DESCRIPTIONS = {"ucf101": "UCF101.json", "hmdb51": "HMDB51.json", "k600": "K600.json"}
# smaller than tests/conftest.py's model: 632 classes' prompts go through the text encoder
TINY = {
    "model_cfg": {"embed_dim": 32,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}


def _names(key: str, split: int = 1) -> list[str]:
    return read_class_file(CLASSNAMES / (f"k600_split{split}.txt" if key == "k600" else f"{key}.txt"))


def _ucf101_folder(name: str) -> str:
    """UCF101's class folder of an authors' class name (its CamelCase; 'Yoyo' is YoYo/)."""
    return "YoYo" if name == "Yoyo" else name.replace(" ", "")


def _place(clips: list[Path], k: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(clips[k % len(clips)], path)


def build_video_miniature(root: Path, descriptions: Path) -> None:
    """UCF101, HMDB51 and Kinetics-600 under ``root`` as benchmarks/README.md lays them out, with
    links to four tiny generated videos (different lengths, rates and containers); a descriptions
    file of the authors' shape per dataset under ``descriptions``."""
    source = root.parent / "clips"
    source.mkdir(parents=True, exist_ok=True)
    avi = [write_video(source / f"c{i}.avi", 10 + 7 * i, 25 - 5 * i, 64, 48) for i in range(2)]
    mp4 = [write_video(source / f"c{i}.mp4", 12 + 9 * i, 30 - 6 * i, 48, 64) for i in range(2)]
    # UCF101: classInd.txt and a test list per split, naming UCF-101/<Folder>/v_<Folder>_g<group>_c01.avi
    ucf = root / FOLDERS["ucf101"]
    folders = [_ucf101_folder(n) for n in _names("ucf101")]
    (ucf / "ucfTrainTestlist").mkdir(parents=True)
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(folders)))
    for split in (1, 2, 3):
        listed = [f"{f}/v_{f}_g{7 * split:02d}_c01.avi" for f in folders]   # each split its own groups
        (ucf / "ucfTrainTestlist" / f"testlist0{split}.txt").write_text("\r\n".join(listed) + "\r\n")
        for k, rel in enumerate(listed):
            _place(avi, k + split, ucf / "UCF-101" / rel)
    # HMDB51: <class>_test_split<split>.txt per class, video k marked 2 (test) in split k + 1
    hmdb = root / FOLDERS["hmdb51"]
    (hmdb / "testTrainMulti_7030_splits").mkdir(parents=True)
    for c, name in enumerate(_names("hmdb51")):
        folder = name.replace(" ", "_")
        for split in (1, 2, 3):
            lines = [f"{folder}_v{k}.avi {2 if k == split - 1 else 1} " for k in range(3)]
            split_file = hmdb / "testTrainMulti_7030_splits" / f"{folder}_test_split{split}.txt"
            split_file.write_text("\n".join(lines) + "\n")
        for k in range(3):
            _place(avi, c + k, hmdb / "hmdb51_org" / folder / f"{folder}_v{k}.avi")
    # Kinetics-600: val/<class, '_' for spaces>/<youtube id>_<start>_<end>.mp4, the 217 classes of the three splits
    k600 = sorted(set().union(*(_names("k600", s) for s in (1, 2, 3))))
    for c, name in enumerate(k600):
        _place(mp4, c, root / FOLDERS["k600"] / "val" / name.replace(" ", "_") / f"{c:011d}_000010_000020.mp4")
    descriptions.mkdir(parents=True, exist_ok=True)
    for key, names in (("ucf101", _names("ucf101")), ("hmdb51", _names("hmdb51")), ("k600", k600)):
        doc = {n: [f"A person doing {n} in a video, seen {j}." for j in range(2)] for n in names}
        (descriptions / DESCRIPTIONS[key]).write_text(json.dumps(doc))


def miniature_config(tmp_path: Path, frames: int = 2) -> Path:
    """video.yaml with a tiny random model, 3 videos per split, M = 1, clip and awt, 2 x 1 x 2 views."""
    raw = yaml.safe_load(VIDEO.read_text())
    raw["name"] = "video-miniature"
    raw["methods"] = ["clip", "awt"]
    raw["backbones"] = [{"name": "tiny-random", **TINY}]
    raw["settings"].update({"descriptions_per_class": 1, "limit": 3, "batch_size": 8, "device": "cpu",
                            "precision": "fp32", "workers": 0, "shard_batches": 1,
                            "video": {"frames": frames, "crops": 1, "clips": 2}})
    for d in raw["datasets"]:
        d["classnames"] = str((CONFIGS / d["classnames"]).resolve())   # the config moves to tmp_path
    path = tmp_path / "video-miniature.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def miniature(tmp_path, monkeypatch):
    data, desc = tmp_path / "data", tmp_path / "descriptions"
    build_video_miniature(data, desc)
    monkeypatch.setenv("AWT_DATA", str(data))
    monkeypatch.setenv("AWT_DESCRIPTIONS", str(desc))
    return data, desc


# -- the config ----------------------------------------------------------------------------------------

def test_video_yaml_follows_the_authors():
    raw = yaml.safe_load(VIDEO.read_text())
    assert raw["descriptions_root"] == "${AWT_DESCRIPTIONS}"
    assert raw["settings"]["video"] == {"frames": 8, "crops": 3, "clips": 4, "sampling_rate": 16, "target_fps": 30}
    assert raw["backbones"][0]["model"] == "ViT-B-16" and raw["backbones"][0]["pretrained"] == "openai"
    entries = {d["name"]: d for d in raw["datasets"]}
    assert list(entries) == list(CLASSES)
    for key, d in entries.items():
        assert d["format"] == key and d["splits"] == [1, 2, 3] and d["path"] == "${AWT_DATA}/" + FOLDERS[key]
        assert d["descriptions"] == DESCRIPTIONS[key] and d["template"] == "a video of a person {}"
    # the class files: the protocol's counts, no name twice; Kinetics-600's splits cover the 217 described classes
    assert [len(_names(k)) for k in ("ucf101", "hmdb51")] == [101, 51]
    assert _names("ucf101")[:2] == ["Apply Eye Makeup", "Apply Lipstick"] and _names("ucf101")[-1] == "Yoyo"
    assert _names("hmdb51")[:3] == ["brush hair", "cartwheel", "catch"]
    for split in (1, 2, 3):
        assert len(set(_names("k600", split))) == 160


def test_the_readers_name_the_classes_as_the_class_files(miniature):
    data, _ = miniature
    # without class files, UCF101's folders and HMDB51's split files give the very same names, in order
    for key in ("ucf101", "hmdb51"):
        for split in (1, 2, 3):
            ds = read_dataset(data / FOLDERS[key], key, split=split)
            assert ds.classnames == _names(key) and sorted(set(ds.labels)) == list(range(CLASSES[key])), key
            assert ds.extra["split"] == split
    k600 = read_dataset(data / FOLDERS["k600"], "k600", split=2, classnames=CLASSNAMES / "k600_split2.txt")
    assert len(k600) == 160 and k600.classnames == _names("k600", 2)
    split1 = read_dataset(data / FOLDERS["ucf101"], "ucf101", split=1)
    assert Path(split1.paths[0]).name == "v_ApplyEyeMakeup_g07_c01.avi"
    with pytest.raises(AWTError, match="read one split at a time"):
        read_dataset(data / FOLDERS["ucf101"], "ucf101")


def test_config_errors_name_the_key(miniature, tmp_path):
    from awt.bench.config import load_config

    raw = yaml.safe_load(miniature_config(tmp_path).read_text())

    def check(pattern, change):
        broken = json.loads(json.dumps(raw))
        change(broken)
        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(broken))
        with pytest.raises(AWTError, match=pattern):
            load_config(path)

    check(r"datasets\[0\] \(ucf101\)\.splits: the splits are 1, 2 and 3, got \[1, 4\]",
          lambda r: r["datasets"][0].update(splits=[1, 4]))
    check(r"settings\.video\.crops: must be 1, 2 or 3 .*, got 5", lambda r: r["settings"]["video"].update(crops=5))
    check(r"settings\.video\.fps: unknown key", lambda r: r["settings"]["video"].update(fps=3))
    check(r"datasets\[0\] \(ucf101\)\.splits: only a video dataset", lambda r: r["datasets"][0].update(format="coop"))
    # each split's own class file, when missing, is named
    check(r"k600_split1\.txt.*k600_split3\.txt|k600_split3\.txt.*k600_split1\.txt",
          lambda r: r["datasets"][2].update(classnames=str(tmp_path / "k600_split{split}.txt")))


# -- the miniature run ---------------------------------------------------------------------------------

def _population(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


@pytest.mark.slow
def test_bench_runs_video_yaml_on_a_miniature_of_the_three_datasets(miniature, tmp_path, caplog):
    from awt.bench.config import load_config
    from awt.bench.runner import run_bench
    from awt.video_views import encode_videos

    started = time.perf_counter()
    config = load_config(miniature_config(tmp_path))
    names = [f"{k}_split{s}" for k in CLASSES for s in (1, 2, 3)]
    assert [d.name for d in config.datasets] == names
    assert all(d.video is not None and d.video.views == 4 and d.split_of == d.name.split("_split")[0]
               for d in config.datasets)
    caplog.set_level(logging.INFO, logger="awt.bench")
    out = tmp_path / "out"
    result = run_bench(config, out)
    assert len(result.records) == len(result.ran) == 18
    for r in result.records:
        key = r["split_of"]
        assert r["dataset"] == f"{key}_split{r['split']}" and r["classes"] == CLASSES[key]
        assert r["images"] == 3 and r["unreadable"] == 0
        assert r["views"] == (3 if r["method"] == "awt" else 0)            # 2 frames x 1 crop x 2 clips, less view 0
        assert r["config"]["dataset"]["video"]["frames"] == 2
        assert r["config"]["dataset"]["template"] == "a video of a person {}"
    # one feature set per split, every view of each video, keyed by the sampling; clip read its view 0
    sets = sorted((out / "cache" / "features").glob("*.json"))
    assert len(sets) == 9
    info = json.loads(sets[0].read_text())
    assert info["video"] == {"frames": 2, "crops": 1, "clips": 2, "sampling_rate": 16, "target_fps": 30.0}
    assert info["views"] == 3 and info["images"] == 3
    # a set's features are the videos' own: the engine's encode_videos of each, in fp16
    from awt.bench.prepare import load_backbone

    record = next(r for r in result.records if r["dataset"] == "hmdb51_split2" and r["method"] == "awt")
    stored = torch.load(record["features"]["file"], weights_only=True)["features"]
    backbone = load_backbone(config.backbones[0], config.settings, out / "cache", device="cpu")
    ds = read_dataset(config.datasets[4].path, "hmdb51", split=2, classnames=config.datasets[4].classnames)
    from awt.bench.prepare import stratified_subset

    paths = [ds.paths[i] for i in stratified_subset(ds.paths, ds.labels, 3, 0)]
    (batch,) = list(encode_videos(backbone, paths, sampling=config.settings.video, batch_size=3, num_workers=0))
    assert torch.equal(stored, batch.features.to(torch.float16))

    # the summary: each split, and the mean and population standard deviation over the three
    rows = list(csv.DictReader(open(out / "summary_splits.csv")))
    assert [(r["dataset"], r["method"], r["runs"], r["splits"]) for r in rows] == [
        (k, m, "3", "1 2 3") for k in CLASSES for m in ("clip", "awt")]
    for row in rows:
        runs = [r for r in result.records if r["split_of"] == row["dataset"] and r["method"] == row["method"]]
        for metric in ("top1", "top5", "mean_per_class_recall"):
            mean, std = _population([r[metric] for r in runs])
            assert float(row[f"{metric}_mean"]) == pytest.approx(mean, abs=1e-4)
            assert float(row[f"{metric}_std"]) == pytest.approx(std, abs=1e-4)
    md = (out / "summary.md").read_text()
    assert "## Over splits" in md
    ucf_awt = [r for r in result.records if r["split_of"] == "ucf101" and r["method"] == "awt"]
    assert " / ".join(f"{r['top1']:.2f}" for r in ucf_awt) in md
    doc = json.loads((out / "runs" / "tiny-random" / "ucf101" / "awt_v3_m1_s0_splits.json").read_text())
    assert doc["format"] == "awt-bench-splits" and doc["splits"] == [1, 2, 3]
    for entry in doc["per_split"]:   # each split's record, beside it
        assert (out / "runs" / "tiny-random" / "ucf101" / entry["record"]).resolve().is_file()
    seconds = time.perf_counter() - started

    # another sampling is another protocol: new features and new runs, nothing taken from the first
    again = run_bench(load_config(miniature_config(tmp_path, frames=3)), out)
    assert len(again.ran) == 18 and not again.skipped
    assert len(list((out / "cache" / "features").glob("*.json"))) == 18
    assert all(r["views"] in (0, 5) for r in again.records)
    print(f"\nvideo miniature: 9 splits, 18 runs in {seconds:.1f} s")


def test_video_yaml_loads_and_needs_its_two_variables(miniature, monkeypatch):
    from awt.bench.config import load_config
    from awt.bench.plan import plan_runs

    if not torch.cuda.is_available():   # the config's precision, amp, needs a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = load_config(VIDEO)
    assert len(config.datasets) == 9 and config.settings.video.views == 96
    runs = plan_runs(config)
    assert len(runs) == 9 * 6
    assert {r.views for r in runs if r.method in ("awt", "awt-uniform", "awt-image")} == {95}
    assert {r.views for r in runs if r.method in ("clip", "ensemble", "awt-text")} == {0}
    assert {d.classnames.name for d in config.datasets if d.split_of == "k600"} == {
        "k600_split1.txt", "k600_split2.txt", "k600_split3.txt"}
    monkeypatch.delenv("AWT_DESCRIPTIONS")
    with pytest.raises(AWTError, match="descriptions_root: environment variable AWT_DESCRIPTIONS is not set"):
        load_config(VIDEO)


def test_split_groups_mean_and_population_std():
    from awt.bench.report import groups_markdown, split_groups

    def record(split, top1, method="awt", dataset="ucf101"):
        return {"backbone": "b", "pretrained": "p", "dataset": f"{dataset}_split{split}", "split_of": dataset,
                "split": split, "method": method, "views": 95, "descriptions_per_class": 50, "seed": 0,
                "top1": top1, "top5": top1 + 10, "mean_per_class_recall": top1 - 1}

    records = [record(1, 70.0), record(2, 80.0), record(3, 93.0), record(1, 60.0, "clip"),
               record(1, 50.0, dataset="hmdb51"), {"dataset": "dtd", "method": "awt", "top1": 1.0}]
    (group,) = split_groups(records)             # a single split, or an image dataset, is no group
    mean, std = _population([70.0, 80.0, 93.0])
    assert (group["dataset"], group["splits"], group["runs"]) == ("ucf101", "1 2 3", 3)
    assert group["top1_mean"] == pytest.approx(mean, abs=1e-4) and group["top1_std"] == pytest.approx(std, abs=1e-4)
    assert group["top5_mean"] == pytest.approx(mean + 10, abs=1e-4) and group["top5_std"] == group["top1_std"]
    assert f"| 70.00 / 80.00 / 93.00 | {mean:.2f} ± {std:.2f} |" in groups_markdown([group], "split")
