"""Video decoding: how fast the sampled views of a video are decoded, against how fast the encoder
takes them, and the decoder's peak memory for a short and a long video.

Generates H.264 mp4 test videos (PyAV, moving gradients and a frame counter) into a temporary folder,
then, in one run on this machine:

* decode: ``sample_video`` (one pass over the 4 clips, seeking over long gaps; the 32 sampled frames
  converted and scaled) in one process on one thread, as in a loader worker: videos per second x
  views per video;
* encode: the image encoder on the views (random weights; speed does not depend on them);
* long videos: the time to sample one short and one long video (the same size, ``--long-minutes``
  long), and the peak RSS of a fresh process sampling each.

Usage: ``python benchmarks/video_decode.py [--size 1280x720] [--seconds 10] [--long-minutes 10]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_video(path: Path, seconds: float, width: int, height: int, fps: int = 30, codec: str = "libx264") -> Path:
    import av

    if path.exists():
        return path
    frames = int(seconds * fps)
    x = np.linspace(0, 4 * np.pi, 2 * width, dtype=np.float32)[None, :]
    y = np.linspace(0, 4 * np.pi, height, dtype=np.float32)[:, None]
    base = np.empty((height, 2 * width, 3), np.uint8)   # twice as wide: frame k is a moving window of it
    base[..., 0] = (127 + 127 * np.sin(x) * np.cos(y)).astype(np.uint8)
    base[..., 1] = (127 + 127 * np.cos(x - y)).astype(np.uint8)
    part = path.with_name(f".{path.name}.part{path.suffix}")  # a stopped run leaves no half video behind
    with av.open(str(part), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            shift = (k * 4) % width
            image = np.ascontiguousarray(base[:, shift : shift + width])
            image[..., 2] = (k * 7) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(part, path)
    return path


_PEAK = """if True:
    import sys
    sys.path.insert(0, {repo!r})
    from awt.videos import sample_video
    from awt.video_sampling import VideoSampling

    def peak():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    base = peak()
    sample_video({path!r}, VideoSampling(), 224)
    print(base, peak())
"""


def peak_rss_mb(path: Path) -> tuple[float, float]:
    """(after imports, after sampling) peak RSS in MB of a fresh process sampling ``path`` (Linux)."""
    out = subprocess.run([sys.executable, "-c", _PEAK.format(repo=str(REPO), path=str(path))],
                         capture_output=True, text=True, check=True)
    before, after = (int(v) / 1024 for v in out.stdout.split())
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="width x height of the test videos")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the short video")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the long video (0: skip)")
    parser.add_argument("--videos", type=int, default=8, help="decodes timed")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--dir", default=None, help="where the test videos are kept (default: a temporary folder)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import torch

    from awt.backbones import create_backbone
    from awt.video_sampling import VideoSampling
    from awt.video_views import crop_size, cut_video_views
    from awt.videos import VideoSource, collate_videos, sample_video

    folder = Path(args.dir or tempfile.mkdtemp(prefix="awt-video-"))
    folder.mkdir(parents=True, exist_ok=True)
    short = make_video(folder / f"short-{width}x{height}-{args.seconds:g}s.mp4", args.seconds, width, height)
    sampling = VideoSampling()
    backbone = create_backbone(args.model, "none", device="cpu")
    size = crop_size(backbone.image_size)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    sample_video(short, sampling, size)  # warm-up
    start = time.perf_counter()
    for _ in range(args.videos):
        sample_video(short, sampling, size)
    decode = args.videos * sampling.views / (time.perf_counter() - start)
    torch.set_num_threads(threads)

    batch = collate_videos([VideoSource(size, sampling)[(0, str(short))]])
    views = cut_video_views(batch.packed, sampling, backbone.image_size, backbone.mean, backbone.std, torch.device("cpu"))
    pixels = views.flatten(0, 1)
    backbone.encode_images(pixels[:8])  # warm-up
    start = time.perf_counter()
    backbone.encode_images(pixels)
    encode = pixels.shape[0] / (time.perf_counter() - start)
    print(f"{width}x{height} h264, {sampling.views} views per video, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}")
    print(f"decode: {decode:.0f} views/s in one process, one thread ({decode / sampling.views:.2f} videos/s)")
    print(f"encode: {encode:.0f} views/s ({args.model}, fp32, CPU)")
    print(f"decode / encode: {decode / encode:.2f} per decoding process")
    if args.long_minutes > 0:
        long = make_video(folder / f"long-{width}x{height}-{args.long_minutes:g}min.mp4", 60 * args.long_minutes,
                          width, height)
        torch.set_num_threads(1)
        for name, path in (("short", short), ("long", long)):
            start = time.perf_counter()
            sample_video(path, sampling, size)
            print(f"one video, {name}: {time.perf_counter() - start:.2f} s")
        torch.set_num_threads(threads)
        for name, path in (("short", short), ("long", long)):
            before, after = peak_rss_mb(path)
            print(f"peak RSS, {name} ({path.stat().st_size / 1e6:.0f} MB file): {after:.0f} MB "
                  f"({after - before:+.0f} MB over the imports)")


if __name__ == "__main__":
    main()
