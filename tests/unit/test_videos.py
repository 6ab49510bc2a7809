"""Video views: Open-VCLIP's test-time sampling against its literal transcription, on real files of
every container, decoded by PyAV; the batched views and features against per-view references;
unreadable videos reported in one line each."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from support.video_files import VP8, read_number, write_video

from awt.oracles.video import reference_views
from awt.video_sampling import (VideoSampling, counted_indices, crop_boxes, indexed_windows, scaled_size,
                                spatial_indices, view_order, view_zero, window_positions)
from awt.video_views import cut_video_views, encode_videos
from awt.videos import (VideoError, VideoSource, collate_videos, find_videos, probe_video,
                        sample_video)

SAMPLING = VideoSampling()
SIZE = 64   # the tiny model's input: the crop size
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

# name: (frames, fps, width, height, codec); at 30 fps an indexed clip spans 112 frames, its frames 128
VIDEOS = {
    "short.mp4": (20, 30, 96, 64, None),                        # shorter than a clip: the last frame repeats
    "exact.avi": (112, 30, 96, 64, None),                       # exactly one clip
    "ntsc.mov": (128, Fraction(30000, 1001), 96, 64, None),     # 29.97 fps
    "long.mkv": (400, 25, 96, 64, None),                        # no frame count: counted
    "half.webm": (90, Fraction(25, 2), 96, 64, None),           # VP9 at 12.5 fps
    "slow.mp4": (61, 7, 64, 96, None),                          # portrait, 7 fps
    "vp8.webm": (150, 24, 96, 64, VP8),
    "small.mov": (70, 24, 48, 40, None),                        # scaled up to the crop size
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {name: write_video(folder / name, n, fps, w, h, codec) for name, (n, fps, w, h, codec) in VIDEOS.items()}


@pytest.fixture(scope="module")
def reference(videos) -> dict:
    """Each video's literal Open-VCLIP views (decoded once per module: the slow part)."""
    return {name: reference_views(str(path), SAMPLING, SIZE, MEAN, STD) for name, path in videos.items()}


def _numbers(frames) -> list[int]:
    return [read_number(np.asarray(f)) for f in frames]


# -- the protocol's arithmetic ----------------------------------------------------------------------

def test_sampling_arithmetic():
    s = SAMPLING
    assert s.views == 96 and s.indexed_span(30) == 112 and s.sampled_span(30) == 128.0
    assert s.indexed_span(7) == 27                                    # ceil(16 * 7 / 30 * 7) = ceil(26.13)
    assert window_positions(s, 30).tolist() == [0, 18, 36, 54, 72, 90, 108, 127]   # linspace(0, 127, 8)
    # 400 frames at 25 fps stamped every 512 ticks: clips of 94 frames from 306 * c / 4
    assert indexed_windows(s, 400, 400 * 512, 25) == [(0, 93 * 512), (39168, 39168 + 93 * 512),
                                                      (153 * 512, 246 * 512), (117504, 117504 + 93 * 512)]
    # counted: span 106.67, clips from c * floor(293.33 / 3) = 97 c, last index clamped to 399
    rows = counted_indices(s, 400, 25)
    assert rows[:, 0].tolist() == [0, 97, 194, 291] and rows[3, -1] == 291 + 105
    assert counted_indices(s, 20, 30)[:, -1].tolist() == [19] * 4 and counted_indices(s, 20, 30)[0, 1] == 18
    assert scaled_size(64, 96, 64) == (64, 96) and scaled_size(40, 48, 64) == (64, 76) and scaled_size(96, 64, 64) == (96, 64)
    assert scaled_size(720, 1280, 224) == (224, 398) and scaled_size(240, 320, 224) == (224, 298)
    assert crop_boxes(64, 96, 64, 3).tolist() == [[0, 0, 64, 64], [16, 0, 80, 64], [32, 0, 96, 64]]
    assert crop_boxes(97, 64, 64, 3)[:, 1].tolist() == [0, 17, 33]   # portrait: along the height, ceil(33 / 2)
    assert crop_boxes(64, 64, 64, 3).tolist() == [[0, 0, 64, 64]] * 3 and spatial_indices(1) == [1]
    assert view_zero(s) == (2, 1, 4)
    order = view_order(s)
    assert order[0] == (2 * 3 + 1) * 8 + 4 and sorted(order.tolist()) == list(range(96))
    assert view_zero(VideoSampling(crops=1, clips=3, frames=5)) == (1, 0, 2)
    with pytest.raises(ValueError):
        VideoSampling(crops=4)


# -- sampled frames against the literal reference ---------------------------------------------------

@pytest.mark.parametrize("name", list(VIDEOS))
def test_frames_and_boxes_equal_open_vclip(name, videos, reference):
    path, ref = videos[name], reference[name]
    frames, fps = VIDEOS[name][0], float(VIDEOS[name][1])
    info = probe_video(path)
    assert (info.frames, info.width, info.height) == (frames, VIDEOS[name][2], VIDEOS[name][3])
    assert info.fps == pytest.approx(fps) and info.duration == pytest.approx(frames / fps, abs=0.05)
    assert info.indexed == (path.suffix not in (".mkv", ".webm"))
    ours = sample_video(path, SAMPLING, SIZE)
    got = np.array(_numbers(f.permute(1, 2, 0).numpy() for f in ours.frames)).reshape(SAMPLING.clips, SAMPLING.frames)
    for view in ref:
        assert _numbers(view.frames.numpy()) == got[view.clip].tolist(), (view.clip, view.crop)
        for t in range(SAMPLING.frames):
            assert tuple(ours.boxes[view.clip * SAMPLING.frames + t, view.crop].int().tolist()) == view.box
    if not info.indexed:  # a counted video's frames are the closed form's indices
        assert np.array_equal(got, counted_indices(SAMPLING, frames, fps))
    assert (np.diff(ours.times, axis=1) >= 0).all() and ours.times.max() < frames / fps
    # deterministic: the same frames again
    again = sample_video(path, SAMPLING, SIZE)
    assert all(torch.equal(a, b) for a, b in zip(ours.frames, again.frames))


@pytest.mark.parametrize("name", ["long.mkv", "slow.mp4", "small.mov"])
def test_view_pixels_equal_open_vclip(name, videos, reference):
    # the batched cut (canvas + boxes, cut_views) against the reference's normalised, scaled, cropped
    # float frames: exact without scaling, within the 8-bit rounding of the stored scaled frames with it
    batch = collate_videos([VideoSource(SIZE, SAMPLING)[(0, str(videos[name]))]])
    views = cut_video_views(batch.packed, SAMPLING, (SIZE, SIZE), MEAN, STD, torch.device("cpu"))[0]
    natural = torch.stack([v.pixels[t] for v in reference[name] for t in range(SAMPLING.frames)])
    expected = natural[torch.from_numpy(view_order(SAMPLING))]
    scale = torch.tensor(STD).view(3, 1, 1) * 255
    tolerance = 0.501 if name == "small.mov" else 1e-3
    assert float(((views - expected) * scale).abs().max()) <= tolerance
    # view 0 is the centre crop of the middle frame of the middle clip
    clip, crop, frame = view_zero(SAMPLING)
    centre = reference[name][clip * SAMPLING.crops + crop]
    assert float(((views[0] - centre.pixels[frame]) * scale).abs().max()) <= tolerance


# -- features ---------------------------------------------------------------------------------------

def test_features_are_order_and_batch_invariant_and_match_per_view_encoding(tiny_backbone, videos, reference):
    names = ["short.mp4", "long.mkv", "slow.mp4"]
    paths = [videos[n] for n in names]

    def features(items, batch_size):
        out = {}
        for chunk in encode_videos(tiny_backbone, items, batch_size=batch_size, num_workers=0):
            assert not chunk.errors
            for k, i in enumerate(chunk.indices):
                out[str(items[i])] = chunk.features[k]
        return out

    together = features(paths, 3)
    alone = features(paths[::-1], 1)
    for p in paths:
        assert together[str(p)].shape == (96, 64)
        assert torch.allclose(together[str(p)], alone[str(p)], atol=1e-5)
    # the literal per-view encoding of the reference's pixels, one view at a time
    ref = reference["long.mkv"]
    natural = torch.stack([v.pixels[t] for v in ref for t in range(SAMPLING.frames)])[torch.from_numpy(view_order(SAMPLING))]
    per_view = torch.cat([tiny_backbone.encode_images(x[None]) for x in natural])
    assert torch.allclose(together[str(videos["long.mkv"])], per_view, atol=1e-4)


# -- bad inputs -------------------------------------------------------------------------------------

def test_unreadable_videos_are_reported_and_the_rest_encoded(tiny_backbone, videos, tmp_path):
    good = videos["short.mp4"]
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    with av.open(str(tmp_path / "audio.m4a"), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            c.mux(packet)
    data = write_video(tmp_path / "whole.mp4", 300, 25).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])       # no index (moov) at the end
    corrupt = bytearray(data)
    corrupt[len(data) // 3 : len(data) // 3 + 2048] = bytes(range(256)) * 8
    (tmp_path / "corrupt.mp4").write_bytes(bytes(corrupt))
    with av.open(str(tmp_path / "zero.avi"), "w") as c:                   # a video stream without frames
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 64
        c.start_encoding()
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "folder.mp4").mkdir()
    items = [good, tmp_path / "text.mp4", tmp_path / "audio.m4a", tmp_path / "truncated.mp4", tmp_path / "corrupt.mp4",
             tmp_path / "zero.avi", tmp_path / "pipe.mp4", tmp_path / "folder.mp4", tmp_path / "missing.mp4", good]
    indices, errors = [], {}
    for chunk in encode_videos(tiny_backbone, items, batch_size=4, num_workers=2):
        indices += chunk.indices
        errors.update({i: str(e) for i, e in chunk.errors})
        assert chunk.features.shape[:2] == (len(chunk.indices), 96)
    assert indices == [0, 9]
    t = str(tmp_path)
    assert errors == {
        1: f"{t}/text.mp4: not a video, or a truncated or corrupt one (FFmpeg finds no valid data)",
        2: f"{t}/audio.m4a: has no video stream",
        3: f"{t}/truncated.mp4: not a video, or a truncated or corrupt one (FFmpeg finds no valid data)",
        4: f"{t}/corrupt.mp4: cannot decode: invalid data found when processing input (a truncated or corrupt video?)",
        5: f"{t}/zero.avi: has no video frames",
        6: f"{t}/pipe.mp4: is a FIFO (named pipe), not a video file",
        7: f"{t}/folder.mp4: is a directory",
        8: f"{t}/missing.mp4: no such file",
    }
    assert all("\n" not in e for e in errors.values())
    with pytest.raises(VideoError, match="pixels per frame is more than the limit of 1,000 pixels"):
        probe_video(good, max_pixels=1000)


def test_a_cut_video_whose_index_survived_is_an_error(tmp_path):
    """An mp4 written for streaming keeps its index (moov) at the front: cut short, it still lists
    every frame, and the frames left must not pass for the whole video (MPEG-4 part 2 frames decode
    to the cut without an error of FFmpeg's, unlike H.264's)."""
    data = write_video(tmp_path / "whole.mp4", 60, 10, codec=("mpeg4", {}), faststart=True).read_bytes()
    assert sample_video(tmp_path / "whole.mp4", VideoSampling(2, 1, 2), 64).info.frames == 60
    for name, size in [("header-only.mp4", 1200), ("half.mp4", len(data) // 2)]:
        (tmp_path / name).write_bytes(data[:size])
        with pytest.raises(VideoError, match=rf"{name}: \d+ of the 60 frames its index lists are in the file "
                                             r"\(a truncated video\?\)"):
            sample_video(tmp_path / name, VideoSampling(2, 1, 2), 64)


def test_find_videos(tmp_path):
    for name in ["b.mp4", "a/c.MKV", "a/notes.txt", "a/d/e.webm", "z.jpg", "m.mov", "x.avi"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.mp4")
    os.symlink(tmp_path / "gone.mp4", tmp_path / "broken.mp4")
    found = [os.path.relpath(p, tmp_path) for p in find_videos([tmp_path, tmp_path / "z.jpg"])]
    assert found == ["a/c.MKV", "a/d/e.webm", "b.mp4", "broken.mp4", "m.mov", "x.avi", "z.jpg"]


@pytest.mark.parametrize("name", ["long.mkv", "ntsc.mov", "exact.avi", "vp8.webm"])
def test_seeking_over_every_gap_gives_the_same_frames(name, videos, reference, monkeypatch):
    # one forward pass normally decodes through the short gaps between clips; seeking instead finds
    # the same frames
    import awt.videos

    monkeypatch.setattr(awt.videos, "SEEK_GAP_SECONDS", 0.0)
    ours = sample_video(videos[name], SAMPLING, SIZE)
    got = np.array(_numbers(f.permute(1, 2, 0).numpy() for f in ours.frames)).reshape(SAMPLING.clips, SAMPLING.frames)
    assert all(_numbers(view.frames.numpy()) == got[view.clip].tolist() for view in reference[name])
