"""Several processes, one result: `awt classify` and `awt bench` under torchrun (gloo, CPU), against
one process; and a rank killed mid-run, then the rerun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image, ImageOps

from conftest import TINY_CONFIG

EXAMPLES = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"
CLASSES = ["astronaut", "cat", "cup of coffee", "rocket"]
TIMING = {"wall_time_s", "images_per_s", "encode_time_s", "score_time_s", "feature_source"}


def _env(tmp: Path) -> dict:
    # one thread in every process: the one-process run computes exactly what each rank computes
    return {**os.environ, "OMP_NUM_THREADS": "1", "AWT_CACHE_DIR": str(tmp / "text-cache"),
            "PYTHONWARNINGS": "ignore"}


def _awt(args: list[str], tmp: Path, ranks: int = 1, **popen) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks > 1 else [sys.executable]
    return subprocess.Popen(launcher + ["-m", "awt", *args], env=_env(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _run(args: list[str], tmp: Path, ranks: int = 1) -> subprocess.CompletedProcess:
    p = _awt(args, tmp, ranks)
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Real photos and variants of them in class folders, a labels.csv, a tiny model, descriptions."""
    root = tmp_path_factory.mktemp("dist")
    rows = []
    for label, (name, stem) in enumerate(zip(CLASSES, ["astronaut", "cat", "coffee", "rocket"])):
        folder = root / "images" / stem
        folder.mkdir(parents=True)
        image = Image.open(EXAMPLES / f"{stem}.jpg").convert("RGB")
        w, h = image.size
        variants = [image, ImageOps.mirror(image), image.crop((0, 0, w * 2 // 3, h * 2 // 3)),
                    image.rotate(10, expand=True), ImageOps.grayscale(image).convert("RGB")]
        for i, v in enumerate(variants):
            path = folder / f"{stem}_{i}.{'png' if i % 2 else 'jpg'}"
            v.save(path)
            rows.append((str(path), label, name))
    (root / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "classname"), *rows])
    model = root / "tiny"
    model.mkdir()
    (model / "open_clip_config.json").write_text(json.dumps(TINY_CONFIG))
    descriptions = {n: [f"a {n} seen from the side.", f"the {n} is in the middle.", f"a close view of a {n}."]
                    for n in CLASSES}
    (root / "descriptions.json").write_text(json.dumps(descriptions))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {"root": root, "model": f"local-dir:{model}", "images": root / "images", "classes": root / "classes.txt"}


def _config(data: dict, tmp: Path, views: int = 3, shard_batches: int = 4) -> Path:
    cfg = {"name": "dist", "methods": ["clip", "ensemble", "awt"],
           "settings": {"views": views, "descriptions_per_class": 2, "batch_size": 2, "workers": 0,
                        "shard_batches": shard_batches, "device": "cpu", "cache_dir": str(tmp / "cache")},
           "backbones": [{"name": "tiny", "model": data["model"]}],
           "datasets": [{"name": "photos", "path": str(data["root"] / "labels.csv"),
                         "descriptions": str(data["root"] / "descriptions.json"), "template": "a photo of a {}."}]}
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _features(cache: Path) -> dict[str, torch.Tensor]:
    return {p.name: torch.load(p, weights_only=True)["features"] for p in sorted((cache / "features").glob("*.pt"))}


def test_classify_two_ranks_write_what_one_process_writes(data, tmp_path):
    args = ["classify", str(data["images"]), "--classes", str(data["classes"]), "--model", data["model"],
            "--views", "2", "--json", "--batch-size", "2", "--workers", "0"]
    one = _run(args, tmp_path)
    two = _run(args, tmp_path, ranks=2)
    assert one.returncode == two.returncode == 1        # broken.jpg: exit 1, as in one process
    lines = one.stdout.splitlines()
    assert len(lines) == 21 and [json.loads(x)["image"].endswith("broken.jpg") for x in lines].count(True) == 1
    assert two.stderr.count("broken.jpg: not an image") == one.stderr.count("broken.jpg: not an image") == 1
    assert two.stderr.count("1 of 21 input(s) could not be read") == 1
    assert "Traceback" not in one.stderr
    # rank 1 ends with 0 before rank 0 ends with 1: torchrun reports one failure, not a rank it killed;
    # its own report (a ChildFailedError traceback of torchrun) is the only traceback
    blocks = two.stderr.split("Traceback (most recent call last)")[1:]
    assert all("ChildFailedError" in b for b in blocks) and "SIGTERM" not in two.stderr
    assert two.stdout == one.stdout                      # the same JSON Lines, in input order


def test_bench_two_ranks_equal_one_process(data, tmp_path):
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir(), two_dir.mkdir()
    one = _run(["bench", str(_config(data, one_dir)), "--output", str(one_dir / "out"), "--quiet"], one_dir)
    assert one.returncode == 0, one.stderr
    started = time.perf_counter()
    two = _run(["bench", str(_config(data, two_dir)), "--output", str(two_dir / "out"), "--quiet"], two_dir, ranks=2)
    assert two.returncode == 0, two.stderr
    print(f"\n2 ranks: {time.perf_counter() - started:.1f} s")
    rows = _summary(two_dir / "out")
    assert rows == _summary(one_dir / "out") and len(rows) == 3
    one_f, two_f = _features(one_dir / "cache"), _features(two_dir / "cache")
    assert one_f.keys() == two_f.keys() and len(one_f) == 1
    for key in one_f:
        assert torch.equal(one_f[key], two_f[key])
    assert two.stdout.count("| tiny |") == 3                  # rank 0 alone prints the table
    assert not list((two_dir / "cache" / "features").glob("*.parts"))


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def test_a_killed_rank_leaves_its_shards_and_the_rerun_matches(data, tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    ref = _run(["bench", str(_config(data, ref_dir, views=6, shard_batches=1)), "--output", str(ref_dir / "out"),
                "--quiet"], ref_dir)
    assert ref.returncode == 0, ref.stderr
    config = _config(data, run_dir, views=6, shard_batches=1)
    args = ["bench", str(config), "--output", str(run_dir / "out"), "--quiet"]
    job = _awt(args, run_dir, ranks=2, start_new_session=True)
    parts = run_dir / "cache" / "features"
    deadline = time.monotonic() + 300
    while not list(parts.glob("*.parts/part-*-r1-*.pt")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.poll() is None, "the job ended before rank 1 wrote a part"
    workers = _children(job.pid)
    assert len(workers) == 2
    rank1 = next(w for w in workers if f"LOCAL_RANK=1\0".encode() in Path(f"/proc/{w}/environ").read_bytes())
    os.kill(rank1, signal.SIGKILL)
    job.communicate(timeout=300)
    assert job.returncode != 0
    kept = list(parts.glob("*.parts/part-*.pt"))
    assert kept and not list(parts.glob("*.pt"))             # shards kept, no finished set
    again = _run(args, run_dir, ranks=2)
    assert again.returncode == 0, again.stderr
    assert _summary(run_dir / "out") == _summary(ref_dir / "out")
    for key, value in _features(ref_dir / "cache").items():
        assert torch.equal(value, _features(run_dir / "cache")[key])
