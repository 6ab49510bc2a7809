"""`awt explain` as a user runs it: a real process on real photos with the tiny model; its report, its
numbers (the scores `awt classify` gives) and its one-line errors, said before any model loads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.commands import awt_env, run_awt

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "awt" / "data" / "examples"
VIEWS = "3"


@pytest.fixture(scope="module")
def class_files(tmp_path_factory, labeled_images):
    d = tmp_path_factory.mktemp("explain-cli")
    classes = d / "classes.txt"
    classes.write_text("\n".join(labeled_images.classnames) + "\n")
    return classes, labeled_images.descriptions


def test_report_numbers_and_figure_of_one_photo(class_files, labeled_images, tiny_model_name, tmp_path):
    classes, descriptions = class_files
    photo = str(labeled_images.rows[0][0])
    common = ["--classes", str(classes), "--descriptions", str(descriptions), "--descriptions-per-class", "4",
              "--model", tiny_model_name, "--pretrained", "none", "--views", VIEWS]
    figure = ["--png", str(tmp_path / "figure.png")] if _has_matplotlib() else []
    r = run_awt("explain", photo, *common, "--top-k", "2", "--out", str(tmp_path / "report.html"),
                "--json", str(tmp_path / "numbers.json"), *figure, cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "numbers.json").read_text())
    [line] = r.stdout.splitlines()
    assert line.startswith(f"{photo}: AWT {doc['awt']['class']} (") and "report.html" in line
    assert len(doc["views"]) == int(VIEWS) + 1 and len(doc["classes"]) == 2
    assert all(len(c["plan"]) == 4 and len(c["plan"][0]) == 5 for c in doc["classes"])   # 4 views x 5 prompts
    # the scores are classify's, for the same image and settings
    c = run_awt("classify", photo, *common, "--top-k", "2", "--json", cache=tmp_path / "cache")
    assert c.returncode == 0, c.stderr
    predictions = json.loads(c.stdout)["predictions"]
    assert [p["index"] for p in predictions] == [x["index"] for x in doc["classes"]]
    assert all(abs(p["score"] - x["score"]) < 1e-4 for p, x in zip(predictions, doc["classes"]))
    html = (tmp_path / "report.html").read_text()
    assert all(f"#{x['rank']} {x['class']}" in html for x in doc["classes"])
    if figure:
        assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --json -: the JSON alone on stdout, the summary on stderr; a video, its frame crops as views (its
    # scores against classify's: tests/unit/test_explain.py)
    from support.video_files import write_video

    video = str(write_video(tmp_path / "clip.mp4", 30, 25, 96, 64))
    r = run_awt("explain", video, *common, "--top-k", "1", "--json", "-", "--frames", "2", "--crops", "3", "--clips",
                "2", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["video"] is True and len(shown["views"]) == 12 and f"{video}: AWT " in r.stderr
    assert {v["frame"] for v in shown["views"]} == {0, 1, 2, 3}


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_user_errors_are_one_line_before_the_model_loads(class_files, tmp_path):
    classes, _ = class_files
    photo = str(EXAMPLES / "cat.jpg")
    # a model that cannot load: every error below must come first
    base = ["--classes", str(classes), "--model", f"local-dir:{tmp_path / 'no-model'}", "--pretrained", "none"]
    out = ["--out", str(tmp_path / "r.html")]
    cases = {
        "nothing to write: give --out": [photo, *base],
        "missing.jpg: no such file": [str(tmp_path / "missing.jpg"), *base, *out],
        "clip.mp4: no such file": [str(tmp_path / "clip.mp4"), *base, *out],
        "a figure is written as png, pdf, svg": [photo, *base, "--png", str(tmp_path / "f.gif")],
        "its folder": [photo, *base, "--out", str(tmp_path / "none" / "r.html")],
        "method 'clip' has no transport plan": [photo, *base, *out, "--method", "clip"],
        f"--out {photo}: is also the input": [photo, *base, "--out", photo],
        f"--json {classes}: is also --classes": [photo, *base, *out, "--json", str(classes)],
        "is also --out; give it a file of its own": [photo, *base, *out, "--json", str(tmp_path / "r.html")],
        "--out - : the report is a file": [photo, *base, "--out", "-"],
    }
    procs = {k: subprocess.Popen([sys.executable, "-m", "awt", "explain", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=awt_env(tmp_path / "cache"), cwd=REPO)
             for k, args in cases.items()}
    for expected, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        errors = [line for line in stderr.splitlines() if not line.startswith("warning:")]
        assert p.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: "), (expected, stderr)
        assert expected in errors[0] and "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "r.html").exists()
