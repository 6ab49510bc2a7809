"""Video inputs: finding video files, probing them, and decoding the frames that the test-time
sampling picks (:mod:`awt.video_sampling`), in loader workers.

Decoding uses PyAV (FFmpeg, carried by its wheels). Only the sampled clips are decoded: the decoder
seeks to each clip's window and stops after it, and of the frames it passes only the sampled ones
are converted to RGB and scaled (short side to the crop size) at once, so memory does not grow with
the video's length. A stream without a frame count (mkv, webm) is counted from its packets first
(demuxing, no decoding). Frames are turned upright by the stream's rotation metadata, and a video
gets :data:`DECODE_SECONDS` of demuxing and decoding at most.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
import torch

from . import defaults
from .augment import pack_views
from .errors import AWTError
from .images import find_images
from .loading import HostBatch
from .video_sampling import (SEEK_MARGIN, VideoSampling, counted_indices, crop_boxes, indexed_windows, scaled_size,
                             window_positions)

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp"}
DEFAULT_MAX_PIXELS = defaults.MAX_PIXELS


class VideoError(AWTError):
    """An input video that cannot be read."""


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether a path has a video file's extension."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def find_videos(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand directories (recursively, sorted, links to directories not followed) into their video
    files; other inputs are kept as given, to fail with their reason when read (see :func:`sample_video`)."""
    return find_images(inputs, VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header (and, for a stream without a frame count, its packets) tells."""

    width: int
    height: int
    fps: float                # the stream's average frame rate
    frames: int               # frame count: reported by an indexed stream, counted otherwise
    duration: float           # seconds
    indexed: bool             # the stream reports its frame count and duration (mp4, mov, avi)
    codec: str


@dataclass
class SampledFrames:
    """A video's sampled frames, each scaled so that its shorter side is the crop size."""

    frames: list[torch.Tensor]   # clips * frames, (clip, frame) order, each (3, h, w) uint8
    boxes: torch.Tensor          # (clips * frames, crops, 4) float32 x0, y0, x1, y1 in its frame
    times: np.ndarray            # (clips, frames) presentation time of each sampled frame, seconds
    info: VideoInfo


class _Fallback(Exception):
    """An indexed stream whose clip windows cannot be used as they are: count its frames instead."""


def _reason(error: BaseException) -> str:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return reason[:1].lower() + reason[1:]


def _open(path: str) -> av.container.InputContainer:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise VideoError(f"{path}: {'broken symbolic link (no such file)' if broken else 'no such file'}") from None
    except OSError as e:
        raise VideoError(f"{path}: cannot open: {_reason(e)}") from None
    if stat.S_ISDIR(mode):
        raise VideoError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):  # opening a FIFO would wait for a writer
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise VideoError(f"{path}: is {kind}, not a video file")
    if os.stat(path).st_size == 0:
        raise VideoError(f"{path}: an empty file (0 bytes), not a video")
    try:
        return av.open(path, mode="r")
    except av.error.InvalidDataError:
        raise VideoError(f"{path}: not a video, or a truncated or corrupt one (FFmpeg finds no valid data)") from None
    except av.error.EOFError:
        raise VideoError(f"{path}: ends before any video data (an empty or truncated file)") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: cannot open: {_reason(e)}") from None


def _stream(container, path: str, max_pixels: int | None) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if max_pixels is not None and width * height > max_pixels:
        raise VideoError(f"{path}: {width} x {height} pixels per frame is more than the limit of {max_pixels:,} pixels",
                         setting="max_pixels", kind="limit", hint="raise the limit with {max_pixels}",
                         pixels=width * height, limit=max_pixels)
    if not (stream.average_rate or stream.guessed_rate):
        raise VideoError(f"{path}: the video stream has no frame rate")
    return stream


def _info(stream, frames: int, indexed: bool) -> VideoInfo:
    fps = float(stream.average_rate or stream.guessed_rate)
    if indexed:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = frames / fps
    return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, frames, seconds, indexed,
                     stream.codec_context.name)


def _is_indexed(stream) -> bool:
    return bool(stream.frames and stream.frames > 0 and stream.duration and stream.duration > 0)


# Seconds of demuxing and decoding one video may take: past them, a damaged or pathological file
# whose decoder crawls is that video's error, not a stalled run (checked between packets and frames).
DECODE_SECONDS = 300.0
_clock = threading.local()


class _TooSlow(Exception):
    """The video's time (:data:`DECODE_SECONDS`) ran out."""


def _in_time(items: Iterable) -> Iterator:
    """``items`` until the current video's time runs out (then :class:`_TooSlow`)."""
    for item in items:
        if time.monotonic() > getattr(_clock, "deadline", math.inf):
            raise _TooSlow
        yield item


def _packet_times(container, stream) -> tuple[int, np.ndarray | None]:
    """Frame count of a stream from its packets, and their sorted timestamps (None if some lack one)."""
    stamps, missing = [], False
    for packet in _in_time(container.demux(stream)):
        if packet.size:
            missing |= packet.pts is None
            stamps.append(packet.pts)
    if missing:
        return len(stamps), None
    unique = np.unique(np.array(stamps, dtype=np.int64))  # frames are keyed by timestamp
    return len(unique), unique


def probe_video(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Size, frame rate, frame count and duration of a video; raises VideoError with the reason."""
    path = os.fspath(path)
    with _video_stream(path, max_pixels, "cannot read: {}") as (container, stream):
        if _is_indexed(stream):
            return _info(stream, stream.frames, True)
        return _info(stream, _packet_times(container, stream)[0], False)


@contextlib.contextmanager
def _video_stream(path: str, max_pixels: int | None, failed: str) -> Iterator[tuple]:
    """(container, video stream) of ``path``, opened with the time limit started; FFmpeg's errors,
    running out of memory and the time limit raised as one-line VideoErrors (``failed`` words FFmpeg's)."""
    _clock.deadline = time.monotonic() + DECODE_SECONDS
    container = _open(path)
    with container:
        try:
            yield container, _stream(container, path, max_pixels)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: " + failed.format(_reason(e))) from None
        except MemoryError:
            raise VideoError(f"{path}: out of memory while decoding") from None
        except _TooSlow:
            raise _too_slow(path) from None


def _too_slow(path: str) -> VideoError:
    return VideoError(f"{path}: decoding took longer than {DECODE_SECONDS:g} s, the limit per video (a damaged or "
                      "pathological file?)", kind="limit", limit=DECODE_SECONDS)


def _to_rgb(frame: av.VideoFrame, size: int) -> torch.Tensor:
    """A decoded frame as (3, h, w) uint8, turned as its display matrix says (a phone's rotation
    metadata, as EXIF for a photo; Open-VCLIP ignores it), its shorter side scaled to ``size`` as the
    protocol does (bilinear, no antialiasing; rounded to 8 bits)."""
    stored = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4   # counterclockwise quarter turns, as FFmpeg displays it
    array = torch.from_numpy(np.ascontiguousarray(np.rot90(stored, turns)) if turns else stored)
    h, w = scaled_size(array.shape[0], array.shape[1], size)
    if (h, w) == tuple(array.shape[:2]):
        return array.permute(2, 0, 1).contiguous()
    pixels = array.float().permute(2, 0, 1)[None]  # channels last: a faster resize than a strided copy first
    scaled = torch.nn.functional.interpolate(pixels, size=(h, w), mode="bilinear", align_corners=False)
    return scaled[0].round_().clamp_(0, 255).to(torch.uint8)


# Frames further ahead than this are reached by a seek; nearer ones by decoding on (a seek lands on
# the keyframe before its target, often seconds earlier, so short gaps cost less to decode through).
SEEK_GAP_SECONDS = 5.0


def _frames(container, stream, next_needed) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order, from a seek to before ``next_needed()`` (a timestamp,
    ``-inf`` to go on decoding, None when done), seeking ahead again over long gaps. A seek that
    lands past its target is redone from the start of the stream."""
    gap = SEEK_GAP_SECONDS / float(stream.time_base)
    target, from_start = next_needed(), False
    while target is not None:
        sought, seek_to = target, 0 if from_start else max(int(target) - SEEK_MARGIN, 0)
        container.seek(seek_to, backward=True, any_frame=False, stream=stream)
        first, jumped = True, False
        for frame in _in_time(container.decode(stream)):
            if frame.pts is None:
                raise _Fallback
            if first and frame.pts > target and seek_to > 0:
                from_start = jumped = True  # the seek overshot: decode from the start instead
                break
            first = False
            yield frame
            target = next_needed()
            if target is None:
                return
            if not from_start and target - frame.pts > gap and target != sought:  # never twice to one target
                jumped = True
                break
        if not jumped:
            return  # the end of the stream


def _indexed_clips(container, stream, windows: list[tuple[int, int]], positions: np.ndarray, size: int) -> list:
    """The clips of an indexed stream, in one forward pass: clip ``w`` takes the frames stamped
    within ``windows[w]`` and the one after; of these, those at ``positions`` (clamped to the last)
    are kept, as (pixels, seconds)."""
    n = len(windows)
    count, last, done, kept = [0] * n, [None] * n, [False] * n, [dict() for _ in range(n)]
    wanted = set(positions.tolist())

    def next_needed():
        if all(done):
            return None
        w = done.index(False)
        return -math.inf if count[w] else windows[w][0]   # windows open in order (their starts ascend)

    for frame in _frames(container, stream, next_needed):
        pixels = None
        for w, (start, end) in enumerate(windows):
            if done[w]:
                continue
            if frame.pts < start:
                break
            if count[w] in wanted:
                pixels = _to_rgb(frame, size) if pixels is None else pixels
                kept[w][count[w]] = (pixels, float(frame.time))
            last[w], count[w] = frame, count[w] + 1
            done[w] = frame.pts > end
    clips = []
    for w in range(n):
        if count[w] == 0:
            raise _Fallback
        tail = kept[w].get(count[w] - 1) or (_to_rgb(last[w], size), float(last[w].time))
        clips += [kept[w][p] if p < count[w] - 1 else tail for p in positions.tolist()]
    return clips


def _counted_clips(path: str, container, stream, stamps: np.ndarray | None, indices: np.ndarray, size: int) -> list:
    """The frames at ``indices`` (clips, frames) of a counted stream, in one forward pass: found by
    their timestamps, or by their position from the start when the packets carry none."""
    wanted = sorted(set(indices.reshape(-1).tolist()))
    kept: dict[int, tuple[torch.Tensor, float]] = {}
    if stamps is not None:
        by_pts = {int(stamps[i]): i for i in wanted}
        pending = sorted(by_pts)

        def next_needed():
            while pending and pending[0] in kept_pts:
                pending.pop(0)
            return pending[0] if pending else None

        kept_pts: set[int] = set()
        for frame in _frames(container, stream, next_needed):
            if frame.pts in by_pts:
                kept[by_pts[frame.pts]] = (_to_rgb(frame, size), float(frame.time))
                kept_pts.add(frame.pts)
            elif pending and frame.pts > pending[0]:
                break  # a wanted timestamp was passed without its frame
    else:
        container.seek(0, backward=True, any_frame=False, stream=stream)
        for position, frame in enumerate(_in_time(container.decode(stream))):
            if position in wanted:
                kept[position] = (_to_rgb(frame, size), float(frame.time or 0.0))
            if position >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in kept]
    if missing:
        total = len(stamps) if stamps is not None else "its"
        raise VideoError(f"{path}: cannot decode frame {missing[0] + 1} of {total} (a truncated or corrupt video?)")
    return [kept[i] for i in indices.reshape(-1).tolist()]


def sample_video(path: str | os.PathLike, sampling: VideoSampling, size: int,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SampledFrames:
    """Decode the frames of a video's views, scaled to a shorter side of ``size``, with their crop
    boxes. Raises VideoError with the reason (one line)."""
    path = os.fspath(path)
    with _video_stream(path, max_pixels, "cannot decode: {} (a truncated or corrupt video?)") as (container, stream):
        picked = None
        if _is_indexed(stream):
            fps = float(stream.average_rate or stream.guessed_rate)
            positions = window_positions(sampling, fps)
            try:
                windows = indexed_windows(sampling, stream.frames, stream.duration, fps)
                picked = _indexed_clips(container, stream, windows, positions, size)
                info = _info(stream, stream.frames, True)
            except _Fallback:
                container.seek(0, backward=True, any_frame=False, stream=stream)
        if picked is None:
            count, stamps = _packet_times(container, stream)
            if count == 0:
                raise VideoError(f"{path}: has no video frames")
            if _is_indexed(stream) and stream.frames - count > max(1, stream.frames // 100):
                # the index survived the cut: sampling the frames left would pass a fragment for the video
                raise VideoError(f"{path}: {count} of the {stream.frames} frames its index lists are in the file "
                                 "(a truncated video?)")
            info = _info(stream, count, False)
            try:
                picked = _counted_clips(path, container, stream, stamps, counted_indices(sampling, count, info.fps),
                                        size)
            except _Fallback:
                raise VideoError(f"{path}: decoded frames without timestamps") from None
    frames = [pixels for pixels, _ in picked]
    boxes = np.stack([crop_boxes(f.shape[1], f.shape[2], size, sampling.crops) for f in frames])
    times = np.array([t for _, t in picked]).reshape(sampling.clips, sampling.frames)
    return SampledFrames(frames, torch.from_numpy(boxes), times, info)


@dataclass
class VideoSample:
    """What a loader worker hands over for one video."""

    index: int
    frames: list[torch.Tensor] | None = None   # clips * frames, each (3, h, w) uint8
    boxes: torch.Tensor | None = None          # (clips * frames, crops, 4)
    error: AWTError | None = None              # why it cannot be read (its message names the input)


class VideoSource(torch.utils.data.Dataset):
    """Decodes a video's sampled frames in a loader worker. Indexed by keys ``(position, path)``:
    the paths travel with the indices, so one set of workers serves any number of video lists."""

    def __init__(self, size: int, sampling: VideoSampling = VideoSampling(),
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.size = size
        self.sampling = sampling
        self.max_pixels = max_pixels

    def __getitem__(self, key: tuple[int, str | os.PathLike]) -> VideoSample:
        index, path = key
        try:
            sampled = sample_video(path, self.sampling, self.size, self.max_pixels)
        except VideoError as e:
            return VideoSample(index, error=e)
        except Exception as e:  # a decoder's surprise fails its own video, not the run
            return VideoSample(index, error=VideoError(f"{os.fspath(path)}: cannot decode: {type(e).__name__}: {e}"))
        return VideoSample(index, sampled.frames, sampled.boxes)


def collate_videos(samples: list[VideoSample]) -> HostBatch:
    """Pack the frames of a batch's readable videos into one canvas, each frame an image with one
    box per crop (no flips): ``packed.batch`` is videos x clips x frames, ``packed.n`` the crops."""
    good = [s for s in samples if s.error is None]
    errors = [(s.index, s.error) for s in samples if s.error is not None]
    if not good:
        return HostBatch([], errors, None, None)
    frames = [f for s in good for f in s.frames]
    boxes = [b for s in good for b in s.boxes]
    flips = [torch.zeros(b.shape[0], dtype=torch.bool) for b in boxes]
    return HostBatch([s.index for s in good], errors, None, pack_views(frames, boxes, flips))
