"""Loader workers: images decoded and their views packed in worker processes, and batches copied
to the device one ahead (the stage between :mod:`awt.images` and :mod:`awt.views`).

Workers start on first use and are kept (:func:`loader_pool`: per backbone, kind of input, worker
count and decoding; :func:`view_loader` for images, :func:`awt.video_views.video_loader` for
videos), so a classifier or a benchmark sweep pays their start-up once.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image

from .augment import PackedViews, pack_views, random_views
from .errors import AWTError
from .image_files import Unreadable, describe_error, sendable
from .images import Decoding, ImageError, ImageInput, load_image


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
        image = decode_input(item, self.max_short_side, self.decoding)
        view0 = self.preprocess(image)
        if n_random == 0:
            return ImageSample(index=index, view0=view0)
        pixels, boxes, flips = view_recipe(image, n_random, seed, self.max_short_side, self.decoding)
        return ImageSample(index=index, view0=view0, pixels=pixels, boxes=boxes, flips=flips)


def decode_input(item: ImageInput, max_short_side: int, decoding: Decoding = Decoding()) -> Image.Image:
    """An input decoded as the loader workers decode it: upright, RGB, a large JPEG at reduced size
    (never below ``max_short_side``) when ``decoding.draft``; view 0 is preprocessed from this."""
    return load_image(item, min_short_side=max_short_side if decoding.draft else None,
                      max_pixels=decoding.max_pixels, exif_transpose=decoding.exif_transpose)


def view_recipe(image: Image.Image, n_random: int, seed: int, max_short_side: int, decoding: Decoding = Decoding()
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random views of a decoded image as the loader workers prepare them
    (:func:`awt.augment.random_views`): the source pixels (3, H, W) uint8, capped to
    ``max_short_side`` when ``decoding.source_cap``, boxes (n, 4) in those pixels and flips (n,)."""
    return random_views(image, n_random, seed, max_short_side if decoding.source_cap else None)


def view_source_side(backbone) -> int:
    """The shorter side the random views' source is capped to for ``backbone``: four input sizes."""
    return 4 * max(backbone.image_size)


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


def _worker_init(worker_id: int) -> None:
    """In a loader worker: Ctrl-C is the main process's to handle. A terminal sends it to the whole
    process group; a worker it killed would be reported by the main process's SIGCHLD handler as a
    crash (a traceback, even from the loader's teardown after the last result), so workers ignore it
    and end when the main process shuts them down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quiet_lost_peers()


def _quiet_lost_peers() -> None:
    """The thread that hands the batches' tensors to the main process reports a main process that
    went away mid-handover (Ctrl-C) through ``sys.excepthook``. That is expected, and is no reason
    for a traceback on the user's terminal; other errors still print."""
    import sys

    previous = sys.excepthook

    def hook(exc_type, value, traceback) -> None:
        if not issubclass(exc_type, (ConnectionError, EOFError)):
            previous(exc_type, value, traceback)

    sys.excepthook = hook


class WorkerLoader:
    """Loader workers started once and kept: a DataLoader with persistent workers over ``source``
    (a dataset indexed by keys), its batch sampler refilled for each call. On a GPU the workers'
    start-up is the largest fixed cost of a call, and a classifier or a benchmark sweep pays it once.
    """

    def __init__(self, source: torch.utils.data.Dataset, collate: Callable, num_workers: int, pin_memory: bool,
                 persistent: bool = True, prefetch_factor: int = 4):
        self.source, self.collate = source, collate
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self._requests = _Requests()
        self._busy = False
        self._persistent = persistent and num_workers > 0
        self._loader = self._start()

    def _start(self) -> torch.utils.data.DataLoader:
        workers = self.num_workers
        return torch.utils.data.DataLoader(
            self.source, batch_sampler=self._requests, num_workers=workers, collate_fn=self.collate,
            pin_memory=self.pin_memory, persistent_workers=self._persistent,
            prefetch_factor=self.prefetch_factor if workers else None,
            worker_init_fn=_worker_init if workers else None,
        )

    def run(self, batches: list[list[tuple]]) -> Iterator["HostBatch"]:
        """The collated batches of ``batches`` (lists of the source's keys), in order."""
        if self._busy:  # a call still open (an unfinished generator): serve this one apart
            apart = WorkerLoader(self.source, self.collate, self.num_workers, self.pin_memory, persistent=False,
                                 prefetch_factor=self.prefetch_factor)
            yield from apart.run(batches)
            return
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


class ViewLoader(WorkerLoader):
    """Loader workers that decode images and pack their views (a :class:`WorkerLoader` over a
    :class:`ViewSource`). Batches ramp up in size (see :func:`batch_sizes`)."""

    def __init__(self, preprocess: Callable, max_short_side: int, num_workers: int, pin_memory: bool,
                 persistent: bool = True, decoding: Decoding = Decoding()):
        self.decoding = decoding
        super().__init__(ViewSource(preprocess, max_short_side, decoding), collate_views, num_workers, pin_memory,
                         persistent)

    def __call__(self, items: Sequence[ImageInput], n_random: int, seed: int, batch_size: int,
                 ramp: bool = True) -> Iterator["HostBatch"]:
        """Host batches of ``items`` in order: (indices, errors, view 0, packed random views);
        ``ramp``: the first batches 1, 2, 4, ... images (see :func:`batch_sizes`)."""
        keys = [(i, sendable(item), n_random, seed) for i, item in enumerate(items)]
        start, batches = 0, []
        for size in batch_sizes(len(keys), max(1, batch_size), ramp=ramp):
            batches.append(keys[start : start + size])
            start += size
        return self.run(batches)


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


_POOLS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def loader_pool(backbone, key: tuple, start: Callable[[], WorkerLoader]) -> WorkerLoader:
    """The loader ``key`` of ``backbone`` (``start()`` makes it on first use), kept while the
    backbone lives: one home for every kind of input's workers (images here, videos in
    :func:`awt.video_views.video_loader`)."""
    pools = _POOLS.setdefault(backbone, {})
    if key not in pools:
        pools[key] = start()
    return pools[key]


def view_loader(backbone, num_workers: int, decoding: Decoding = Decoding()) -> ViewLoader:
    """``backbone``'s image loader with ``num_workers`` worker processes, reading files as
    ``decoding`` says, started on first use and kept while the backbone lives: every classifier
    and benchmark run on it with the same two shares it."""
    return loader_pool(backbone, ("images", num_workers, decoding), lambda: ViewLoader(
        backbone.preprocess, view_source_side(backbone), num_workers, pin_memory=backbone.device.type == "cuda",
        decoding=decoding))
