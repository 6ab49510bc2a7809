"""Stage 1 of AWT, image side: the N random views of each image, reproducible and batched.

Crop boxes follow torchvision's ``RandomResizedCrop`` (area scale 0.08-1, aspect 3/4-4/3, ten tries,
then a centre crop) plus a horizontal flip with probability 1/2. They are drawn from a generator
seeded by the run's seed and the image's pixels, so an image always gets the same views whatever
batch it is in. All crops of a batch are then cut and resized together on the model's device, as
two batched matrix products: PIL's bilinear resampling (a triangle filter widened by the
downscaling factor, which anti-aliases) is separable, so each view is ``W_rows @ image @ W_cols^T``
with banded weight matrices that also crop and flip. The views equal torchvision's PIL
``RandomResizedCrop`` and flip to within PIL's 8-bit rounding (``roi_align`` differs by up to 11
levels of 255).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image

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
    """A batch's random views as a few tensors: built on the host, copied to the device in one go.

    Each image is resampled against its own padded size (``groups``), never the batch's largest:
    a matrix product's rounding depends on its inner dimension, so an image's views, and hence its
    features, then do not depend on the other images of its batch.
    """

    canvas: torch.Tensor   # (batch, 3, H_max, W_max) uint8, each image at the top left
    rois: torch.Tensor     # (batch * n, 5) float32: image index, x0, y0, x1, y1
    flips: torch.Tensor    # (batch * n,) bool
    batch: int
    n: int
    longest: tuple[float, float]  # the widest and the tallest crop, known on the host (no device sync)
    order: torch.Tensor = None    # (batch,) int64: the images sorted by padded size
    groups: tuple[tuple[int, int, int, int], ...] = ()  # (start, stop) in ``order``, padded (H, W)
    order_host: tuple[int, ...] = ()  # ``order`` as known on the host

    def pin_memory(self) -> "PackedViews":
        return replace(self, canvas=self.canvas.pin_memory(), rois=self.rois.pin_memory(),
                       flips=self.flips.pin_memory(), order=self.order.pin_memory())

    def to(self, device: torch.device, non_blocking: bool = False) -> "PackedViews":
        """The same views with their tensors on ``device`` (asynchronous from pinned memory)."""
        if self.canvas.device == device:
            return self
        return replace(self, canvas=self.canvas.to(device, non_blocking=non_blocking),
                       rois=self.rois.to(device, non_blocking=non_blocking),
                       flips=self.flips.to(device, non_blocking=non_blocking),
                       order=self.order.to(device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Tell the CUDA allocator that ``stream`` uses these tensors (they were copied on another)."""
        for t in (self.canvas, self.rois, self.flips, self.order):
            t.record_stream(stream)


_PAD = 64  # canvas sides are rounded up to this: pinned buffers get reused, images share groups


def _padded(size: int) -> int:
    return -(-size // _PAD) * _PAD


def pack_views(images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], flips: Sequence[torch.Tensor]) -> PackedViews:
    """Gather a batch's images into one canvas with their crop boxes (host work, off the device's path).

    Args:
        images: per image a (3, H_i, W_i) uint8 tensor.
        boxes: per image (n, 4) pixel boxes; flips: per image (n,) bool.
    """
    batch, n = len(images), int(boxes[0].shape[0])
    # Rounded up so that pinned buffers of earlier batches can be reused (a fresh pinned
    # allocation can stall the device). The padding is never sampled: weights stop at the crop.
    sizes = [(_padded(int(im.shape[1])), _padded(int(im.shape[2]))) for im in images]
    max_h, max_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    canvas = torch.zeros(batch, 3, max_h, max_w, dtype=torch.uint8)
    for i, im in enumerate(images):  # a copy per image; the crops themselves are batched
        canvas[i, :, : im.shape[1], : im.shape[2]] = im
    index = torch.arange(batch, dtype=torch.float32).repeat_interleave(n).unsqueeze(1)
    xyxy = torch.cat([b.float() for b in boxes])
    extents = (xyxy[:, 2:] - xyxy[:, :2]).amax(0) if len(xyxy) else torch.zeros(2)
    order = sorted(range(batch), key=lambda i: sizes[i])
    groups, start = [], 0
    for stop in range(1, batch + 1):
        if stop == batch or sizes[order[stop]] != sizes[order[start]]:
            groups.append((start, stop, *sizes[order[start]]))
            start = stop
    return PackedViews(canvas, torch.cat([index, xyxy], dim=1), torch.cat(list(flips)), batch, n,
                       (float(extents[0]), float(extents[1])), torch.tensor(order, dtype=torch.long),
                       tuple(groups), tuple(order))


def resize_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, extent: int, flip: torch.Tensor | None = None,
                   max_length: float | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """PIL's bilinear resampling of the pixels ``[start, start + length)`` of an axis to ``out_size``.

    Row ``i`` holds the triangle filter centred on output pixel ``i`` (widened by the downscaling
    factor, as PIL does), cut to the span and normalised; ``flip`` reverses the output.

    Args:
        start, length: (n,) span of each view, in pixels of an axis of ``extent`` pixels.
        max_length: an upper bound on ``length`` known on the host (saves a device sync).
    Returns:
        (n, out_size, extent) weights of ``dtype`` (computed in float32), at most
        ``2 * ceil(support) + 2`` non-zero per row.
    """
    device = start.device
    if max_length is None:
        max_length = float(length.max())
    taps = 2 * math.ceil(max(max_length / out_size, 1.0)) + 2
    scale = (length / out_size)[:, None]
    support = scale.clamp(min=1.0)
    pos = torch.arange(out_size, device=device, dtype=torch.float32) + 0.5
    if flip is not None:
        pos = torch.where(flip[:, None], out_size - pos, pos)
    centre = start[:, None] + pos * scale                                            # (n, out)
    first = torch.floor(centre - support + 0.5)
    index = first[..., None] + torch.arange(taps, device=device, dtype=torch.float32)  # (n, out, taps)
    weight = (1.0 - (index + 0.5 - centre[..., None]).abs_() / support[..., None]).clamp_(min=0.0)
    weight *= (index >= start[:, None, None]) & (index < (start + length)[:, None, None])
    # Summed in float64, exactly for these few float32 terms: the batch's longest crop sets the number
    # of taps, and a float32 sum's rounding would depend on it (and so on the other images).
    weight /= weight.sum(-1, keepdim=True, dtype=torch.float64).float()
    # Taps outside the axis carry zero weight, so clamping their index adds nothing anywhere.
    dense = torch.zeros(start.shape[0], out_size, extent, device=device, dtype=dtype)
    return dense.scatter_add_(2, index.clamp_(0, extent - 1).long(), weight.to(dtype))


# Elements of resampling weights and intermediates held at once.
_RESAMPLE_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 28}


@functools.lru_cache(maxsize=16)
def _normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of 0-255 pixels, (1, 3, 1, 1) on ``device``: made once, since a
    copy from pageable host memory would synchronise the device on every batch."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return m.to(device), s.to(device)


def cut_views(packed: PackedViews, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
              device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cut, resize, flip and normalise every view of a packed batch, as batched matrix products.

    The canvas is normalised before resampling: the weights of each output pixel sum to one, so
    this equals normalising the views, on ten times fewer pixels. Nothing here waits for the
    device: with ``packed`` already there (see :func:`awt.loading.to_device`), the host only queues work.

    Returns:
        (batch, n, 3, height, width) normalised views on ``device`` (a permuted view), float16
        when ``dtype`` is (the model's input on the GPU), else float32.
    """
    work = torch.float16 if dtype == torch.float16 and device.type == "cuda" else torch.float32
    batch, n, (h, w) = packed.batch, packed.n, size
    packed = packed.to(device, non_blocking=True)
    m, s = _normaliser(tuple(mean), tuple(std), device)
    canvas = packed.canvas.float().sub_(m).div_(s).to(work)
    longest_x, longest_y = packed.longest
    out = torch.empty(batch * n, h * 3, w, device=device, dtype=work)
    offsets = torch.arange(n, device=device)
    for first, stop, height, width in packed.groups:
        # Chunks of images bound the weights and the intermediate.
        step = max(1, _RESAMPLE_ELEMENTS.get(device.type, 1 << 26) // (n * (h * height + w * width + h * 3 * width)))
        for i in range(first, stop, step):
            j = min(i + step, stop)
            members = packed.order_host[i:j]
            if members == tuple(range(members[0], members[0] + len(members))):  # a run: no gathers
                images = slice(members[0], members[0] + len(members))
                views = slice(images.start * n, images.stop * n)
                x, rois, flips = canvas[images], packed.rois[views], packed.flips[views]
            else:
                images = packed.order[i:j]
                views = (images[:, None] * n + offsets).flatten()
                x, rois, flips = canvas[images], packed.rois[views], packed.flips[views]
            x0, y0, x1, y1 = rois[:, 1:].unbind(1)
            rows = resize_weights(y0, y1 - y0, h, height, max_length=longest_y, dtype=work)      # (views, h, H)
            cols = resize_weights(x0, x1 - x0, w, width, flips, longest_x, work)                # (views, w, W)
            k = j - i
            x = x[:, :, :height, :width].permute(0, 2, 1, 3).reshape(k, height, 3 * width)    # (images, H, 3 W)
            y = torch.bmm(rows.view(k, n * h, height), x)                                       # (images, n h, 3 W)
            y = y.view(k * n, h * 3, width)
            if isinstance(views, slice):
                torch.bmm(y, cols.transpose(1, 2), out=out[views])
            else:
                out.index_copy_(0, views, torch.bmm(y, cols.transpose(1, 2)))
    return out.view(batch, n, h, 3, w).permute(0, 1, 3, 2, 4)


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


def cap_size(image: Image.Image, max_short_side: int) -> Image.Image:
    """Shrink very large images so their shorter side is ``max_short_side``.

    The smallest random crop (8% of the area) still covers ``0.28 * 4 > 1`` output sizes when the
    cap is four output sizes, so no crop loses resolution; it bounds decode-to-device traffic.
    """
    w, h = image.size
    short = min(w, h)
    if short <= max_short_side:
        return image
    scale = max_short_side / short
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)


def random_views(image: Image.Image, n: int, seed: int, max_short_side: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recipe of an image's random views: their source (``image`` shrunk by :func:`cap_size`
    to ``max_short_side``, when given), and ``n`` crop boxes and flips drawn from ``seed`` and the
    source's pixels (:func:`sample_views`, :func:`image_seed`).

    Returns:
        pixels (3, H, W) uint8, boxes (n, 4) float32 ``x0, y0, x1, y1`` in those pixels, flips (n,) bool.
    """
    if max_short_side is not None:
        image = cap_size(image, max_short_side)
    array = np.asarray(image)
    boxes, flips = sample_views(array.shape[0], array.shape[1], n, image_seed(array, seed))
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return pixels, torch.from_numpy(boxes), torch.from_numpy(flips)
