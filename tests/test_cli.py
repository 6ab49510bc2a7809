"""`awt classify` as a user runs it: a real process, real files from ../shared, exit codes, messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_awt(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run([sys.executable, "-m", "awt", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, caltech_dir, shared_dir):
    """Real JPEGs from caltech101 and ImageNet, plus grayscale, RGBA, truncated and bogus files made from them."""
    d = tmp_path_factory.mktemp("inputs")
    rows = (caltech_dir / "labels.csv").read_text().splitlines()[1:]
    picks = [rows[0], rows[len(rows) // 2], rows[-1]]
    names = []
    for i, row in enumerate(picks):
        rel, _, cls = row.split(",", 2)
        shutil.copy(caltech_dir / rel, d / f"caltech_{i}.jpg")
        names.append(cls)
    shutil.copy(shared_dir / "data/imagenet-sample/n04389033_tank.JPEG", d / "tank.JPEG")
    src = Image.open(caltech_dir / picks[1].split(",")[0])
    src.convert("L").save(d / "gray.png")
    rgba = src.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    data = (caltech_dir / picks[2].split(",")[0]).read_bytes()
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "notes.jpg").write_text("not an image at all")
    classes = tmp_path_factory.mktemp("classes") / "classes.txt"
    classes.write_text("# test classes\n\n" + "\n".join(dict.fromkeys(names + ["tank", "accordion"])) + "\n")
    return {"good": d, "bad": bad, "classes": classes, "n_classes": len(dict.fromkeys(names + ["tank", "accordion"]))}


def test_json_output_for_a_directory_and_bad_files(inputs, tiny_model_name, tmp_path):
    bad = inputs["bad"]
    missing = tmp_path / "missing.jpg"
    r = run_awt("classify", str(inputs["good"]), str(bad / "truncated.jpg"), str(bad / "notes.jpg"), str(missing),
                "--classes", str(inputs["classes"]), "--model", tiny_model_name, "--views", "4", "--json",
                "--top-k", "3", "--batch-size", "2", cache=tmp_path / "cache")
    assert r.returncode == 1, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    by_image = {Path(x["image"]).name: x for x in lines}
    assert set(by_image) == {"caltech_0.jpg", "caltech_1.jpg", "caltech_2.jpg", "tank.JPEG", "gray.png", "rgba.png",
                             "truncated.jpg", "notes.jpg", "missing.jpg"}
    for name in ["caltech_0.jpg", "caltech_1.jpg", "caltech_2.jpg", "tank.JPEG", "gray.png", "rgba.png"]:
        preds = by_image[name]["predictions"]
        assert len(preds) == 3
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(p["class"], str) for p in preds)
    assert "truncated" in by_image["truncated.jpg"]["error"]
    assert "not an image" in by_image["notes.jpg"]["error"]
    assert "no such file" in by_image["missing.jpg"]["error"]
    err_lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 3 and all(str(bad) in line or str(missing) in line for line in err_lines)
    assert "Traceback" not in r.stderr
    assert "3 of 9 input(s) could not be read" in r.stderr
    assert r.stderr.count("using the template alone") == 1


def test_human_output_and_reproducibility(inputs, tiny_model_name, tmp_path):
    args = ["classify", str(inputs["good"] / "tank.JPEG"), "--classes", str(inputs["classes"]), "--model",
            tiny_model_name, "--views", "3"]
    first = run_awt(*args, cache=tmp_path / "cache")
    second = run_awt(*args, "--batch-size", "1", "--workers", "0", cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    lines = first.stdout.splitlines()
    assert lines[0].endswith("tank.JPEG") and lines[1].lstrip().startswith("1.")
    assert len(lines) == 1 + min(5, inputs["n_classes"])
    assert "randomly initialised" in first.stderr


def test_descriptions_file_from_the_paper(inputs, tiny_model_name, tmp_path, shared_dir):
    desc = shared_dir / "descriptions/awt/caltech101.json"
    r = run_awt("classify", str(inputs["good"] / "caltech_0.jpg"), "--classes", str(inputs["classes"]), "--model",
                tiny_model_name, "--views", "2", "--descriptions", str(desc), "--descriptions-per-class", "5",
                "--json", cache=tmp_path / "cache")
    # 'tank' is not a caltech101 class: a one-line error naming it, no traceback.
    assert r.returncode == 1
    assert "tank" in r.stderr and "Traceback" not in r.stderr
    classes = tmp_path / "caltech.txt"
    classes.write_text("\n".join(list(json.loads(desc.read_text()))[:6]))
    r = run_awt("classify", str(inputs["good"] / "caltech_0.jpg"), "--classes", str(classes), "--model",
                tiny_model_name, "--views", "2", "--descriptions", str(desc), "--descriptions-per-class", "5",
                "--json", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 5
    assert "template alone" not in r.stderr


@pytest.mark.parametrize(
    "content, message",
    [("", "class file has no class names"), ("# only a comment\n\n", "class file has no class names"), (None, "class file not found")],
)
def test_bad_class_files(content, message, inputs, tiny_model_name, tmp_path):
    classes = tmp_path / "classes.txt"
    if content is not None:
        classes.write_text(content)
    r = run_awt("classify", str(inputs["good"] / "tank.JPEG"), "--classes", str(classes), "--model", tiny_model_name,
                cache=tmp_path / "cache")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: {classes}: {message}"


def test_duplicate_names_warn_once_and_stay_distinct(inputs, tiny_model_name, tmp_path):
    classes = tmp_path / "dups.txt"
    classes.write_text("missile\nsunglasses\nmissile\nsunglasses\ncat\n")
    r = run_awt("classify", str(inputs["good"] / "tank.JPEG"), "--classes", str(classes), "--model", tiny_model_name,
                "--views", "2", "--json", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("duplicate class names") == 1
    preds = json.loads(r.stdout)["predictions"]
    assert sorted(p["index"] for p in preds) == [0, 1, 2, 3, 4]


def test_unknown_pretrained_tag_and_offline_download(tmp_path):
    classes = tmp_path / "c.txt"
    classes.write_text("cat\n")
    r = run_awt("classify", "x.jpg", "--classes", str(classes), "--model", "ViT-B-32", "--pretrained", "nonsense",
                cache=tmp_path / "cache")
    assert r.returncode == 1 and "unknown pretrained tag" in r.stderr and "openai" in r.stderr
    r = run_awt("classify", "x.jpg", "--classes", str(classes), "--model", "ViT-B-32", "--pretrained", "/no/such.pt",
                cache=tmp_path / "cache")
    assert r.returncode == 1 and "checkpoint file not found" in r.stderr
    r = run_awt("classify", str(REPO / "awt/data/examples/cat.jpg"), "--classes", str(classes), "--model", "RN50",
                "--pretrained", "openai", cache=tmp_path / "cache")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "could not download" in last and "RN50" in last and "--pretrained /path/to/checkpoint" in last
    assert "Traceback" not in r.stderr


def test_no_images_found(tmp_path, tiny_model_name):
    classes = tmp_path / "c.txt"
    classes.write_text("cat\n")
    (tmp_path / "empty").mkdir()
    r = run_awt("classify", str(tmp_path / "empty"), "--classes", str(classes), "--model", tiny_model_name,
                cache=tmp_path / "cache")
    assert r.returncode == 1 and "no images found" in r.stderr
