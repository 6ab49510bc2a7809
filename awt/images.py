"""Image inputs: finding files, decoding them once, and the per-image work done in loader workers."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .augment import PackedViews, image_seed, pack_views, sample_views
from .errors import AWTError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ImageInput = Union[str, os.PathLike, Image.Image]


class ImageError(AWTError):
    """An input image that cannot be read."""


def find_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand directories (recursively, sorted) into their image files; files are kept as given,
    missing paths too (they fail, with their reason, when loaded)."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            found.append(str(item))
    return found


def load_image(source: ImageInput) -> Image.Image:
    """Decode an image fully, upright (EXIF orientation), as RGB. Raises ImageError with the reason."""
    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source).convert("RGB")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return ImageOps.exif_transpose(im).convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason:
            reason = "truncated image file"
        raise ImageError(f"{path}: cannot decode: {reason}") from None


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


@dataclass
class ImageSample:
    """What a loader worker hands over for one image."""

    index: int
    view0: torch.Tensor | None = None    # (3, height, width) normalised, the model's own preprocessing
    pixels: torch.Tensor | None = None   # (3, H, W) uint8, source of the random views
    boxes: torch.Tensor | None = None    # (views - 1, 4)
    flips: torch.Tensor | None = None    # (views - 1,)
    error: str | None = None


class ViewSource(torch.utils.data.Dataset):
    """Decodes an image once and prepares its views, in a loader worker.

    Indexed by keys ``(position, item, random views, seed)``: the items travel with the indices,
    so one set of worker processes serves any number of image lists.
    """

    def __init__(self, preprocess: Callable, max_short_side: int):
        self.preprocess = preprocess
        self.max_short_side = max_short_side

    def __getitem__(self, key: tuple[int, ImageInput, int, int]) -> ImageSample:
        index, item, n_random, seed = key
        try:
            image = load_image(item)
        except ImageError as e:
            return ImageSample(index=index, error=str(e))
        view0 = self.preprocess(image)
        if n_random == 0:
            return ImageSample(index=index, view0=view0)
        image = cap_size(image, self.max_short_side)
        array = np.asarray(image)
        boxes, flips = sample_views(array.shape[0], array.shape[1], n_random, image_seed(array, seed))
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        return ImageSample(index=index, view0=view0, pixels=pixels, boxes=torch.from_numpy(boxes), flips=torch.from_numpy(flips))


class _Requests(torch.utils.data.Sampler):
    """The batches of keys of the current call (a batch sampler that is refilled per call)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple]] = []

    def __iter__(self) -> Iterator[list[tuple]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batch_sizes(total: int, batch_size: int, ramp: bool) -> list[int]:
    """Batch sizes for ``total`` images: ``batch_size`` each, after 1, 2, 4, ... when ``ramp``
    (parallel workers then hand over the first images within one image's decoding time)."""
    sizes, done, size = [], 0, 1 if ramp else batch_size
    while done < total:
        sizes.append(min(size, batch_size, total - done))
        done += sizes[-1]
        size *= 2
    return sizes


class ViewLoader:
    """Loader workers that decode images and pack their views, started once and kept.

    A DataLoader with persistent workers over a :class:`ViewSource`, its batch sampler refilled
    for each call: on a GPU the workers' start-up is the largest fixed cost of a call, and a
    classifier or a benchmark sweep pays it once. Batches ramp up in size (see :func:`batch_sizes`).
    """

    def __init__(self, preprocess: Callable, max_short_side: int, num_workers: int, pin_memory: bool,
                 persistent: bool = True):
        self.num_workers = num_workers
        self._requests = _Requests()
        self._busy = False
        self._args = (preprocess, max_short_side, num_workers, pin_memory)
        self._persistent = persistent and num_workers > 0
        self._loader = self._start()

    def _start(self) -> torch.utils.data.DataLoader:
        preprocess, max_short_side, num_workers, pin_memory = self._args
        return torch.utils.data.DataLoader(
            ViewSource(preprocess, max_short_side), batch_sampler=self._requests, num_workers=num_workers,
            collate_fn=collate_views, pin_memory=pin_memory, persistent_workers=self._persistent,
            prefetch_factor=4 if num_workers else None,
        )

    def __call__(self, items: Sequence[ImageInput], n_random: int, seed: int, batch_size: int) -> Iterator["HostBatch"]:
        """Host batches of ``items`` in order: (indices, errors, view 0, packed random views)."""
        if self._busy:  # a call still open (an unfinished generator): serve this one apart
            yield from ViewLoader(*self._args, persistent=False)(items, n_random, seed, batch_size)
            return
        keys = [(i, item, n_random, seed) for i, item in enumerate(items)]
        start, batches = 0, []
        for size in batch_sizes(len(keys), max(1, batch_size), ramp=self.num_workers > 0):
            batches.append(keys[start : start + size])
            start += size
        self._busy = True
        try:
            self._requests.batches = batches
            yield from self._loader
        except Exception:
            self._loader = self._start()  # a worker may have died: the next call starts afresh
            raise
        finally:
            self._busy = False

    def worker_pids(self) -> list[int]:
        """Process ids of the running worker processes (none before the first call, or without workers)."""
        iterator = getattr(self._loader, "_iterator", None)
        return sorted(w.pid for w in getattr(iterator, "_workers", []) or [])


@dataclass
class HostBatch:
    """A loader batch as it leaves the worker: a few tensors rather than a few per image."""

    indices: list[int]                  # positions of the readable images
    errors: list[tuple[int, str]]       # (position, reason) of the unreadable ones
    view0: torch.Tensor | None          # (images, 3, height, width) normalised
    packed: PackedViews | None          # their random views' canvas and boxes

    def pin_memory(self) -> "HostBatch":  # called by the DataLoader's pinning thread
        self.view0 = None if self.view0 is None else self.view0.pin_memory()
        self.packed = None if self.packed is None else self.packed.pin_memory()
        return self


def collate_views(samples: list[ImageSample]) -> HostBatch:
    """Stack view 0 and pack the random views' sources in the worker, off the main process."""
    good = [s for s in samples if s.error is None]
    view0 = torch.stack([s.view0 for s in good]) if good else None
    packed = None
    if good and good[0].pixels is not None:
        packed = pack_views([s.pixels for s in good], [s.boxes for s in good], [s.flips for s in good])
    return HostBatch([s.index for s in good], [(s.index, s.error) for s in samples if s.error is not None], view0, packed)


@dataclass
class DeviceBatch:
    """A host batch whose tensors are on the device (or still on the host, for the CPU)."""

    host: HostBatch
    view0: torch.Tensor | None          # (images, 3, height, width)
    packed: PackedViews | None          # the random views' canvas, boxes and flips


def to_device(batches: Iterator[HostBatch], device: torch.device) -> Iterator[DeviceBatch]:
    """Copy host batches to ``device`` one batch ahead, on a side CUDA stream.

    The copies then overlap the device's work on the batch before, as timm's PrefetchLoader does;
    each batch waits for its own copies only (an event), never for a later batch's.
    """
    if device.type != "cuda":
        for host in batches:
            yield DeviceBatch(host, host.view0, host.packed)
        return
    side = torch.cuda.Stream(device)
    ahead = None
    for host in batches:
        with torch.cuda.stream(side):
            view0 = None if host.view0 is None else host.view0.to(device, non_blocking=True)
            packed = None if host.packed is None else host.packed.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(side)
        if ahead is not None:
            yield _after_copies(*ahead)
        ahead = (DeviceBatch(host, view0, packed), copied, device)
    if ahead is not None:
        yield _after_copies(*ahead)


def _after_copies(batch: DeviceBatch, copied: torch.cuda.Event, device: torch.device) -> DeviceBatch:
    main = torch.cuda.current_stream(device)
    main.wait_event(copied)
    if batch.view0 is not None:  # allocated on the side stream, used on this one
        batch.view0.record_stream(main)
    if batch.packed is not None:
        batch.packed.record_stream(main)
    return batch
