"""A new user's first minutes with `awt classify`: results as they come, Ctrl-C, one line per mistake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import write_tiny_model

EXAMPLES = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("first")
    images = root / "images"
    images.mkdir()
    for stem in ("astronaut", "cat", "coffee", "rocket"):
        image = Image.open(EXAMPLES / f"{stem}.jpg").convert("RGB")
        for i in range(6):
            variant = ImageOps.mirror(image) if i % 2 else image
            variant.rotate(7 * i).save(images / f"{stem}_{i}.jpg")
    return {"images": images, "classes": EXAMPLES / "classes.txt", "model": write_tiny_model(root / "tiny"),
            "cache": root / "cache"}


def _start(setup: dict, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "awt", "classify", str(setup["images"]), "--classes", str(setup["classes"]),
            "--model", setup["model"], "--json", *extra]
    env = {**os.environ, "AWT_CACHE_DIR": str(setup["cache"]), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1)


def test_results_come_as_they_are_scored(setup):
    p = _start(setup, "--views", "6", "--batch-size", "2", "--workers", "0")
    first = p.stdout.readline()
    running_at_first = p.poll() is None
    rest = p.stdout.readlines()
    p.wait(timeout=300)
    assert p.returncode == 0, p.stderr.read()
    assert json.loads(first)["predictions"] and running_at_first
    assert len(rest) == 23   # 24 images, one line each, in input order
    names = [Path(json.loads(line)["image"]).name for line in [first, *rest]]
    assert names == sorted(names)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_ctrl_c_keeps_what_was_printed(setup, workers):
    p = _start(setup, "--views", "12", "--batch-size", "1", "--workers", workers)
    printed = [p.stdout.readline()]
    assert p.poll() is None
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    printed += out.splitlines(keepends=True)
    assert p.returncode == 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    done = int(last.split()[2])
    assert last == f"interrupted after {done} of 24 images" and len(printed) == done < 24
    assert all(json.loads(line)["predictions"] for line in printed)


@pytest.mark.parametrize("option, message, status", [
    (["--views", "-1"], "Invalid value for '--views'", 2),
    (["--workers", "-1"], "Invalid value for '--workers'", 2),
    (["--descriptions-per-class", "-5"], "Invalid value for '--descriptions-per-class'", 2),
    (["--batch-size", "0"], "Invalid value for '--batch-size'", 2),
    (["--template", "a {} in {style}"], "must contain exactly one '{}'", 1),
    (["--template", "a {} and {}"], "must contain exactly one '{}'", 1),
    (["--template", "a photo"], "must contain exactly one '{}'", 1),
    (["--method", "nope"], "unknown method 'nope'", 1),
    (["--cache-dir", str(EXAMPLES / "classes.txt")], "cache directory is a file", 1),
    (["--device", "cuda:7"], "is not available here", 1),   # no CUDA, or no 8th GPU
])
def test_each_mistake_is_one_line_before_any_work(setup, option, message, status):
    p = _start(setup, *option)
    out, err = p.communicate(timeout=120)
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert p.returncode == status and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
