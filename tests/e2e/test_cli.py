"""`awt classify` as a user runs it: a real process, real photos (made from the repository's
examples by the ``labeled_images`` fixture), exit codes, messages. Only the test of the AWT
authors' descriptions file needs ../shared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from support.commands import run_awt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, labeled_images):
    """Real JPEGs of three classes and one with an upper-case .JPEG suffix, plus grayscale, RGBA,
    truncated and bogus files made from them; a class file naming their classes and one more."""
    d = tmp_path_factory.mktemp("inputs")
    jpegs = [(path, label, name) for path, label, name in labeled_images.rows if path.suffix == ".jpg"]
    picks = [next(r for r in jpegs if r[1] == c) for c in (0, 1, 2)]
    names = []
    for i, (path, _, cls) in enumerate(picks):
        shutil.copy(path, d / f"photo_{i}.jpg")
        names.append(cls)
    rocket = next(r for r in labeled_images.rows if r[1] == 3 and r[0].suffix != ".jpg")   # a PNG: re-encoded
    Image.open(rocket[0]).convert("RGB").save(d / "rocket.JPEG", format="JPEG", quality=90)
    src = Image.open(picks[1][0])
    src.convert("L").save(d / "gray.png")
    rgba = src.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    data = picks[2][0].read_bytes()
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "notes.jpg").write_text("not an image at all")
    classes = tmp_path_factory.mktemp("classes") / "classes.txt"
    listed = list(dict.fromkeys(names + [rocket[2], "accordion"]))
    classes.write_text("# test classes\n\n" + "\n".join(listed) + "\n")
    return {"good": d, "bad": bad, "classes": classes, "n_classes": len(listed)}


def test_json_output_for_a_directory_and_bad_files(inputs, tiny_model_name, tmp_path):
    bad = inputs["bad"]
    missing = tmp_path / "missing.jpg"
    r = run_awt("classify", str(inputs["good"]), str(bad / "truncated.jpg"), str(bad / "notes.jpg"), str(missing),
                "--classes", str(inputs["classes"]), "--model", tiny_model_name, "--views", "4", "--json",
                "--top-k", "3", "--batch-size", "2", cache=tmp_path / "cache")
    assert r.returncode == 1, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    by_image = {Path(x["image"]).name: x for x in lines}
    assert set(by_image) == {"photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "rocket.JPEG", "gray.png", "rgba.png",
                             "truncated.jpg", "notes.jpg", "missing.jpg"}
    for name in ["photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "rocket.JPEG", "gray.png", "rgba.png"]:
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
    args = ["classify", str(inputs["good"] / "rocket.JPEG"), "--classes", str(inputs["classes"]), "--model",
            tiny_model_name, "--views", "3"]
    first = run_awt(*args, cache=tmp_path / "cache")
    second = run_awt(*args, "--batch-size", "1", "--workers", "0", cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    lines = first.stdout.splitlines()
    assert lines[0].endswith("rocket.JPEG") and lines[1].lstrip().startswith("1.")
    assert len(lines) == 1 + min(5, inputs["n_classes"])
    assert "randomly initialised" in first.stderr


def test_descriptions_file(inputs, labeled_images, tiny_model_name, tmp_path):
    desc = labeled_images.descriptions
    r = run_awt("classify", str(inputs["good"] / "photo_0.jpg"), "--classes", str(inputs["classes"]), "--model",
                tiny_model_name, "--views", "2", "--descriptions", str(desc), "--descriptions-per-class", "5",
                "--json", cache=tmp_path / "cache")
    # 'accordion' is not in the descriptions file: a one-line error naming it, no traceback.
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "accordion" in errors[0] and str(desc) in errors[0]
    assert "Traceback" not in r.stderr and not r.stdout
    # its six classes (four with photos here, two more), 6 sentences each: 5 are used
    classes = tmp_path / "described.txt"
    classes.write_text("\n".join(json.loads(desc.read_text())))
    assert_five_described(inputs, classes, desc, tiny_model_name, tmp_path)


def assert_five_described(inputs, classes, desc, tiny_model_name, tmp_path) -> None:
    """`awt classify` with 5 descriptions per class from ``desc``: 5 predictions, no template-alone note."""
    r = run_awt("classify", str(inputs["good"] / "photo_0.jpg"), "--classes", str(classes), "--model",
                tiny_model_name, "--views", "2", "--descriptions", str(desc), "--descriptions-per-class", "5",
                "--json", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 5
    assert "template alone" not in r.stderr


def test_descriptions_file_from_the_paper(inputs, tiny_model_name, tmp_path, shared_dir):
    # the AWT authors' own file (about 50 per class, 100 classes) is read as it is
    desc = shared_dir / "descriptions/awt/caltech101.json"
    classes = tmp_path / "caltech.txt"
    classes.write_text("\n".join(list(json.loads(desc.read_text()))[:6]))
    assert_five_described(inputs, classes, desc, tiny_model_name, tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [("", "class file has no class names"), ("# only a comment\n\n", "class file has no class names"), (None, "class file not found")],
)
def test_bad_class_files(content, message, inputs, tiny_model_name, tmp_path):
    classes = tmp_path / "classes.txt"
    if content is not None:
        classes.write_text(content)
    r = run_awt("classify", str(inputs["good"] / "rocket.JPEG"), "--classes", str(classes), "--model", tiny_model_name,
                cache=tmp_path / "cache")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: {classes}: {message}"


def test_duplicate_names_warn_once_and_stay_distinct(inputs, tiny_model_name, tmp_path):
    classes = tmp_path / "dups.txt"
    classes.write_text("missile\nsunglasses\nmissile\nsunglasses\ncat\n")
    r = run_awt("classify", str(inputs["good"] / "rocket.JPEG"), "--classes", str(classes), "--model", tiny_model_name,
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
    # offline (HF_HUB_OFFLINE=1 here) it fails at once; online, after the download fails
    assert "not in the local cache" in last or "could not download" in last
    assert "RN50" in last and "--pretrained /path/to/checkpoint" in last
    assert "Traceback" not in r.stderr


def test_no_images_found(tmp_path, tiny_model_name):
    classes = tmp_path / "c.txt"
    classes.write_text("cat\n")
    (tmp_path / "empty").mkdir()
    r = run_awt("classify", str(tmp_path / "empty"), "--classes", str(classes), "--model", tiny_model_name,
                cache=tmp_path / "cache")
    assert r.returncode == 1 and "no images or videos found" in r.stderr
