"""Stage 1, image side: an image set into the features of its views, batch by batch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from . import defaults
from .augment import cut_views
from .backbones import Backbone
from .errors import AWTError
from .images import Decoding, ImageInput
from .loading import to_device, view_loader

DEFAULT_VIEWS = defaults.VIEWS


@dataclass
class ViewFeatures:
    """Encoded views of the readable images of one loader batch."""

    indices: list[int]                  # positions in the input sequence
    features: torch.Tensor              # (images, 1 + views, dim), L2-normalised, on the backbone's device
    errors: list[tuple[int, AWTError]]  # (position, why) of unreadable inputs


def default_workers(images: int, batch_size: int) -> int:
    """Loader worker processes for ``images`` images: none for a single batch, else one per spare
    core up to 12."""
    return 0 if images <= batch_size else min(12, max(1, (os.cpu_count() or 2) - 1))


def encode_views(
    backbone: Backbone,
    images: Sequence[ImageInput],
    *,
    views: int = DEFAULT_VIEWS,
    seed: int = defaults.SEED,
    batch_size: int = defaults.BATCH_SIZE,
    num_workers: int | None = None,
    decoding: Decoding = Decoding(),
    ramp: bool = True,
) -> Iterator[ViewFeatures]:
    """Encode view 0 and ``views`` random views of each image, in input order, batch by batch.

    Images are decoded once in loader worker processes; the random crops of a whole batch are cut on
    the backbone's device. Each image's views are seeded by ``seed`` and its pixels, so its features
    do not depend on the batch, the order or the other images. With workers, each decodes and packs
    a quarter batch, and quarters are encoded as they come (an encoder's throughput hardly depends
    on the batch size, and the device starts sooner); the first ones are smaller still (1, 2, 4, ...).
    ``decoding`` says how files are read (:class:`~awt.images.Decoding`): by default images of more
    than its ``max_pixels`` are refused as possible decompression bombs, images are turned upright by
    their EXIF orientation, large JPEGs are decoded at a reduced size and the views' source is capped.
    ``ramp=False``: whole batches from the start (a server that has gathered a batch wants it at once).
    """
    if views < 0:
        raise ValueError(f"views must be >= 0, got {views}")
    if num_workers is None:
        num_workers = default_workers(len(images), batch_size)
    loader_batch = max(1, batch_size // 4) if num_workers > 0 else batch_size
    batches = view_loader(backbone, num_workers, decoding)(images, views, seed, loader_batch, ramp)
    for batch in to_device(batches, backbone.device):
        host = batch.host
        if not host.indices:
            yield ViewFeatures([], torch.empty(0, views + 1, 0), host.errors)
            continue
        pixels = batch.view0.to(backbone.device).unsqueeze(1)
        if batch.packed is not None:
            crops = cut_views(batch.packed, backbone.image_size, backbone.mean, backbone.std, backbone.device,
                              backbone.input_dtype)
            pixels = torch.cat([pixels.to(crops.dtype), crops], dim=1)
        n, v = pixels.shape[:2]
        features = backbone.encode_images(pixels.flatten(0, 1)).view(n, v, -1)
        yield ViewFeatures(host.indices, features, host.errors)
