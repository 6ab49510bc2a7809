"""Zero-shot video test-time sampling: which frames, and which crops of them, make a video's views.

The AWT authors "treat the sampled video frames as augmented views": 8 frames x 3 spatial crops x 4
temporal clips, sampled as Open-VCLIP's test loader does (wengzejia1/Open-VCLIP, built on
PySlowFast; ``slowfast/datasets/kinetics.py``, ``decoder.py``, ``utils.py``, ``transform.py``). Its
PyAV path, reproduced here to the index:

* **Clips** (``decoder.pyav_decode``). A stream that reports its frame count ``n`` and duration
  (mp4, mov, avi; every video of UCF101, HMDB51 and Kinetics) is *indexed*: clip ``c`` of ``C``
  spans ``cs = max(1, ceil(rate * (T - 1) / target_fps * fps))`` frames from
  ``start = max(n - cs, 0) * c / C`` (a float: ``get_multiple_start_end_idx`` without offsets), turned
  into timestamps with ``int(frame * duration / n)``; the frames decoded for it are those stamped
  within ``[start, start + cs - 1]`` plus the next one (``pyav_decode_stream``'s buffer of 0 still
  takes one). A stream without a duration (mkv, webm) is *counted*: Open-VCLIP decodes it whole and
  takes clip ``c`` from ``start = c * floor(max(n - cs', 0) / (C - 1))`` (``floor(delta / 2)`` for one
  clip; ``USE_OFFSET_SAMPLING``) with ``cs' = max(1, rate * T / target_fps * fps)``, not rounded.
* **Frames** (``decoder.temporal_sampling``). ``T`` positions ``torch.linspace(a, b, T)``, clamped to
  the frames there are and truncated: ``a, b = 0, cs' - 1`` within an indexed clip's decoded frames
  (``get_start_end_idx(m, cs', 0, 1)``), ``start, start + cs' - 1`` for a counted one. The last
  positions of an indexed clip run past its ``m`` decoded frames and repeat its last frame; a video
  shorter than a clip repeats its last frame the same way.
* **Crops** (``utils.spatial_sampling`` for ``spatial_idx`` 0, 1, 2 ->
  ``transform.random_short_side_scale_jitter`` with min = max = crop size, then
  ``transform.uniform_crop``). Each frame is scaled, bilinearly without antialiasing, so that its
  shorter side is the crop size ``S`` (the longer one ``floor(long / short * S)``; unchanged when the
  short side already is ``S``); crop ``j`` is the ``S x S`` square at ``ceil((side - S) / 2)`` along
  both axes, moved to the start (``j = 0``) or the end (``j = 2``) of the longer axis (the width
  when the frame is square). One crop is the centre one (``spatial_idx`` 1).

``S`` is the encoder's input size (Open-VCLIP's ``TEST_CROP_SIZE``, 224 for ViT-B/16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import defaults
from .errors import SettingError

# Open-VCLIP pads its seek target by this many timestamps (pyav_decode_stream's margin).
SEEK_MARGIN = 1024


@dataclass(frozen=True)
class VideoSampling:
    """The protocol's settings; the defaults are the AWT authors' ``8 x 3 x 4`` on Open-VCLIP's
    ``TemporalCLIP_vitb16_8x16`` config (``NUM_FRAMES 8``, ``SAMPLING_RATE 16``, ``TARGET_FPS 30``)."""

    frames: int = defaults.VIDEO_FRAMES   # T, frames per clip (DATA.NUM_FRAMES), 8
    crops: int = defaults.VIDEO_CROPS     # spatial crops per frame (TEST.NUM_SPATIAL_CROPS), 1 to 3; 3
    clips: int = defaults.VIDEO_CLIPS     # temporal clips (TEST.NUM_ENSEMBLE_VIEWS), 4
    sampling_rate: int = 16       # frame stride at target_fps (DATA.SAMPLING_RATE)
    target_fps: float = 30.0      # DATA.TARGET_FPS

    def __post_init__(self) -> None:
        for key in ("frames", "clips", "sampling_rate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(key, value, "a whole number >= 1")
        if isinstance(self.crops, bool) or self.crops not in (1, 2, 3):
            raise SettingError("crops", self.crops, "1, 2 or 3 (start, centre and end of the long side)")
        if not (isinstance(self.target_fps, (int, float)) and self.target_fps > 0):
            raise SettingError("target_fps", self.target_fps, "> 0")

    @property
    def views(self) -> int:
        """Views per video: clips x crops x frames."""
        return self.clips * self.crops * self.frames

    def indexed_span(self, fps: float) -> int:
        """Frames an indexed clip spans (``cs``): ``max(1, ceil(rate * (T - 1) / target_fps * fps))``."""
        return int(max(1.0, math.ceil(self.sampling_rate * (self.frames - 1) / self.target_fps * fps)))

    def sampled_span(self, fps: float) -> float:
        """The span the frame positions are spread over (``cs'``): ``max(1, rate * T / target_fps * fps)``."""
        return max(1.0, self.sampling_rate * self.frames / self.target_fps * fps)


def _positions(first: float, last: float, count: int, frames: int | None) -> np.ndarray:
    """``temporal_sampling``'s indices: float32 ``linspace``, clamped to ``[0, frames - 1]`` (to
    ``>= 0`` when ``frames`` is None), truncated."""
    index = torch.linspace(first, last, count)
    index = index.clamp(min=0) if frames is None else index.clamp(0, frames - 1)
    return index.long().numpy()


def indexed_windows(sampling: VideoSampling, frame_count: int, duration: int, fps: float) -> list[tuple[int, int]]:
    """Timestamp windows ``(start, end)`` of an indexed stream's clips, in its time base.

    Args:
        frame_count: the frames the stream reports (``stream.frames``).
        duration: its duration in time-base units (``stream.duration``).
    """
    span = sampling.indexed_span(fps)
    delta = max(frame_count - span, 0)
    step = duration / frame_count
    windows = []
    for clip in range(sampling.clips):
        start = delta * clip / sampling.clips
        end = start + span - 1
        windows.append((int(start * step), int(end * step)))
    return windows


def window_positions(sampling: VideoSampling, fps: float) -> np.ndarray:
    """(frames,) positions within an indexed clip's decoded frames, before the clamp to the ``m``
    frames it has: a position ``p`` takes frame ``min(p, m - 1)``."""
    return _positions(0.0, sampling.sampled_span(fps) - 1, sampling.frames, None)


def counted_indices(sampling: VideoSampling, frame_count: int, fps: float) -> np.ndarray:
    """(clips, frames) indices into the ``frame_count`` frames of a counted stream."""
    span = sampling.sampled_span(fps)
    delta = max(frame_count - span, 0)
    rows = []
    for clip in range(sampling.clips):
        if sampling.clips == 1:
            start = math.floor(delta / 2)
        else:
            start = clip * math.floor(delta / (sampling.clips - 1))
        rows.append(_positions(start, start + span - 1, sampling.frames, frame_count))
    return np.stack(rows)


def scaled_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of a frame whose shorter side is scaled to ``size`` as the protocol does."""
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(math.floor((float(height) / width) * size)), size
    return size, int(math.floor((float(width) / height) * size))


def spatial_indices(crops: int) -> list[int]:
    """``spatial_idx`` of each crop: 0, 1, 2 (start, centre, end) for several, the centre for one."""
    return list(range(crops)) if crops > 1 else [1]


def crop_boxes(height: int, width: int, size: int, crops: int) -> np.ndarray:
    """(crops, 4) float32 ``x0, y0, x1, y1`` boxes of the uniform crops of a scaled frame."""
    boxes = np.empty((crops, 4), dtype=np.float32)
    for j, spatial in enumerate(spatial_indices(crops)):
        y0 = int(math.ceil((height - size) / 2))
        x0 = int(math.ceil((width - size) / 2))
        if height > width:
            y0 = {0: 0, 2: height - size}.get(spatial, y0)
        else:
            x0 = {0: 0, 2: width - size}.get(spatial, x0)
        boxes[j] = (x0, y0, x0 + size, y0 + size)
    return boxes


def view_zero(sampling: VideoSampling) -> tuple[int, int, int]:
    """(clip, crop, frame) of view 0: the centre crop of frame ``T // 2`` of clip ``C // 2``.

    View 0 is the view AWT reads the text weights from; for an image it is the un-augmented picture
    (the model's own resize and centre crop). Here it is the nearest thing a video has: the centre
    crop (what that preprocessing makes of a frame) of a frame at the video's temporal middle. For
    an indexed stream, clip ``C // 2`` of an even ``C`` starts half-way (``delta * C/2 / C``) and is
    centred on the middle, and its frame ``T // 2`` is the first sampled past it; CoOp's UCF101 image
    benchmark classifies exactly such middle frames.
    """
    centre = spatial_indices(sampling.crops).index(1)
    return sampling.clips // 2, centre, sampling.frames // 2


def view_order(sampling: VideoSampling) -> np.ndarray:
    """(views,) positions in (clip, crop, frame) order, view 0 first and the others as they come:
    ``views[k] = natural[order[k]]``."""
    clip, crop, frame = view_zero(sampling)
    first = (clip * sampling.crops + crop) * sampling.frames + frame
    rest = [i for i in range(sampling.views) if i != first]
    return np.array([first] + rest, dtype=np.int64)
