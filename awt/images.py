"""Image inputs: finding files, decoding them once, and the per-image work done in loader workers."""

from __future__ import annotations

import os
import queue
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .augment import PackedViews, image_seed, pack_views, sample_views
from .errors import AWTError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ImageInput = Union[str, os.PathLike, Image.Image]
T = TypeVar("T")


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


class ViewDataset(torch.utils.data.Dataset):
    """Decodes each image once and prepares its views: map-style, safe for worker processes."""

    def __init__(self, items: Sequence[ImageInput], preprocess: Callable, n_random: int, seed: int, max_short_side: int):
        self.items = list(items)
        self.preprocess = preprocess
        self.n_random = n_random
        self.seed = seed
        self.max_short_side = max_short_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ImageSample:
        try:
            image = load_image(self.items[index])
        except ImageError as e:
            return ImageSample(index=index, error=str(e))
        view0 = self.preprocess(image)
        if self.n_random == 0:
            return ImageSample(index=index, view0=view0)
        image = cap_size(image, self.max_short_side)
        array = np.asarray(image)
        boxes, flips = sample_views(array.shape[0], array.shape[1], self.n_random, image_seed(array, self.seed))
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        return ImageSample(index=index, view0=view0, pixels=pixels, boxes=torch.from_numpy(boxes), flips=torch.from_numpy(flips))


@dataclass
class HostBatch:
    """A loader batch as it leaves the worker: a few tensors rather than a few per image."""

    indices: list[int]                  # positions of the readable images
    errors: list[tuple[int, str]]       # (position, reason) of the unreadable ones
    view0: torch.Tensor | None          # (images, 3, height, width) normalised
    packed: PackedViews | None          # their random views' canvas and boxes

    def pin_memory(self) -> "HostBatch":  # called by the DataLoader's pinning thread
        self.view0 = None if self.view0 is None else self.view0.pin_memory()
        if self.packed is not None:
            self.packed.canvas = self.packed.canvas.pin_memory()
        return self


def collate_views(samples: list[ImageSample]) -> HostBatch:
    """Stack view 0 and pack the random views' sources in the worker, off the main process."""
    good = [s for s in samples if s.error is None]
    view0 = torch.stack([s.view0 for s in good]) if good else None
    packed = None
    if good and good[0].pixels is not None:
        packed = pack_views([s.pixels for s in good], [s.boxes for s in good], [s.flips for s in good])
    return HostBatch([s.index for s in good], [(s.index, s.error) for s in samples if s.error is not None], view0, packed)


_DONE = object()


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run ``iterable`` in a background thread, ``depth`` items ahead; its exceptions re-raise here.

    Host-side batch preparation then overlaps with device work (torch releases the GIL in copies).
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            items.put(e)

    thread = threading.Thread(target=produce, name="awt-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
