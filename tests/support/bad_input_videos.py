"""The bad videos of the bad-input table (tests/support/bad_input_cases.py registers them): the files, made
once by :func:`make_videos`, and one case each -- a clear line for a video that cannot be read, every
other input still classified; the odd but good ones classified."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from support.bad_input_cases import CAT, ROCKET, case, classify

SMALL = ("--frames", "2", "--crops", "1", "--clips", "2")


def make_videos(folder: Path) -> None:
    """Good and bad videos under ``folder``, 64 x 48 and a second or two long."""
    import av
    import numpy as np
    from support.video_files import frame_pixels, write_video

    folder.mkdir(parents=True)
    data = write_video(folder / "good.mp4", 40, 25, 64, 48).read_bytes()
    write_video(folder / "good.webm", 30, 25, 64, 48)
    write_video(folder / "large.mp4", 10, 25, 128, 96)
    write_video(folder / "short.avi", 3, 25, 64, 48)                  # shorter than a clip
    (folder / "text.mp4").write_text("not a video\n" * 20)
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])    # the index (moov) is at the end
    corrupt = bytearray(data)
    corrupt[len(data) // 3: len(data) // 3 + 2048] = bytes(range(256)) * 8
    (folder / "corrupt.mp4").write_bytes(bytes(corrupt))
    (folder / "empty.mkv").write_bytes(b"")
    os.mkfifo(folder / "fifo.mp4")
    with av.open(str(folder / "audio-only.mp4"), "w") as c:          # sound, no picture
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            c.mux(packet)
    with av.open(str(folder / "no-frames.avi"), "w") as c:           # a video stream without frames
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 48
        c.start_encoding()
    with av.open(str(folder / "vfr.mp4"), "w") as c:                 # 50 fps, then 16.7 fps
        stream = c.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k in range(60):
            frame = av.VideoFrame.from_ndarray(frame_pixels(k, 64, 48), format="rgb24")
            frame.pts, frame.time_base = (20 * k if k < 30 else 600 + 60 * (k - 30)), Fraction(1, 1000)
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    with av.open(str(folder / "rotated.mp4"), "w") as c:             # a phone's portrait video
        stream = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for k in range(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pixels(k, 64, 48), format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def video(w, name: str) -> str:
    return str(w.path("videos", name))


def _classify(w, *names: str, extra: tuple[str, ...] = ()):
    """The two good photos, then the videos ``names``: the photos must still be classified."""
    return classify(w, *w.good, *(video(w, n) for n in names), extra=SMALL + extra)


for name, file, what, message in [
    ("video-text", "text.mp4", "a text file named .mp4", "not a video"),
    ("video-truncated", "truncated.mp4", "an mp4 cut in half (no index)", "truncated or corrupt"),
    ("video-corrupt", "corrupt.mp4", "an mp4 with 2 KB of garbage in its frames", "cannot decode"),
    ("video-empty", "empty.mkv", "a zero-byte .mkv", "empty file (0 bytes)"),
    ("video-fifo", "fifo.mp4", "a FIFO named .mp4", "fifo"),
    ("video-audio-only", "audio-only.mp4", "an mp4 with sound and no picture", "no video stream"),
    ("video-no-frames", "no-frames.avi", "a video stream without frames", "no video frames"),
    ("video-missing", "missing.webm", "a video that does not exist", "no such file"),
]:
    case(name, f"video: {what}", message=message, kept=(CAT, ROCKET))(lambda w, file=file: _classify(w, file))

case("video-max-pixels", "video: 128 x 96 frames, --max-pixels 10000 (the photos: 96 x 72)",
     message=("more than the limit of 10,000 pixels", "--max-pixels"), kept=(CAT, ROCKET))(
    lambda w: _classify(w, "large.mp4", extra=("--max-pixels", "10000")))
case("video-good", "videos (good): mp4, webm, shorter than a clip, variable frame rate, rotated", exit=0,
     errors=0, kept=(CAT, ROCKET, "good.mp4", "good.webm", "short.avi", "vfr.mp4", "rotated.mp4"))(
    lambda w: _classify(w, "good.mp4", "good.webm", "short.avi", "vfr.mp4", "rotated.mp4"))
