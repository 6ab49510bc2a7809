"""Test videos made with PyAV itself: frame k shows the number k as 12 large black-or-white blocks in
its red channel (4 x 3 blocks, bit b in block b, row-major), so that the frames a decoder returns can
be read back exactly through lossy compression and scaling; green and blue carry smooth ramps, so
that crops of one frame differ."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS, GRID = 12, (3, 4)   # 12 bits in 3 rows x 4 columns of blocks

# (suffix, codec, options): what the bundled FFmpeg both encodes and decodes here
FORMATS = {
    "mp4": ("libx264", {"preset": "ultrafast"}),
    "avi": ("mpeg4", {}),
    "mkv": ("libx264", {"preset": "ultrafast"}),
    "webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
    "mov": ("libx264", {"preset": "ultrafast"}),
}
VP8 = ("libvpx", {"deadline": "realtime", "cpu-used": "16"})


def frame_pixels(k: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 picture of frame ``k``."""
    rows, cols = GRID
    image = np.zeros((height, width, 3), np.uint8)
    for b in range(BITS):
        r, c = divmod(b, cols)
        if (k >> b) & 1:
            image[r * height // rows : (r + 1) * height // rows, c * width // cols : (c + 1) * width // cols, 0] = 255
    image[..., 1] = np.linspace(0, 255, width, dtype=np.float32)[None, :].astype(np.uint8)
    image[..., 2] = np.linspace(255, 0, height, dtype=np.float32)[:, None].astype(np.uint8)
    return image


def read_number(pixels: np.ndarray) -> int:
    """The frame number of a whole (possibly scaled) frame, (H, W, 3) or (3, H, W) uint8."""
    if pixels.shape[0] == 3 and pixels.shape[-1] != 3:
        pixels = pixels.transpose(1, 2, 0)
    rows, cols = GRID
    h, w = pixels.shape[:2]
    number = 0
    for b in range(BITS):
        r, c = divmod(b, cols)
        # the block's middle half: away from edges blurred by compression, chroma subsampling and scaling
        y0, y1 = r * h // rows, (r + 1) * h // rows
        x0, x1 = c * w // cols, (c + 1) * w // cols
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        if pixels[y0 + dy : y1 - dy, x0 + dx : x1 - dx, 0].astype(np.float32).mean() > 127:
            number |= 1 << b
    return number


def write_video(path: Path, frames: int, fps: Fraction | int, width: int = 96, height: int = 64,
                codec: tuple[str, dict] | None = None, faststart: bool = False) -> Path:
    """Write ``frames`` numbered frames at ``fps``; the codec is the container's from FORMATS unless
    given; ``faststart``: an mp4's index (moov) before its frames, as streaming sites write it."""
    name, options = codec or FORMATS[path.suffix[1:]]
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as container:
        stream = container.add_stream(name, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pixels(k, width, height), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
