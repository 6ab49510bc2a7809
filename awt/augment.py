"""Stage 1 of AWT, image side: the N random views of each image, reproducible and batched.

Crop boxes follow torchvision's ``RandomResizedCrop`` (area scale 0.08-1, aspect 3/4-4/3, ten tries,
then a centre crop) plus a horizontal flip with probability 1/2. They are drawn from a generator
seeded by the run's seed and the image's pixels, so an image always gets the same views whatever
batch it is in. All crops of a batch are then cut and resized in one ``roi_align`` call (bilinear,
averaging several samples per output pixel, which anti-aliases downscaling) on the model's device.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torchvision.ops import roi_align

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def image_seed(pixels: np.ndarray, seed: int) -> np.random.SeedSequence:
    """Seed for an image's views: the run's seed and a digest of its decoded pixels, (H, W, 3) uint8."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).data, digest_size=8, person=b"awt-view")
    digest.update(str(pixels.shape).encode())
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int.from_bytes(digest.digest(), "little")])


def sample_views(height: int, width: int, n: int, seed: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Crop boxes and flips of ``n`` random views.

    Returns:
        boxes (n, 4) float32 ``x0, y0, x1, y1`` in pixels, flips (n,) bool.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    area = height * width
    boxes = np.empty((n, 4), dtype=np.float32)
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for i in range(n):
        for _ in range(10):
            target = area * rng.uniform(*SCALE)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                y0 = int(rng.integers(0, height - h + 1))
                x0 = int(rng.integers(0, width - w + 1))
                break
        else:  # centre crop at the nearest allowed aspect ratio
            in_ratio = width / height
            if in_ratio < RATIO[0]:
                w, h = width, int(round(width / RATIO[0]))
            elif in_ratio > RATIO[1]:
                h, w = height, int(round(height * RATIO[1]))
            else:
                w, h = width, height
            y0, x0 = (height - h) // 2, (width - w) // 2
        boxes[i] = (x0, y0, x0 + w, y0 + h)
    flips = rng.random(n) < 0.5
    return boxes, flips


@dataclass
class PackedViews:
    """The host side of a batch's random views, ready to go to the device in one copy."""

    canvas: torch.Tensor   # (batch, 3, H_max, W_max) uint8, each image edge-padded (the loader pins it for CUDA)
    rois: torch.Tensor     # (batch * n, 5) float32: image index, x0, y0, x1, y1
    flips: torch.Tensor    # (batch * n,) bool
    batch: int
    n: int


def pack_views(images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], flips: Sequence[torch.Tensor]) -> PackedViews:
    """Gather a batch's images into one canvas with their crop boxes (host work, off the device's path).

    Args:
        images: per image a (3, H_i, W_i) uint8 tensor.
        boxes: per image (n, 4) pixel boxes; flips: per image (n,) bool.
    """
    batch, n = len(images), int(boxes[0].shape[0])
    # Rounded up so that pinned buffers of earlier batches can be reused (a fresh pinned
    # allocation can stall the device).
    max_h = -(-max(int(im.shape[1]) for im in images) // 64) * 64
    max_w = -(-max(int(im.shape[2]) for im in images) // 64) * 64
    canvas = torch.empty(batch, 3, max_h, max_w, dtype=torch.uint8)
    for i, im in enumerate(images):  # a copy per image; the crops themselves are one batched op
        h, w = int(im.shape[1]), int(im.shape[2])
        canvas[i, :, :h, :w] = im
        # Edge-replicate the padding: bilinear samples at a crop's border then see the image's own
        # edge pixels, exactly as when the image is cropped alone.
        canvas[i, :, :h, w:] = im[:, :, w - 1 :]
        canvas[i, :, h:, :] = canvas[i, :, h - 1 : h, :]
    index = torch.arange(batch, dtype=torch.float32).repeat_interleave(n).unsqueeze(1)
    rois = torch.cat([index, torch.cat([b.float() for b in boxes])], dim=1)
    return PackedViews(canvas, rois, torch.cat(list(flips)), batch, n)


def cut_views(packed: PackedViews, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
              device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cut, resize, flip and normalise every view of a packed batch in one ``roi_align`` call.

    The canvas is normalised before cropping: bilinear sampling is a convex combination, so this
    equals normalising the crops, on ten times fewer pixels.

    Returns:
        (batch, n, 3, height, width) normalised views on ``device``, float16 when ``dtype`` is
        (the model's input on the GPU), else float32.
    """
    work = torch.float16 if dtype == torch.float16 and device.type == "cuda" else torch.float32
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    canvas = ((packed.canvas.to(device, non_blocking=True).float() - m) / s).to(work)
    out = roi_align(canvas, packed.rois.to(device, work, non_blocking=True), output_size=size, spatial_scale=1.0,
                    sampling_ratio=-1, aligned=True)
    flipped = packed.flips.nonzero().squeeze(1).to(device, non_blocking=True)  # flips live on the host: no sync
    out[flipped] = out[flipped].flip(-1)
    return out.view(packed.batch, packed.n, 3, *size)


def crop_views(
    images: Sequence[torch.Tensor],
    boxes: Sequence[torch.Tensor],
    flips: Sequence[torch.Tensor],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    """``pack_views`` then ``cut_views``: (batch, n, 3, height, width) normalised views on ``device``."""
    if len(images) == 0 or boxes[0].shape[0] == 0:
        return torch.empty(len(images), 0 if not boxes else int(boxes[0].shape[0]), 3, *size, device=device)
    return cut_views(pack_views(images, boxes, flips), size, mean, std, device)
