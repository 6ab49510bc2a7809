"""Inputs of either kind: images and videos found together, and encoded in one stream, in input order.

An input is a video when it is a path with a video file's extension (:func:`awt.videos.is_video_path`);
anything else (an image path, a PIL image, bytes) is an image. Images go through
:func:`awt.views.encode_views` (view 0 and N random views), videos through
:func:`awt.video_views.encode_videos` (the protocol's frame crops); each kind has its own loader
workers, which run side by side, and :func:`encode_inputs` hands their batches on in the order of
the inputs, so results can be shown in input order as soon as they are ready. A batch holds one
kind: its features are one tensor, and an image's ``1 + N`` views and a video's are different counts.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

from . import defaults
from .images import IMAGE_EXTENSIONS, Decoding, ImageInput, find_images
from .video_sampling import VideoSampling
from .video_views import DEFAULT_SAMPLING, encode_videos
from .videos import VIDEO_EXTENSIONS, is_video_path
from .views import ViewFeatures, default_workers, encode_views


def is_video(item: ImageInput) -> bool:
    """Whether an input is read as a video: a path with a video extension."""
    return isinstance(item, (str, os.PathLike)) and is_video_path(item)


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand directories (recursively, sorted) into their image and video files; other inputs are
    kept as given, to fail with their reason when read (see :func:`awt.images.find_images`)."""
    return find_images(inputs, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)


def video_batch_size(batch_size: int, image_views: int, sampling: VideoSampling) -> int:
    """Videos per batch for a batch of ``batch_size`` images of ``image_views`` views each: about as
    many views (8 images x 51 views ~ 4 videos x 96), at least one video."""
    return max(1, round(batch_size * image_views / sampling.views))


def encode_inputs(
    backbone,
    items: Sequence[ImageInput],
    *,
    views: int = defaults.VIEWS,
    seed: int = defaults.SEED,
    batch_size: int = defaults.BATCH_SIZE,
    num_workers: int | None = None,
    decoding: Decoding = Decoding(),
    sampling: VideoSampling = DEFAULT_SAMPLING,
    video_view0_only: bool = False,
) -> Iterator[ViewFeatures]:
    """Encoded views of images and videos, batch by batch, in input order.

    Yields :class:`awt.views.ViewFeatures` of one kind each, whose ``indices`` and ``errors`` are
    positions in ``items``: images' features are (images, 1 + ``views``, dim), videos' (videos,
    ``sampling.views``, dim), or (videos, 1, dim) with ``video_view0_only``. The next batch is
    always the one holding the first input not handed on yet, so a consumer that waits for input
    order waits for nothing else. Videos are encoded in batches of :func:`video_batch_size`;
    ``decoding.max_pixels`` bounds a video's frames too.
    """
    videos = [i for i, item in enumerate(items) if is_video(item)]
    if not videos:
        yield from encode_views(backbone, items, views=views, seed=seed, batch_size=batch_size,
                                num_workers=num_workers, decoding=decoding)
        return
    images = [i for i, item in enumerate(items) if not is_video(item)]
    per_batch = video_batch_size(batch_size, views + 1, sampling)
    video_workers = default_workers(len(videos), per_batch) if num_workers is None else num_workers
    streams: list[tuple[list[int], Iterator[ViewFeatures]]] = [(videos, encode_videos(
        backbone, [items[i] for i in videos], sampling=sampling, batch_size=per_batch,
        num_workers=video_workers, max_pixels=decoding.max_pixels, view0_only=video_view0_only))]
    if images:
        streams.append((images, encode_views(backbone, [items[i] for i in images], views=views, seed=seed,
                                             batch_size=batch_size, num_workers=num_workers, decoding=decoding)))
    handed = [0] * len(streams)   # inputs of each stream handed on so far (its batches come in its order)
    try:
        while True:
            upcoming = [positions[handed[s]] if handed[s] < len(positions) else math.inf
                        for s, (positions, _) in enumerate(streams)]
            s = min(range(len(streams)), key=upcoming.__getitem__)
            if upcoming[s] == math.inf:
                return
            positions, stream = streams[s]
            batch = next(stream, None)
            if batch is None:   # a stream that ends early has nothing more to give
                handed[s] = len(positions)
                continue
            handed[s] += len(batch.indices) + len(batch.errors)
            yield ViewFeatures([positions[i] for i in batch.indices], batch.features,
                               [(positions[i], e) for i, e in batch.errors])
    finally:
        for _, stream in streams:
            stream.close()
