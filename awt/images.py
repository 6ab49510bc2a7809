"""Image inputs: finding files, decoding them once, and the per-image work done in loader workers."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import defaults
from .augment import PackedViews, image_seed, pack_views, sample_views
from .errors import AWTError
from .image_files import (NotRegularFile, Unreadable, describe_error, formats, open_regular, reissue, sendable,
                          stderr_as_warnings, without_bytes)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ImageInput = Union[str, os.PathLike, Image.Image]

# The size (width x height, as stored) above which an image is refused as a possible decompression
# bomb: where PIL itself refuses to open one (twice its MAX_IMAGE_PIXELS, which only warns). Large
# JPEGs are decoded at a reduced size (see load_image), so they cost far less than this allows.
DEFAULT_MAX_PIXELS = defaults.MAX_PIXELS

# Modes with an alpha channel (premultiplied ones too); "transparency" in image.info marks the others.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)


class ImageError(AWTError):
    """An input image that cannot be read."""


@dataclass(frozen=True)
class Decoding:
    """How files become the views' pixels: one hashable value, handed down to the loader workers;
    it keys the loaders and the feature caches. The defaults suit users; ``exif_transpose``,
    ``draft`` and ``source_cap`` all ``False`` read pixels as the AWT authors' loaders do
    (``Image.open(path).convert("RGB")``, every random view cut from the full image).

    max_pixels: refuse a file of more pixels (width x height as stored; ``None``: no limit).
    exif_transpose: turn the image upright by its EXIF orientation tag.
    draft: decode a large JPEG at 1/2, 1/4 or 1/8 size (see :func:`load_image`).
    source_cap: shrink the random views' source to four input sizes (see :func:`cap_size`).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    exif_transpose: bool = True
    draft: bool = True
    source_cap: bool = True

    def key(self) -> str:
        """The settings that differ from the defaults, as short stable text (``""`` for the
        defaults, so that cache keys made before these settings existed stay valid)."""
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != f.default)

    def as_record(self) -> dict:
        """Every setting, for a run record."""
        return asdict(self)


def find_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand directories (recursively, sorted, symbolic links to directories not followed) into
    their image files; other inputs are kept as given.

    Nothing is dropped silently: a named path that is missing or cannot be opened, a directory met
    while walking that cannot be read, and a broken link or unreadable file with an image extension
    are kept as inputs of their own, which fail with their reason when loaded (see load_image).
    """
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            _walk(os.fspath(item), found)
        else:
            found.append(str(item))
    return found


def _walk(directory: str, found: list[str]) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        found.append(directory)  # loading it says why it cannot be read
        return
    for entry in entries:
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            try:
                keep = stat.S_ISREG(entry.stat().st_mode)  # not a directory, FIFO, device ...
            except OSError:  # a broken link, no permission: kept, to be reported
                keep = True
            if keep:
                found.append(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, found)
        except OSError:
            pass


def _reason(error: OSError) -> str:
    reason = error.strerror or str(error) or type(error).__name__
    return reason[:1].lower() + reason[1:]


def load_image(source: ImageInput, min_short_side: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, exif_transpose: bool = True) -> Image.Image:
    """Decode an image upright (EXIF orientation), as RGB (see :func:`to_rgb`). Raises ImageError
    with the reason, whatever the decoder raised; only regular files in image formats are decoded,
    and the decoder's warnings are said again with the path (:mod:`awt.image_files`).

    Args:
        min_short_side: the shorter side the caller needs at least. A JPEG at least four times as
            large is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling: ``draft``), its
            shorter side still at least twice this: a 108-megapixel photo then takes a fifth of the
            time and a sixteenth of the memory. ``None``: always decode at full size.
        max_pixels: refuse a file whose stored width x height exceeds this (a possible
            decompression bomb); ``None``: no limit. PIL's own limit does not apply.
        exif_transpose: apply the EXIF orientation (``False``: the pixels as stored).
    """
    if isinstance(source, Image.Image):
        try:
            return to_rgb(ImageOps.exif_transpose(source) if exif_transpose else source)
        except Exception as e:   # an opened image decodes lazily: its decoder may fail here
            raise ImageError(f"<{type(source).__name__}>: cannot decode: {describe_error(e)}") from None
    path = os.fspath(source)
    try:
        fp = open_regular(path)
    except NotRegularFile as e:
        raise ImageError(f"{path}: not a regular file ({e})") from None
    except ValueError as e:   # a NUL byte in the path
        raise ImageError(f"{path!r}: cannot open: {e}") from None
    except OSError as e:
        if os.path.isdir(path):  # find_images keeps the directories it cannot read
            try:
                os.scandir(path).close()
            except OSError as listing:
                raise ImageError(f"{path}: cannot read directory: {_reason(listing)}") from None
            raise ImageError(f"{path}: is a directory") from None
        if isinstance(e, FileNotFoundError):
            broken = os.path.islink(path)
            raise ImageError(f"{path}: {'broken symbolic link (no such file)' if broken else 'no such file'}") from None
        raise ImageError(f"{path}: cannot open: {_reason(e)}") from None
    with fp:
        try:
            try:
                return _decode(fp, path, min_short_side, max_pixels, exif_transpose)
            except Image.DecompressionBombError:  # PIL refused it at open: max_pixels decides
                fp.seek(0)
            with _pil_limit_off():
                return _decode(fp, path, min_short_side, max_pixels, exif_transpose)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image (or an unsupported format)") from None
        except OSError as e:
            if e.errno is not None:
                raise ImageError(f"{path}: cannot read: {_reason(e)}") from None
            reason = str(e) or type(e).__name__
            reason = "truncated image file" if "truncated" in reason else without_bytes(reason)
            raise ImageError(f"{path}: cannot decode: {reason}") from None
        except Exception as e:   # whatever else a decoder raises is this image's error, not the run's
            raise ImageError(f"{path}: cannot decode: {describe_error(e)}") from None


def _decode(fp, path: str, min_short_side: int | None, max_pixels: int | None,
            exif_transpose: bool = True) -> Image.Image:
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit applies
            with Image.open(fp, formats=formats()) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:  # before any decoding
                    mp = f"{w * h / 1e6:.{0 if w * h >= 1e7 else 1}f}"
                    raise ImageError(f"{path}: {w} x {h} pixels ({mp} MP) is more than the limit of {max_pixels:,} "
                                     "pixels (a possible decompression bomb)", setting="max_pixels", kind="limit",
                                     hint="raise the limit with {max_pixels}", pixels=w * h, limit=max_pixels)
                if min_short_side is not None and im.format in ("JPEG", "MPO"):
                    for s in (8, 4, 2):  # decodes to ceil(w / s) x ceil(h / s)
                        if min(w, h) // s >= _DRAFT_MARGIN * min_short_side:
                            im.draft(im.mode, (w // s, h // s))
                            break
                with stderr_as_warnings() if im.format == "TIFF" else contextlib.nullcontext():
                    im.load()
                if exif_transpose:
                    ImageOps.exif_transpose(im, in_place=True)  # no copy of an upright image
                return to_rgb(im)
    finally:   # the decoder's warnings, once each, with the file they are about
        reissue(path, caught)


# A reduced JPEG decode keeps twice the shorter side asked for: DCT scaling filters like a box (1/8
# is the 8 x 8 block means), and the later bicubic resize then does the final filtering. On a
# 108 MP test image (edges and noise) the capped source of the random views differs from an ideal
# bicubic resize by 0.85 levels on average this way, 2.3 when decoding right down to the size asked.
_DRAFT_MARGIN = 2

_PIL_LIMIT = threading.Lock()


@contextlib.contextmanager
def _pil_limit_off():
    """PIL's bomb check off while an image larger than PIL allows is opened, for max_pixels to
    decide (rare: a lock around PIL's global suffices)."""
    with _PIL_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB, as it is meant to be seen.

    * ``RGB``: as is. ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's
      conversion (for CMYK ``(255 - C)(255 - K) / 255``; an Adobe JPEG's inverted CMYK is undone
      by PIL when decoding; ICC profiles are not applied).
    * 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): ``v >> 8``, 256 levels to each
      8-bit level; it exactly inverts both usual widenings of 8-bit data (``v * 257`` and ``v << 8``)
      and is never more than one level from ``round(v / 257)``. PIL's own conversion clips at 255:
      almost everything came out white.
    * ``I`` (32-bit signed; PIL reads 16-bit PGMs and many TIFFs as ``I``): taken as 16-bit data,
      as above, negative values as 0; when a value exceeds 65535, the data is 32-bit: ``v >> 23``.
    * ``F`` (float): when no value exceeds 1, a normalised image: ``v * 255``; otherwise 8-bit
      levels as PIL reads them. Rounded, clipped to 0..255; NaN is 0.
    * Transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, ``P``/``L``/``RGB``
      with a transparent colour): composited on white, as a page shows it and as Hugging Face's
      CLIP image processors do (``convert_to_rgb``). ``convert("RGB")`` would drop the alpha and
      show whatever colour transparent pixels happen to hold, often black.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_grey_to_uint8(image)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        out = Image.new("RGB", image.size, _WHITE)
        out.paste(rgba, (0, 0), rgba)  # the alpha channel as the mask: rgb a + white (1 - a)
        return out
    return image.convert("RGB")


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    a = np.asarray(image)
    if image.mode == "F":
        a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if image.mode == "I" and a.size and a.max() > 65535:
        return (np.maximum(a, 0) >> 23).astype(np.uint8)
    if image.mode == "I":
        a = np.clip(a, 0, 65535)
    return (a >> 8).astype(np.uint8)


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
    error: AWTError | None = None        # why it cannot be read (its message names the input)


class ViewSource(torch.utils.data.Dataset):
    """Decodes an image once and prepares its views, in a loader worker.

    Indexed by keys ``(position, item, random views, seed)``: the items travel with the indices,
    so one set of worker processes serves any number of image lists.
    """

    def __init__(self, preprocess: Callable, max_short_side: int, decoding: Decoding = Decoding()):
        self.preprocess = preprocess
        self.max_short_side = max_short_side
        self.decoding = decoding

    def __getitem__(self, key: tuple[int, ImageInput, int, int]) -> ImageSample:
        index, item, n_random, seed = key
        try:
            return self._sample(index, item, n_random, seed)
        except ImageError as e:
            return ImageSample(index=index, error=e)
        except Exception as e:   # anything else about one image is that image's error, not the run's
            name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<{type(item).__name__}>"
            return ImageSample(index=index, error=ImageError(f"{name}: cannot prepare its views: {describe_error(e)}"))

    def _sample(self, index: int, item: ImageInput, n_random: int, seed: int) -> ImageSample:
        if isinstance(item, Unreadable):
            return ImageSample(index=index, error=ImageError(str(item)))
        d = self.decoding
        # a large JPEG is decoded at reduced size, never below the size kept for the views
        image = load_image(item, min_short_side=self.max_short_side if d.draft else None,
                           max_pixels=d.max_pixels, exif_transpose=d.exif_transpose)
        view0 = self.preprocess(image)
        if n_random == 0:
            return ImageSample(index=index, view0=view0)
        if d.source_cap:
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
    (the first images are then handed over, encoded and shown within one image's time, with or
    without parallel workers)."""
    sizes, done, size = [], 0, 1 if ramp else batch_size
    while done < total:
        sizes.append(min(size, batch_size, total - done))
        done += sizes[-1]
        size *= 2
    return sizes


def _quiet_lost_peers(worker_id: int) -> None:
    """In a loader worker: the thread that hands the batches' tensors to the main process reports a
    main process that went away mid-handover (Ctrl-C) through ``sys.excepthook``. That is expected,
    and is no reason for a traceback on the user's terminal; other errors still print."""
    import sys

    previous = sys.excepthook

    def hook(exc_type, value, traceback) -> None:
        if not issubclass(exc_type, (ConnectionError, EOFError)):
            previous(exc_type, value, traceback)

    sys.excepthook = hook


class ViewLoader:
    """Loader workers that decode images and pack their views, started once and kept.

    A DataLoader with persistent workers over a :class:`ViewSource`, its batch sampler refilled
    for each call: on a GPU the workers' start-up is the largest fixed cost of a call, and a
    classifier or a benchmark sweep pays it once. Batches ramp up in size (see :func:`batch_sizes`).
    """

    def __init__(self, preprocess: Callable, max_short_side: int, num_workers: int, pin_memory: bool,
                 persistent: bool = True, decoding: Decoding = Decoding()):
        self.num_workers = num_workers
        self._requests = _Requests()
        self._busy = False
        self._args = (preprocess, max_short_side, num_workers, pin_memory)
        self.decoding = decoding
        self._persistent = persistent and num_workers > 0
        self._loader = self._start()

    def _start(self) -> torch.utils.data.DataLoader:
        preprocess, max_short_side, num_workers, pin_memory = self._args
        return torch.utils.data.DataLoader(
            ViewSource(preprocess, max_short_side, self.decoding), batch_sampler=self._requests,
            num_workers=num_workers, collate_fn=collate_views, pin_memory=pin_memory, persistent_workers=self._persistent,
            prefetch_factor=4 if num_workers else None, worker_init_fn=_quiet_lost_peers if num_workers else None,
        )

    def __call__(self, items: Sequence[ImageInput], n_random: int, seed: int, batch_size: int) -> Iterator["HostBatch"]:
        """Host batches of ``items`` in order: (indices, errors, view 0, packed random views)."""
        if self._busy:  # a call still open (an unfinished generator): serve this one apart
            apart = ViewLoader(*self._args, persistent=False, decoding=self.decoding)
            yield from apart(items, n_random, seed, batch_size)
            return
        keys = [(i, sendable(item), n_random, seed) for i, item in enumerate(items)]
        start, batches = 0, []
        for size in batch_sizes(len(keys), max(1, batch_size), ramp=True):
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
    errors: list[tuple[int, AWTError]]  # (position, why) of the unreadable ones
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
