"""Stage 1, video side: videos into the features of their views, batch by batch.

A video's views are the protocol's ``clips x crops x frames`` frame crops (:mod:`awt.video_sampling`),
each encoded by the image encoder as an image view is. Loader workers decode the sampled frames
(scaled so that their shorter side is the crop size) and pack them into one canvas with a box per
crop; :func:`awt.augment.cut_views` then cuts and normalises every crop of the batch on the device
in one go (a crop of the crop size is cut exactly; it is resized only for an encoder whose input is
not square). View 0 comes first (:func:`awt.video_sampling.view_zero`), the others follow in
(clip, crop, frame) order. Nothing is random: a video's views depend on the video alone.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import torch

from .augment import PackedViews, cut_views
from .backbones import Backbone
from .loading import WorkerLoader, loader_pool, to_device
from .video_sampling import VideoSampling, view_order
from .videos import DEFAULT_MAX_PIXELS, VideoSource, collate_videos
from .views import ViewFeatures, default_workers

DEFAULT_SAMPLING = VideoSampling()
VIDEO_BATCH_SIZE = 4   # videos per batch: 4 x 96 views, about the image side's 8 x 51


def crop_size(image_size: tuple[int, int]) -> int:
    """The protocol's crop size for an encoder input of (height, width): its larger side."""
    return max(image_size)


def arrange_views(crops: torch.Tensor, sampling: VideoSampling) -> torch.Tensor:
    """Per-frame crops into per-video views.

    Args:
        crops: (videos * clips * frames, crops, 3, h, w), frames in (clip, frame) order.
    Returns:
        (videos, views, 3, h, w), view 0 first (:func:`awt.video_sampling.view_order`).
    """
    c, t, k = sampling.clips, sampling.frames, sampling.crops
    videos = crops.shape[0] // (c * t)
    natural = crops.reshape(videos, c, t, k, *crops.shape[2:]).transpose(2, 3).reshape(videos, c * k * t, *crops.shape[2:])
    return natural[:, torch.from_numpy(view_order(sampling)).to(crops.device)]


def cut_video_views(packed: PackedViews, sampling: VideoSampling, size: tuple[int, int], mean: Sequence[float],
                    std: Sequence[float], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every view of a packed batch of videos (:func:`awt.videos.collate_videos`): (videos, views,
    3, height, width) normalised, on ``device``."""
    return arrange_views(cut_views(packed, size, mean, std, device, dtype), sampling)


def video_loader(backbone: Backbone, num_workers: int, sampling: VideoSampling = DEFAULT_SAMPLING,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> WorkerLoader:
    """``backbone``'s video loader: ``num_workers`` processes that decode the frames ``sampling``
    picks (scaled to the backbone's crop size), refusing frames of more than ``max_pixels``; started
    on first use and kept while the backbone lives, beside its image loaders
    (:func:`awt.loading.loader_pool`). Its batches are :class:`awt.loading.HostBatch` (``view0``
    None, see :func:`awt.videos.collate_videos`)."""
    size = crop_size(backbone.image_size)
    return loader_pool(backbone, ("videos", num_workers, sampling, max_pixels), lambda: WorkerLoader(
        VideoSource(size, sampling, max_pixels), collate_videos, num_workers,
        pin_memory=backbone.device.type == "cuda", prefetch_factor=2))


def encode_videos(
    backbone: Backbone,
    videos: Sequence[str | os.PathLike],
    *,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    batch_size: int = VIDEO_BATCH_SIZE,
    num_workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    view0_only: bool = False,
) -> Iterator[ViewFeatures]:
    """Encode the views of each video, in input order, batch by batch.

    Videos are decoded in loader workers, a quarter of ``batch_size`` videos per worker task (all of
    them without workers), and encoded as they come. Yields :class:`awt.views.ViewFeatures` whose
    ``features`` are (videos, views, dim), view 0 first
    (``view0_only``: (videos, 1, dim), view 0 alone, for a method that reads nothing else);
    unreadable videos are in ``errors`` as (position, the error, naming the video).
    """
    if num_workers is None:
        num_workers = default_workers(len(videos), batch_size)
    keys = [(i, os.fspath(v)) for i, v in enumerate(videos)]
    # with workers, each decodes a quarter batch, encoded as it comes (as for images): the frames in
    # flight stay few, and the encoder starts sooner
    size = max(1, batch_size // 4) if num_workers > 0 else max(1, batch_size)
    batches = video_loader(backbone, num_workers, sampling, max_pixels).run(
        [keys[i : i + size] for i in range(0, len(keys), size)])
    for batch in to_device(batches, backbone.device):
        host = batch.host
        if not host.indices:
            yield ViewFeatures([], torch.empty(0, 1 if view0_only else sampling.views, 0), host.errors)
            continue
        pixels = cut_video_views(batch.packed, sampling, backbone.image_size, backbone.mean, backbone.std,
                                 backbone.device, backbone.input_dtype)
        if view0_only:
            pixels = pixels[:, :1]
        n, v = pixels.shape[:2]
        features = backbone.encode_images(pixels.flatten(0, 1)).view(n, v, -1)
        yield ViewFeatures(host.indices, features, host.errors)
