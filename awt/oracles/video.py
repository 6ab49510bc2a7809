"""Open-VCLIP's zero-shot test-time video sampling written literally, one view at a time.

Each (temporal clip, spatial crop) pair is one item of Open-VCLIP's test set (``Kinetics.__getitem__``
with ``_spatial_temporal_idx = clip * crops + crop``): the file is opened afresh, decoded as
``decoder.decode`` with the PyAV backend does it (``pyav_decode``, ``pyav_decode_stream``,
``get_multiple_start_end_idx``, ``get_start_end_idx``, ``temporal_sampling``), normalised, scaled and
cropped as ``utils.spatial_sampling`` does for ``spatial_idx`` 0, 1, 2. Slow on purpose (every frame
of a counted video is decoded and held; a clip is decoded again for each crop). It is the yardstick
for the tests of :mod:`awt.video_sampling` and :mod:`awt.videos`, never used on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import av
import numpy as np
import torch

from ..video_sampling import VideoSampling


@dataclass
class ReferenceView:
    """One (clip, crop) item: its T frames as decoded, its crop box and its normalised pixels."""

    clip: int
    crop: int                 # position among the crops (spatial_idx = crop, or 1 for a single crop)
    frames: torch.Tensor      # (T, H, W, 3) uint8, the sampled frames at their decoded size
    box: tuple[int, int, int, int]   # x0, y0, x1, y1 in the scaled frame
    pixels: torch.Tensor      # (T, 3, S, S) float32, normalised


def _start_end(video_size: float, clip_size: float, clip_idx: int, num_clips: int, use_offset: bool) -> tuple[float, float]:
    """``get_multiple_start_end_idx`` for one clip size and a given (not random) clip index."""
    max_start = max(video_size - clip_size, 0)
    if use_offset:
        start = math.floor(max_start / 2) if num_clips == 1 else clip_idx * math.floor(max_start / (num_clips - 1))
    else:
        start = max_start * clip_idx / num_clips
    return start, start + clip_size - 1


def _decode_stream(container, start_pts: float, end_pts: float, stream) -> list:
    """``pyav_decode_stream`` with ``buffer_size=0``: its frames from ``start_pts`` on, through the
    first one stamped after ``end_pts`` (the buffer test ``count >= 0`` passes at once)."""
    container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
    frames = {}
    for frame in container.decode(video=0):
        if frame.pts < start_pts:
            continue
        frames[frame.pts] = frame
        if frame.pts > end_pts:
            break
    return [frames[pts] for pts in sorted(frames)]


def _to_tensor(frames: list) -> torch.Tensor:
    return torch.as_tensor(np.stack([frame.to_rgb().to_ndarray() for frame in frames]))


def _temporal_sampling(frames: torch.Tensor, start: float, end: float, num: int) -> torch.Tensor:
    index = torch.linspace(start, end, num)
    index = torch.clamp(index, 0, frames.shape[0] - 1).long()
    return torch.index_select(frames, 0, index)


def decode_clip(path: str, sampling: VideoSampling, clip_idx: int) -> torch.Tensor:
    """The T frames of clip ``clip_idx``: (T, H, W, 3) uint8."""
    rate, num, fps_to = sampling.sampling_rate, sampling.frames, sampling.target_fps
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames_length = stream.frames
        duration = stream.duration
        if duration is None:  # no selective decoding: the whole video, then the offset sampling
            frames = _to_tensor(_decode_stream(container, 0, math.inf, stream))
            clip_size = np.maximum(1.0, rate * num / fps_to * fps)
            start, end = _start_end(frames.shape[0], clip_size, clip_idx, sampling.clips, use_offset=True)
            return _temporal_sampling(frames, start, end, num)
        clip_size = np.maximum(1.0, np.ceil(rate * (num - 1) / fps_to * fps))
        start, end = _start_end(frames_length, clip_size, clip_idx, sampling.clips, use_offset=False)
        timebase = duration / frames_length
        frames = _to_tensor(_decode_stream(container, int(start * timebase), int(end * timebase), stream))
    # decode(): the clip is already trimmed, only subsampled (get_start_end_idx(..., 0, 1), no offset)
    sample_size = np.maximum(1.0, rate * num / fps_to * fps)
    start, end = 0.0, 0.0 + sample_size - 1
    return _temporal_sampling(frames, start, end, num)


def crop_view(frames: torch.Tensor, spatial_idx: int, size: int, mean: Sequence[float], std: Sequence[float]
              ) -> tuple[tuple[int, int, int, int], torch.Tensor]:
    """Normalise (``tensor_normalize``), scale the short side to ``size`` (``random_short_side_scale_jitter``
    with min = max = size) and take the uniform crop ``spatial_idx`` (``uniform_crop``).

    Args:
        frames: (T, H, W, 3) uint8.
    Returns:
        the box (x0, y0, x1, y1) in the scaled frame, and (T, 3, size, size) pixels.
    """
    x = frames.float() / 255.0
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    x = x.permute(3, 0, 1, 2)                            # C T H W: interpolate sees C as the batch
    height, width = x.shape[2], x.shape[3]
    if not ((width <= height and width == size) or (height <= width and height == size)):
        new_width = new_height = size
        if width < height:
            new_height = int(math.floor((float(height) / width) * size))
        else:
            new_width = int(math.floor((float(width) / height) * size))
        x = torch.nn.functional.interpolate(x, size=(new_height, new_width), mode="bilinear", align_corners=False)
    height, width = x.shape[2], x.shape[3]
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y_offset = 0
        elif spatial_idx == 2:
            y_offset = height - size
    else:
        if spatial_idx == 0:
            x_offset = 0
        elif spatial_idx == 2:
            x_offset = width - size
    cropped = x[:, :, y_offset : y_offset + size, x_offset : x_offset + size]
    return (x_offset, y_offset, x_offset + size, y_offset + size), cropped.permute(1, 0, 2, 3).contiguous()


def reference_views(path: str, sampling: VideoSampling, size: int, mean: Sequence[float], std: Sequence[float]
                    ) -> list[ReferenceView]:
    """Every (clip, crop) item of one video, in Open-VCLIP's order (``clip * crops + crop``)."""
    views = []
    for idx in range(sampling.clips * sampling.crops):
        clip = idx // sampling.crops
        crop = idx % sampling.crops
        spatial_idx = crop if sampling.crops > 1 else 1
        frames = decode_clip(path, sampling, clip)
        box, pixels = crop_view(frames, spatial_idx, size, mean, std)
        views.append(ReferenceView(clip, crop, frames, box, pixels))
    return views
