"""Videos beside images (issue 21): `awt classify` and the classifier over a mix of generated videos
(every container), real photos and broken files; one result per input, in input order, the JSON
shape of images; features that depend on the video alone (batch, order, company, workers, ranks);
a method that reads view 0 reads the video's view 0; the video loader's workers kept."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.video_files import write_video

from awt import AWTClassifier, ClassifierSpec, VideoSampling
from awt.inputs import encode_inputs, find_inputs
from awt.methods import score
from awt.video_views import encode_videos, video_loader

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "awt" / "data" / "examples"
CLASSES = ["astronaut", "cat", "cup of coffee", "rocket"]
SAMPLING = VideoSampling(frames=2, crops=1, clips=2)
SMALL = ["--frames", "2", "--crops", "1", "--clips", "2"]
# name: (frames, fps, width, height)
VIDEOS = {"b.mp4": (30, 25, 64, 48), "c.avi": (25, 24, 64, 48), "d.mkv": (40, 25, 48, 64), "e.webm": (20, 12, 64, 48),
          "f.mov": (33, 30, 64, 64)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A folder of two photos, five videos and a broken video; a class file."""
    root = tmp_path_factory.mktemp("mixed")
    folder = root / "inputs"
    folder.mkdir()
    shutil.copy(EXAMPLES / "cat.jpg", folder / "a.jpg")
    for name, (n, fps, w, h) in VIDEOS.items():
        write_video(folder / name, n, fps, w, h)
    (folder / "g.mp4").write_text("not a video\n" * 20)
    shutil.copy(EXAMPLES / "rocket.jpg", folder / "h.jpg")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {"folder": folder, "classes": root / "classes.txt", "paths": find_inputs([folder])}


def _awt(args: list[str], tmp: Path, model: str, ranks: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks > 1 else [sys.executable]
    # one thread in every process: the one-process run computes exactly what each rank computes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AWT_CACHE_DIR": str(tmp / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(launcher + ["-m", "awt", *args, "--model", model], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def _classify_args(inputs: dict) -> list[str]:
    return ["classify", str(inputs["folder"]), "--classes", str(inputs["classes"]), "--views", "2", "--json",
            "--top-k", "3", "--batch-size", "2", "--workers", "0", *SMALL]


@pytest.fixture(scope="module")
def one_process(inputs, tiny_model_name, tmp_path_factory) -> subprocess.CompletedProcess:
    return _awt(_classify_args(inputs), tmp_path_factory.mktemp("one"), tiny_model_name)


def test_classify_takes_videos_beside_images(inputs, one_process, tiny_backbone):
    r = one_process
    assert r.returncode == 1, r.stderr                   # the broken video: exit 1, every other input classified
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["image"]).name for x in lines] == ["a.jpg", "b.mp4", "c.avi", "d.mkv", "e.webm", "f.mov", "g.mp4",
                                                      "h.jpg"]   # every input, in input order
    assert [x["image"] for x in lines] == inputs["paths"]
    bad = lines[6]
    assert bad == {"image": inputs["paths"][6],
                   "error": "not a video, or a truncated or corrupt one (FFmpeg finds no valid data)"}
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {inputs['paths'][6]}: {bad['error']}"] and "Traceback" not in r.stderr
    assert "1 of 8 input(s) could not be read" in r.stderr
    # the same results as the library's, in the same JSON shape (ImageResult.to_json)
    spec = ClassifierSpec.from_files(inputs["classes"], views=2, video=SAMPLING, cache_dir=None)
    expected = [x.to_json() for x in AWTClassifier(tiny_backbone, spec).classify(inputs["paths"], top_k=3,
                                                                                 batch_size=2, num_workers=0)]
    for got, want in zip(lines, expected):
        assert got.keys() == want.keys()
        if "predictions" in want:
            assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
            assert [p["score"] for p in got["predictions"]] == pytest.approx([p["score"] for p in want["predictions"]],
                                                                              abs=2e-4)
        else:
            assert got == want


@pytest.mark.slow
def test_two_ranks_print_what_one_process_prints(inputs, one_process, tiny_model_name, tmp_path):
    two = _awt(_classify_args(inputs), tmp_path, tiny_model_name, ranks=2)
    assert two.returncode == 1
    assert two.stdout == one_process.stdout             # the same JSON Lines, bit for bit, in input order
    assert two.stderr.count("g.mp4: not a video") == 1 and two.stderr.count("1 of 8 input(s) could not be read") == 1


def _features(backbone, items, **options) -> dict[str, torch.Tensor]:
    out, handed = {}, set()
    for batch in encode_inputs(backbone, items, views=2, sampling=SAMPLING, **options):
        positions = batch.indices + [i for i, _ in batch.errors]
        # each batch holds the first input not handed on yet: input order costs no waiting
        assert min(positions) == min(set(range(len(items))) - handed)
        handed |= set(positions)
        for k, i in enumerate(batch.indices):
            out[str(items[i])] = batch.features[k]
    assert handed == set(range(len(items)))
    return out


@pytest.fixture
def one_thread():
    """One CPU thread, as each torchrun rank has here: a multi-threaded BLAS may split a product
    differently for another number of rows, which moves the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_features_depend_on_the_input_alone(inputs, tiny_backbone, one_thread):
    items = inputs["paths"]
    together = _features(tiny_backbone, items, batch_size=8, num_workers=0)
    assert {k: tuple(v.shape) for k, v in together.items() if k.endswith((".mp4", ".mkv"))} == {
        items[1]: (4, 64), items[3]: (4, 64)}                                  # 2 frames x 1 crop x 2 clips
    assert together[items[0]].shape == (3, 64)                              # an image: view 0 and 2 random views
    reordered = _features(tiny_backbone, items[::-1], batch_size=2, num_workers=0)
    with_workers = _features(tiny_backbone, items[2:] + items[:2], batch_size=3, num_workers=2)
    for item, feats in together.items():
        alone = _features(tiny_backbone, [item], batch_size=1, num_workers=0)[item]
        for other in (reordered[item], with_workers[item], alone):
            assert torch.equal(feats, other), item                          # bit for bit
    # a video's features are encode_videos' own (tested against the per-view reference in test_videos.py)
    (batch,) = list(encode_videos(tiny_backbone, [items[2]], sampling=SAMPLING, num_workers=0))
    assert torch.equal(batch.features[0], together[items[2]])


def test_a_view0_method_reads_the_videos_view0(inputs, tiny_backbone):
    video = inputs["paths"][3]
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, video=SAMPLING, cache_dir=None))
    (full,) = [b.features for b in clf.iter_image_features([video], num_workers=0)]
    (first,) = [b.features for b in clf.iter_image_features([video], num_workers=0, video_view0_only=True)]
    assert first.shape == (1, 1, 64) and torch.equal(first, full[:, :1])   # view 0 alone is view 0 of all
    (result,) = clf.classify([video], method="clip", top_k=4, num_workers=0)
    classes = clf.classes_for("clip")
    expected = score("clip", full, classes.features, classes.mask, clf.logit_scale)[0]
    assert [p.index for p in result.predictions] == expected.argsort(descending=True).tolist()
    assert [p.score for p in result.predictions] == pytest.approx(expected.sort(descending=True).values.tolist(),
                                                                  abs=1e-5)


def test_the_video_loaders_workers_are_kept(inputs, tiny_backbone):
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, views=2, video=SAMPLING, cache_dir=None))
    first = clf.classify(inputs["paths"], batch_size=2, num_workers=2)
    loader = video_loader(tiny_backbone, 2, SAMPLING, clf.spec.decoding.max_pixels)
    pids = loader.worker_pids()
    assert len(pids) == 2
    again = clf.classify(inputs["paths"][::-1], batch_size=3, num_workers=2)
    assert loader.worker_pids() == pids                                       # the same processes
    assert [r.to_json() for r in again[::-1]] == [r.to_json() for r in first]


def test_rotation_metadata_is_applied_and_decoding_has_a_time_limit(tmp_path, monkeypatch):
    import av
    import numpy as np
    from support.video_files import frame_pixels, read_number

    import awt.videos
    from awt.videos import VideoError, probe_video, sample_video

    # a phone's portrait video: landscape frames stored, and a display matrix turning them a quarter
    # turn counterclockwise (FFmpeg's convention), as `ffmpeg` shows it
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(90)
        for k in range(20):
            upright = frame_pixels(k, 64, 96)                      # what the viewer sees: 64 wide, 96 high
            stored = np.ascontiguousarray(np.rot90(upright, -1))   # a quarter turn back: 96 x 64
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    sampled = sample_video(path, SAMPLING, 64)
    assert all(tuple(f.shape) == (3, 96, 64) for f in sampled.frames)     # portrait, as displayed
    # upright: the frames of a video stored upright, picked by the same sampling
    twin = sample_video(write_video(tmp_path / "upright.mp4", 20, 25, 64, 96), SAMPLING, 64)
    assert [read_number(f.numpy()) for f in sampled.frames] == [read_number(f.numpy()) for f in twin.frames]
    assert (probe_video(path).width, probe_video(path).height) == (96, 64)   # the header: as stored
    monkeypatch.setattr(awt.videos, "DECODE_SECONDS", 0.0)
    with pytest.raises(VideoError, match=r"portrait\.mp4: decoding took longer than 0 s, the limit per video"):
        sample_video(path, SAMPLING, 64)


def test_every_method_of_the_registry_classifies_videos(inputs, tiny_backbone):
    from awt.methods import METHODS

    descriptions = {n: [f"a {n} in a video.", f"someone near a {n}."] for n in CLASSES}
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, descriptions=descriptions, descriptions_per_class=2,
                                                      views=2, video=SAMPLING, cache_dir=None))
    items = [inputs["paths"][1], inputs["paths"][0], inputs["paths"][4]]   # a video, a photo, a video
    (full,) = [b.features for b in clf.iter_image_features(items[:1], num_workers=0)]
    for name, method in METHODS.items():
        results = clf.classify(items, method=name, top_k=4, num_workers=0)
        assert [r.image for r in results] == items and all(r.error is None for r in results), name
        assert all(len(r.predictions) == 4 and all(math.isfinite(p.score) for p in r.predictions) for r in results)
        classes = clf.classes_for(name)
        expected = score(name, full, classes.features, classes.mask, clf.logit_scale)[0]
        got = results[0].predictions   # every class with the reference's score, best first (ZERO's votes tie)
        assert sorted(p.index for p in got) == list(range(4)), name
        assert [p.score for p in got] == pytest.approx([float(expected[p.index]) for p in got], abs=1e-5), name
        assert all(a.score >= b.score for a, b in zip(got, got[1:])), name
