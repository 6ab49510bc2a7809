"""`awt bench`: dataset readers, metrics, the feature cache, and whole sweeps on real photos.

The sweeps run on a small labelled set made from the repository's example photos (the
``labeled_images`` fixture); only the tests about ../shared's own files need ../shared.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from awt.bench.datasets import (
    clean_classname,
    read_coop_split,
    read_dataset,
    read_image_folder,
    read_labels_csv,
)
from awt.bench.prepare import stratified_subset
from awt.bench.config import load_config
from awt.bench.features import compute_features, is_out_of_memory
from awt.bench.metrics import compute_metrics, mean_per_class_recall, metrics_from_topk, top_k_accuracy
from awt.bench.plan import plan_runs
from awt.bench.runner import run_bench
from awt.classifier import AWTClassifier
from awt.spec import ClassifierSpec
from support.bench_configs import EncodeCounter, quiet_run, small_config, write_config, write_small_csv
from awt.errors import AWTError
from awt.methods import get_method, method_names

METHODS = method_names()

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "benchmarks" / "configs" / "smoke.yaml"
RUN_FIELDS = ("backbone", "pretrained", "dataset", "method", "views", "descriptions_per_class", "seed", "images",
              "top1", "top5", "mean_per_class_recall", "wall_time_s", "images_per_s", "versions", "device",
              "precision", "feature_source", "config", "classes")


# -- helpers ----------------------------------------------------------------------------------------

# -- metrics ----------------------------------------------------------------------------------------

def test_metrics_against_hand_computed_values():
    # 4 images, 3 classes; labels 0,0,0,1 (unbalanced); predictions 0,0,1,1
    scores = torch.tensor([[0.9, 0.1, 0.0],
                           [0.8, 0.1, 0.1],
                           [0.2, 0.7, 0.1],    # label 0, ranked second
                           [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 0, 0, 1])
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(75.0)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(100.0)
    # top-5 with 3 classes: every class is in the top 5
    assert top_k_accuracy(scores, labels, 5) == pytest.approx(100.0)
    # per-class recall: class 0 -> 2/3, class 1 -> 1/1; classes without images (2) do not count
    assert mean_per_class_recall(scores.argmax(1), labels) == pytest.approx(100 * (2 / 3 + 1) / 2)
    m = compute_metrics(scores, labels)
    assert m == pytest.approx({"top1": 75.0, "top5": 100.0, "mean_per_class_recall": 100 * 5 / 6})


def test_top5_and_recall_with_more_classes():
    torch.manual_seed(0)
    scores = torch.randn(7, 10)
    labels = torch.tensor([3, 3, 3, 3, 3, 1, 9])
    ranks = (scores > scores.gather(1, labels[:, None])).sum(1)   # 0 = best
    m = compute_metrics(scores, labels)
    assert m["top1"] == pytest.approx(100 * float((ranks == 0).float().mean()))
    assert m["top5"] == pytest.approx(100 * float((ranks < 5).float().mean()))
    pred = scores.argmax(1)
    per_class = [float((pred[labels == c] == c).float().mean()) for c in (1, 3, 9)]
    assert m["mean_per_class_recall"] == pytest.approx(100 * sum(per_class) / 3)
    top = scores.topk(5, dim=1).indices
    assert metrics_from_topk(top, labels) == pytest.approx(m)


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(KeyboardInterrupt())


# -- datasets ---------------------------------------------------------------------------------------

def test_stratified_subset_covers_classes_deterministically():
    labels = [0] * 50 + [1] * 3 + [2] * 20 + [3] * 1
    paths = [f"img{i:03d}.jpg" for i in range(len(labels))]
    a = stratified_subset(paths, labels, 6, seed=0)
    assert a == stratified_subset(paths, labels, 6, seed=0)
    assert len(a) == 6 and {labels[i] for i in a} == {0, 1, 2, 3}
    assert a == sorted(a)
    assert set(stratified_subset(paths, labels, 3, seed=0)) <= set(a)      # a smaller limit is part of it
    assert set(stratified_subset(paths, labels, 40, seed=0)) >= set(a)
    assert stratified_subset(paths, labels, None) == list(range(len(labels)))
    assert stratified_subset(paths, labels, 1000) == list(range(len(labels)))
    # the row order of the labels file does not change the sample
    perm = list(reversed(range(len(labels))))
    b = stratified_subset([paths[i] for i in perm], [labels[i] for i in perm], 6, seed=0)
    assert sorted(paths[perm[i]] for i in b) == sorted(paths[i] for i in a)


def test_shared_caltech_csv_and_split_agree(caltech_dir):
    csv_set = read_labels_csv(caltech_dir / "labels.csv")
    split = read_coop_split(caltech_dir / "test_split_zhou.json")
    assert len(csv_set) == len(split) == 2465
    assert csv_set.classnames == split.classnames and len(csv_set.classnames) == 100
    assert Path(split.extra["image_dir"]).name == "101_ObjectCategories"   # found on its own
    assert sorted(zip(csv_set.paths, csv_set.labels)) == sorted(zip(split.paths, split.labels))
    assert all(Path(p).is_file() for p in split.paths[::200])
    assert read_dataset(caltech_dir).format == "csv"          # a folder with labels.csv
    # 50 images cover 50 classes, not the first 50 rows (all 'face')
    picked = stratified_subset(csv_set.paths, csv_set.labels, 50, 0)
    assert len({csv_set.labels[i] for i in picked}) == 50


def test_labels_csv_folder(labeled_images):
    ds = read_dataset(labeled_images.root)                    # a folder with labels.csv
    assert ds.format == "csv" and ds.classnames == labeled_images.classnames
    assert ds.labels == [label for _, label, _ in labeled_images.rows]
    assert ds.paths == [str(path.resolve()) for path, _, _ in labeled_images.rows]
    assert all(Path(p).is_file() for p in ds.paths)
    assert {Path(p).suffix for p in ds.paths} == {".jpg", ".jpeg", ".png"}
    assert read_labels_csv(labeled_images.labels_csv).paths == ds.paths
    picked = stratified_subset(ds.paths, ds.labels, 4, 0)    # 4 images cover the 4 classes
    assert len({ds.labels[i] for i in picked}) == 4
    assert clean_classname("inline_skate") == "inline skate"
    assert [clean_classname(n) for n in ds.classnames] == ["astronaut", "cat", "cup of coffee", "rocket"]


def test_imagenet_duplicate_names_stay_distinct(shared_dir):
    labels = shared_dir / "data" / "imagenet-sample" / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    ds = read_labels_csv(labels)            # classname_clip column
    assert len(ds.classnames) == 1000
    assert [i for i, n in enumerate(ds.classnames) if n == "missile"] == [657, 744]
    assert [i for i, n in enumerate(ds.classnames) if n == "sunglasses"] == [836, 837]
    assert sorted(set(ds.labels)) == list(range(1000))


def _copy_images(images, target: Path, per_class: int = 2, classes=(0, 1, 2)) -> dict[int, list[Path]]:
    """Copies of ``images``' photos as ``target/<class folder>/<file>``."""
    out = {}
    for c in classes:
        picked = [path for path, label, _ in images.rows if label == c][:per_class]
        out[c] = []
        for src in picked:
            dst = target / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            out[c].append(dst)
    return out


def test_coop_split_both_shapes(labeled_images, tmp_path):
    root = tmp_path / "caltech-101"
    images = _copy_images(labeled_images, root / "101_ObjectCategories")
    rel = {c: [f"{p.parent.name}/{p.name}" for p in ps] for c, ps in images.items()}
    names = {0: "astronaut", 1: "cat", 2: "cup_of_coffee"}
    doc = {"train": [[rel[2][0], 2, names[2]]],
           "val": [],
           "test": [[r, c, names[c]] for c in (0, 1) for r in rel[c]]}
    (root / "split_zhou_Caltech101.json").write_text(json.dumps(doc))
    ds = read_dataset(root)                                   # auto: a folder with split_zhou_*.json
    assert ds.format == "coop" and ds.classnames == ["astronaut", "cat", "cup_of_coffee"]  # the last only in train
    assert ds.labels == [0, 0, 1, 1] and all(Path(p).is_file() for p in ds.paths)
    assert Path(ds.extra["image_dir"]) == (root / "101_ObjectCategories").resolve()
    train = read_coop_split(root / "split_zhou_Caltech101.json", part="train")
    assert train.labels == [2]
    # the plain-list shape, with an explicit image folder
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(doc["test"]))
    ds2 = read_coop_split(plain, image_dir=root / "101_ObjectCategories")
    assert ds2.paths == ds.paths and ds2.classnames == ["astronaut", "cat"]
    with pytest.raises(AWTError, match="no 'test' part|cannot find"):
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "split_zhou_X.json").write_text(json.dumps(doc))
        read_dataset(bad)


def test_image_folder(labeled_images, tmp_path):
    root = tmp_path / "folder"
    _copy_images(labeled_images, root, per_class=2, classes=(2, 0, 1))
    folders = sorted(p.name for p in root.iterdir())
    ds = read_dataset(root)
    assert ds.format == "imagefolder" and ds.classnames == folders
    assert ds.labels == [0, 0, 1, 1, 2, 2]
    assert all(Path(p).parent.name == folders[label] for p, label in zip(ds.paths, ds.labels))
    # CoOp's ImageNet classnames.txt style: "<folder> <name>"
    (tmp_path / "classnames.txt").write_text("\n".join(f"{f} the {f.lower()}" for f in reversed(folders)))
    named = read_image_folder(root, tmp_path / "classnames.txt")
    assert named.classnames == [f"the {f.lower()}" for f in folders]
    # one name per line, in folder order; duplicate names stay distinct classes
    (tmp_path / "plain.txt").write_text("cat\ncat\ndog\n")
    dup = read_image_folder(root, tmp_path / "plain.txt")
    assert dup.classnames == ["cat", "cat", "dog"] and dup.labels == [0, 0, 1, 1, 2, 2]


# -- config validation ------------------------------------------------------------------------------

def test_config_errors_name_the_key(tmp_path, labeled_images, tiny_model_name):
    good = yaml.safe_load(small_config(tmp_path, labeled_images, tiny_model_name).read_text())

    def check(mutate, pattern):
        cfg = json.loads(json.dumps(good))
        mutate(cfg)
        path = write_config(tmp_path / "bad.yaml", **cfg)
        with pytest.raises(AWTError, match=pattern) as info:
            load_config(path)
        assert "\n" not in str(info.value)

    check(lambda c: c.update(extra=1), r"extra: unknown key")
    check(lambda c: c["settings"].update(vews=3), r"settings\.vews: unknown key")
    check(lambda c: c["datasets"][0].update(templat="x {}"), r"datasets\[0\]\.templat: unknown key")
    check(lambda c: c.update(methods=["awt", "tip-adapter"]), r"methods\[1\]: unknown method 'tip-adapter'")
    check(lambda c: c["datasets"][0].update(path="nowhere/at/all"), r"datasets\[0\] \(ex4\)\.path: .*nowhere/at/all not found")
    check(lambda c: c["datasets"][0].update(descriptions="missing.json"),
          r"datasets\[0\] \(ex4\)\.descriptions: descriptions file .*missing\.json not found")
    check(lambda c: c["settings"].update(views=-1), r"settings\.views: must be >= 0")
    check(lambda c: c["backbones"].append({"name": "tiny", "model": tiny_model_name}), r"backbones\[1\]\.name")
    check(lambda c: c["backbones"].__setitem__(0, {"model": "ViT-B-16"}), r"backbones\[0\]\.pretrained: required")
    check(lambda c: c["settings"].update(precision="fp8"), r"settings\.precision: unknown precision 'fp8'")
    check(lambda c: c.update(data_root="${AWT_SURELY_UNSET_VAR}"),
          r"data_root: environment variable AWT_SURELY_UNSET_VAR is not set")
    if not torch.cuda.is_available():
        check(lambda c: c["settings"].update(device="cuda"), r"settings\.device: .*CUDA is not available")


def test_cli_prints_one_line_error(tmp_path):
    import typer
    from typer.testing import CliRunner

    from awt.cli import user_errors
    from awt.cli.bench import bench

    app = typer.Typer()
    app.command()(user_errors(bench))
    path = write_config(tmp_path / "c.yaml", methods=["awt"], backbones=[{"model": "ViT-B-32", "pretrained": "none"}],
                        datasets=[{"path": "does-not-exist"}])
    result = CliRunner().invoke(app, [str(path), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "datasets[0].path" in lines[0] and "does-not-exist not found" in lines[0]


# -- sweeps -----------------------------------------------------------------------------------------

@pytest.fixture()
def sweep(tmp_path, labeled_images, tiny_model_name):
    return small_config(tmp_path, labeled_images, tiny_model_name), tmp_path / "out"


@pytest.mark.slow
def test_sweep_records_summary_and_cache_reuse(sweep, monkeypatch, tiny_backbone):
    config_path, out = sweep
    counter = EncodeCounter(monkeypatch)
    result = quiet_run(config_path, out)
    plan = plan_runs(load_config(config_path))
    assert len(plan) == len(METHODS) == len(result.ran) and not result.skipped

    # one JSON per run, with the fields
    files = sorted((out / "runs").rglob("*.json"))
    assert len(files) == len(METHODS)
    records = [json.loads(f.read_text()) for f in files]
    for r in records:
        assert all(k in r for k in RUN_FIELDS), set(RUN_FIELDS) - set(r)
        assert r["images"] == 12 and r["classes"] == 4 and r["device"] == "cpu"
        assert 0 <= r["top1"] <= r["top5"] <= 100 and r["top5"] == 100.0     # 4 classes: all in the top 5
        assert r["versions"]["torch"] == torch.__version__
        assert r["wall_time_s"] > 0 and r["images_per_s"] > 0
    by_method = {r["method"]: r for r in records}
    assert by_method["clip"]["views"] == 0 and by_method["clip"]["descriptions_per_class"] == 0
    assert by_method["awt"]["views"] == 4 and by_method["awt"]["descriptions_per_class"] == 4
    assert by_method["awt-image"]["descriptions_per_class"] == 0 and by_method["awt-text"]["views"] == 0

    # summary.csv: one row per run, the columns asked for
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(METHODS) and [r["method"] for r in rows] == list(METHODS)
    assert list(rows[0])[:14] == ["backbone", "pretrained", "dataset", "method", "views", "descriptions_per_class",
                                 "seed", "images", "unreadable", "top1", "top5", "mean_per_class_recall",
                                 "wall_time_s", "images_per_s"]
    assert {r["unreadable"] for r in rows} == {"0"}
    assert (out / "summary.md").read_text().count("| tiny |") == len(METHODS)
    assert (out / "summary.png").stat().st_size > 1000

    # image features were encoded once, for all six methods: 12 images x (1 + 4) views
    assert counter.images(4) == 12 and counter.rows == 12 * 5
    assert [r["feature_source"] for r in sorted(records, key=lambda r: METHODS.index(r["method"]))] == \
        ["computed"] + ["reused"] * (len(METHODS) - 1)
    assert len(list((out / "cache" / "features").glob("*.pt"))) == 1

    # the recorded metrics are those of the scores, recomputed here from the cached features
    data = torch.load(by_method["awt"]["features"]["file"], weights_only=True)
    labels = torch.tensor([0] * 3 + [1] * 3 + [2] * 3 + [3] * 3)
    from awt.descriptions import load_descriptions

    ds = read_labels_csv(Path(load_config(config_path).datasets[0].path))
    desc = load_descriptions(load_config(config_path).datasets[0].descriptions).for_classes(ds.classnames)
    clf = AWTClassifier(tiny_backbone, ClassifierSpec([clean_classname(n) for n in ds.classnames],
                                                      template="a photo of a {}.", descriptions=desc,
                                                      descriptions_per_class=4, cache_dir=None))
    for method in METHODS:
        feats = data["features"].float()
        if not get_method(method).random_views:
            feats = feats[:, :1]
        expected = compute_metrics(clf.scores(feats, method), labels)
        got = by_method[method]
        assert got["top1"] == pytest.approx(expected["top1"], abs=1e-3), method
        assert got["mean_per_class_recall"] == pytest.approx(expected["mean_per_class_recall"], abs=1e-3), method

    # a second run skips every run and encodes nothing
    counter.calls = counter.rows = 0
    again = quiet_run(config_path, out)
    assert len(again.skipped) == len(METHODS) and not again.ran and counter.calls == 0
    assert [json.loads(f.read_text())["created"] for f in files] == [r["created"] for r in records]

    # --force runs them again, from the cached features
    mtimes = [f.stat().st_mtime_ns for f in files]
    time.sleep(0.01)
    forced = quiet_run(config_path, out, force=True)
    assert len(forced.ran) == len(METHODS) and counter.calls == 0
    assert all(f.stat().st_mtime_ns > m for f, m in zip(files, mtimes))
    assert {json.loads(f.read_text())["feature_source"] for f in files} == {"cached"}
    assert [json.loads(f.read_text())["top1"] for f in files] == [r["top1"] for r in records]

    # adding a views value encodes only that set; runs that it cannot change are not repeated
    cfg = yaml.safe_load(config_path.read_text())
    cfg["settings"]["views"] = [4, 2]
    write_config(config_path, **cfg)
    counter.calls = counter.rows = 0
    more = quiet_run(config_path, out)
    multi_view = [m for m in METHODS if get_method(m).random_views]
    assert sorted(more.ran) == sorted(f"tiny/ex4/{m} views=2 M={get_method(m).prompts.used(4)} seed=0"
                                      for m in multi_view)
    assert counter.rows == 12 * 3
    assert len(list(csv.DictReader(open(out / "summary.csv")))) == len(METHODS) + len(multi_view)


@pytest.mark.slow
def test_interrupted_encoding_resumes(sweep, monkeypatch, tiny_backbone, tmp_path):
    config_path, out = sweep
    # batches of 1, then 2 images, a part saved after each; Ctrl-C during the third batch
    cfg = yaml.safe_load(config_path.read_text())
    cfg["settings"].update(batch_size=2, shard_batches=1)
    write_config(config_path, **cfg)

    def interrupt(counter, pixels):
        if counter.calls == 3:
            raise KeyboardInterrupt

    counter = EncodeCounter(monkeypatch, fail=interrupt)
    with pytest.raises(KeyboardInterrupt):
        quiet_run(config_path, out)
    parts = list((out / "cache" / "features").glob("*.parts/part-*.pt"))
    assert len(parts) == 2 and counter.images(4) == 3
    assert not list((out / "runs").rglob("*.json")) if (out / "runs").exists() else True

    counter.fail = None
    counter.calls = counter.rows = 0
    result = quiet_run(config_path, out)
    assert counter.images(4) == 12 - 3                       # only the rest
    records = [json.loads(f.read_text()) for f in (out / "runs").rglob("*.json")]
    assert len(records) == len(METHODS)
    assert sorted(r["feature_source"] for r in records) == sorted(["resumed"] + ["reused"] * (len(METHODS) - 1))
    assert not list((out / "cache" / "features").glob("*.parts"))
    assert len(result.ran) == len(METHODS)

    # the resumed set equals one encoded in one go
    resumed = torch.load(records[0]["features"]["file"], weights_only=True)["features"]
    ds = read_labels_csv(Path(load_config(config_path).datasets[0].path))
    fresh = compute_features(tiny_backbone, ds.paths, views=4, seed=0, cache_dir=tmp_path / "fresh", batch_size=5,
                             workers=0)
    # Equal up to float rounding: views of one image are cut from a batch canvas whose padding
    # (edge-replicated) depends on the batch, which can move a bilinear sample by an ulp.
    assert resumed.dtype == fresh.features.dtype == torch.float16
    assert torch.allclose(resumed.float(), fresh.features.float(), atol=2e-3, rtol=0)


@pytest.mark.slow
def test_out_of_memory_halves_the_batch(labeled_images, tmp_path, tiny_backbone, monkeypatch, caplog):
    paths = read_labels_csv(write_small_csv(labeled_images, tmp_path / "d", per_class=4)).paths
    views = 2

    def oom_above_two_images(counter, pixels):
        if pixels.shape[0] > 2 * (views + 1):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    counter = EncodeCounter(monkeypatch, fail=oom_above_two_images)
    caplog.set_level(logging.INFO, logger="awt.bench")
    fs = compute_features(tiny_backbone, paths, views=views, seed=0, cache_dir=tmp_path / "c", batch_size=8,
                          workers=0)
    notes = [r.getMessage() for r in caplog.records if r.name == "awt.bench"]
    # batches ramp up 1, 2, 4: the first of 4 images fails, then (at most 4) its first of 4 again
    assert fs.batch_size == 2 and len(fs) == 16 and bool(fs.valid.all())
    assert [n.split("batch size ")[-1] for n in notes] == ["4", "2"]
    assert set(counter.batches) == {1 * (views + 1), 2 * (views + 1)}   # every successful batch: 1 or 2 images
    reference = compute_features(tiny_backbone, paths, views=views, seed=0, cache_dir=tmp_path / "ref",
                                 batch_size=8, workers=0)
    assert torch.equal(fs.features, reference.features)

    # a single image that does not fit is a user-facing error, not an endless loop
    counter.fail = lambda c, p: (_ for _ in ()).throw(RuntimeError("CUDA error: out of memory"))
    with pytest.raises(AWTError, match="out of memory encoding a single image"):
        compute_features(tiny_backbone, paths, views=views, seed=0, cache_dir=tmp_path / "c2", batch_size=4,
                         workers=0)


def test_duplicate_class_names_and_unreadable_images(labeled_images, tmp_path, tiny_model_name):
    # label 3 (rocket photos) is also called 'astronaut': two classes, one name
    data = write_small_csv(labeled_images, tmp_path / "dup", per_class=2, rename={3: "astronaut"})
    with open(data, "a", newline="") as f:
        csv.writer(f).writerow([str(tmp_path / "missing.jpg"), 1, "cat"])
    cfg = write_config(tmp_path / "dup.yaml", methods=["clip", "awt"],
                       settings={"views": 2, "descriptions_per_class": 2, "workers": 0, "device": "cpu"},
                       backbones=[{"name": "tiny", "model": tiny_model_name}],
                       datasets=[{"name": "dup", "path": str(data.parent),
                                  "descriptions": str(labeled_images.descriptions)}])
    result = quiet_run(cfg, tmp_path / "out")
    assert [r["classes"] for r in result.records] == [4, 4]
    assert [(r["images"], r["unreadable"]) for r in result.records] == [(8, 1), (8, 1)]
    assert "missing.jpg" in next(iter(result.records[0]["dataset_info"]["unreadable"].values()))
    assert read_labels_csv(data).classnames == ["astronaut", "cat", "cup_of_coffee", "astronaut"]


def test_inline_model_and_cuda_free_defaults(labeled_images, tmp_path):
    data = write_small_csv(labeled_images, tmp_path / "d", per_class=1, classes=(0, 1))
    cfg = write_config(tmp_path / "inline.yaml", methods=["clip"],
                       settings={"views": 0, "workers": 0},
                       backbones=[{"name": "inline", "model_cfg": {
                           "embed_dim": 32,
                           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}}}],
                       datasets=[{"path": str(data)}])                 # a labels.csv file; no descriptions
    result = quiet_run(cfg, tmp_path / "out")
    (record,) = result.records
    assert record["backbone"] == "inline" and record["pretrained"] == "none" and record["images"] == 2
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")   # auto: the current GPU
    assert list((tmp_path / "out" / "cache" / "models").glob("inline-*/open_clip_config.json"))


@pytest.mark.slow
@pytest.mark.skipif(not SMOKE.is_file(), reason="benchmarks/configs/smoke.yaml not found")
def test_smoke_config_end_to_end(labeled_images, tmp_path, monkeypatch):
    # the smoke config as written (methods, settings, inline backbone), its dataset swapped for the
    # example photos; their descriptions file has 6 per class where the config asks for 50
    raw = yaml.safe_load(SMOKE.read_text())
    (spec,) = raw["datasets"]
    spec.update(path=str(labeled_images.root), descriptions=str(labeled_images.descriptions),
                allow_fewer_descriptions=True)
    cfg = load_config(write_config(tmp_path / "smoke.yaml", **raw))
    views = cfg.settings.views[0]
    images = len(labeled_images.rows)
    assert cfg.datasets[0].limit >= images                    # every image
    counter = EncodeCounter(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_bench(cfg, tmp_path / "smoke")
    rows = list(csv.DictReader(open(tmp_path / "smoke" / "summary.csv")))
    assert sorted(r["method"] for r in rows) == sorted(METHODS)
    assert all(r["images"] == str(images) and 0 <= float(r["top1"]) <= float(r["top5"]) <= 100 for r in rows)
    assert counter.images(views) == images                   # once, not once per method
    assert len(list((tmp_path / "smoke" / "runs").rglob("*.json"))) == len(METHODS)
    assert len(result.ran) == len(METHODS)


@pytest.mark.skipif(not SMOKE.is_file(), reason="benchmarks/configs/smoke.yaml not found")
def test_smoke_config_reads_the_shared_data(caltech_dir):
    # as written, the smoke config runs on 50 of ../shared's Caltech101 images, one per class
    cfg = load_config(SMOKE)
    (spec,) = cfg.datasets
    assert spec.path.resolve() == (REPO.parent / "shared" / "data" / "caltech101").resolve()
    assert spec.descriptions is not None and spec.descriptions.is_file()
    ds = read_dataset(spec.path)
    picked = stratified_subset(ds.paths, ds.labels, spec.limit, spec.subset_seed)
    assert spec.limit == len(picked) == 50 and len({ds.labels[i] for i in picked}) == 50
    from awt.descriptions import load_descriptions

    desc = load_descriptions(spec.descriptions).for_classes(ds.classnames)
    assert min(len(d) for d in desc) >= cfg.settings.descriptions_per_class[0]
    assert len(plan_runs(cfg)) == len(METHODS)
