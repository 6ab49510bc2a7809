"""Image features of a benchmark dataset, encoded once and kept on disk.

A feature set is the (images, 1 + views, dim) L2-normalised features of a list of images under one
backbone, one number of random views and one seed; every method of a sweep is scored from it, so
adding a method costs no image encoding. Layout, under ``<cache>/features/``::

    <key>.pt          the finished set: {"features": fp16 (n, 1 + views, dim), "valid": bool (n,),
                      "errors": [[position, reason], ...], "encode_seconds": float, ...}
    <key>.json        what it is (backbone, views, seed, images), for people
    <key>.parts/      while encoding: part-NNNNN.pt, one per ``shard_batches`` loader batches

``key`` digests the backbone's weight fingerprint, the image paths, the views, the seed and how the
files are decoded (:class:`~awt.images.Decoding`, when not the default): features of pixels read
differently never share an entry. A video set's key digests the sampling (frames, crops, clips,
rate), the crop size, the frame limit and the protocol's version instead (:func:`feature_key`). Every
file is written atomically (temp file + rename), so an interrupted run leaves whole parts behind,
and the next run encodes only the images no part holds. A batch that runs out of accelerator memory
is retried with half as many images (down to one), the pattern of timm's ``validate.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from .. import defaults
from ..errors import AWTError
from ..files import atomic_torch_save, atomic_write_text
from ..images import Decoding
from ..progress import progress_bar
from ..inputs import video_batch_size
from ..video_sampling import VideoSampling
from ..video_views import crop_size, encode_videos
from ..views import encode_views

_log = logging.getLogger("awt.bench")

FEATURES_VERSION = 1
VIDEO_FEATURES_VERSION = 1   # awt.video_sampling's protocol: raise it when the frames or crops it picks change


def feature_file(cache_dir: str | Path, backbone, paths: Sequence[str], views: int, seed: int,
                 decoding: Decoding = Decoding(), video: VideoSampling | None = None) -> Path:
    """Where the finished feature set of ``paths`` under ``backbone`` is kept."""
    crop = crop_size(backbone.image_size) if video is not None else None
    key = feature_key(backbone.fingerprint, paths, views, seed, decoding, video, crop)
    return Path(cache_dir) / "features" / f"{key}.pt"


def is_out_of_memory(error: BaseException) -> bool:
    """An accelerator out-of-memory error (``torch.cuda.OutOfMemoryError`` or its RuntimeError text)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def feature_key(fingerprint: str, paths: Sequence[str], views: int, seed: int, decoding: Decoding = Decoding(),
                video: VideoSampling | None = None, crop: int | None = None) -> str:
    """The feature set's name: a digest of what its numbers depend on. A video set's (``video``, its
    frames scaled to ``crop``) depends on the sampling, the crop size, the frame limit and the
    protocol's version, never on the seed; an image set's on the views, the seed and the decoding."""
    if video is not None:
        head = (f"awt-video-features|{VIDEO_FEATURES_VERSION}|{fingerprint}|{views}|{json.dumps(asdict(video))}|"
                f"{crop}|{decoding.max_pixels}")
    else:
        decoded = f"|{decoding.key()}" if decoding.key() else ""   # the default adds nothing: older keys stay
        head = f"awt-features|{FEATURES_VERSION}|{fingerprint}|{views}|{seed}{decoded}"
    h = hashlib.blake2b(head.encode(), digest_size=16)
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


@dataclass
class FeatureSet:
    """Encoded views of a dataset's images."""

    features: torch.Tensor            # (n, 1 + views, dim) float16 on the CPU; zero rows where unreadable
    valid: torch.Tensor               # (n,) bool: the image could be read
    errors: dict[int, str]            # position -> why it could not be read
    views: int
    seed: int
    path: Path                        # the cache file
    source: str                       # "computed", "resumed" (some parts were on disk) or "cached"
    encoded: int                      # images encoded by this call
    encode_seconds: float             # the whole set's encoding time, all sessions that built it together
    batch_size: int                   # the batch size encoding ended with (smaller after out-of-memory)

    def __len__(self) -> int:
        return self.features.shape[0]


def _share_only(views: int, seed: int, path: Path, source: str, encoded: int, batch_size: int) -> FeatureSet:
    """What a rank other than 0 holds of a feature set: its place on disk, no features."""
    return FeatureSet(torch.empty(0, views + 1, 0, dtype=torch.float16), torch.empty(0, dtype=torch.bool), {}, views,
                      seed, path, source, encoded, 0.0, batch_size)


def _load_finished(path: Path, n: int, views: int) -> dict | None:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        feats = data["features"]
        if feats.shape[0] == n and feats.shape[1] == views + 1 and data["valid"].shape == (n,):
            return data
    except Exception:  # a damaged cache file is recomputed, never trusted
        pass
    return None


def _load_parts(parts_dir: Path, n: int, views: int) -> list[dict]:
    parts = []
    for f in sorted(parts_dir.glob("part-*.pt")):
        try:
            part = torch.load(f, map_location="cpu", weights_only=True)
            pos = part["positions"]
            ok = part["features"].shape[0] == pos.numel() and (pos.numel() == 0 or part["features"].shape[1] == views + 1)
            if ok and (pos.numel() == 0 or int(pos.max()) < n):
                parts.append(part)
                continue
        except Exception:
            pass
        f.unlink(missing_ok=True)  # unreadable or foreign: its images are encoded again
    return parts


def compute_features(
    backbone,
    paths: Sequence[str],
    *,
    views: int,
    seed: int,
    cache_dir: str | Path,
    batch_size: int = 8,
    workers: int | None = None,
    shard_batches: int = 16,
    description: str = "features",
    meta: dict | None = None,
    decoding: Decoding = Decoding(),
    video: VideoSampling | None = None,
) -> FeatureSet:
    """The feature set of ``paths``: from the cache when finished there, else encoded (resuming parts).

    ``video``: the paths are videos, whose views are the frame crops it samples
    (:func:`awt.video_views.encode_videos`): ``views`` is then ``video.views - 1`` (every view) or 0
    (view 0 alone), and ``seed`` changes nothing.

    Under several ranks (:mod:`awt.distributed`), rank 0 says what is left to encode, each rank
    encodes its share into its own parts, and rank 0 assembles the set once every share is on disk;
    the other ranks get a set without features (they do not score).
    """
    from .. import distributed

    me = distributed.ranks()
    n = len(paths)
    if video is not None and views not in (0, video.views - 1):
        raise ValueError(f"a video's views are {video.views - 1} besides view 0, or none; got {views}")
    final = feature_file(cache_dir, backbone, paths, views, seed, decoding, video)
    root, key = final.parent, final.stem
    parts_dir = root / f"{key}.parts"

    data = _load_finished(final, n, views) if me.main and final.is_file() else None
    if distributed.broadcast(data is not None):
        if data is None:
            return _share_only(views, seed, final, "cached", 0, batch_size)
        return FeatureSet(data["features"], data["valid"], {int(i): str(r) for i, r in data["errors"]}, views, seed,
                          final, "cached", 0, float(data.get("encode_seconds", 0.0)), batch_size)

    parts = _load_parts(parts_dir, n, views) if me.main and parts_dir.is_dir() else []
    done = torch.zeros(n, dtype=torch.bool)
    for part in parts:
        done[part["positions"]] = True
    todo, resumed = distributed.broadcast(((~done).nonzero().flatten().tolist(), bool(done.any())))
    done = torch.ones(n, dtype=torch.bool)
    done[me.share(todo)] = False   # this rank's share is what is left to do here
    buffer: list[tuple[list[int], torch.Tensor, list[tuple[int, str]]]] = []
    clock = {"start": time.perf_counter(), "count": len(parts)}
    encoded = 0

    def flush() -> None:
        if not buffer:
            return
        positions = [p for b in buffer for p in b[0]]
        errors = [e for b in buffer for e in b[2]]
        good = [b[1] for b in buffer if b[1].numel()]
        feats = torch.cat(good) if good else torch.empty(0, views + 1, 0, dtype=torch.float16)
        now = time.perf_counter()
        part = {"positions": torch.tensor(positions, dtype=torch.long), "features": feats,
                "errors": [[int(i), str(r)] for i, r in errors],
                "error_positions": torch.tensor([i for i, _ in errors], dtype=torch.long),
                "seconds": now - clock["start"]}
        # rank and pid keep processes that share a cache from replacing each other's parts
        atomic_torch_save(part, parts_dir / f"part-{clock['count']:05d}-r{me.rank}-{os.getpid()}.pt")
        clock["count"] += 1
        clock["start"] = now
        parts.append(part)
        for b in buffer:
            done[b[0]] = True
            done[[i for i, _ in b[2]]] = True
        buffer.clear()

    bar = progress_bar(n, description, "img", initial=n - len(todo), disable=not me.main)
    batch = max(1, int(batch_size))
    try:
        while not bool(done.all()):
            todo = (~done).nonzero().flatten().tolist()
            try:
                batches = 0
                items = [paths[i] for i in todo]
                if video is not None:   # about as many views per batch as ``batch`` images at the default N
                    stream = encode_videos(backbone, items, sampling=video,
                                           batch_size=video_batch_size(batch, defaults.VIEWS + 1, video),
                                           num_workers=workers, max_pixels=decoding.max_pixels, view0_only=views == 0)
                else:
                    stream = encode_views(backbone, items, views=views, seed=seed, batch_size=batch,
                                          num_workers=workers, decoding=decoding)
                try:
                    for fb in stream:
                        positions = [todo[i] for i in fb.indices]
                        errors = [(todo[i], str(problem)) for i, problem in fb.errors]
                        buffer.append((positions, fb.features.to("cpu", torch.float16), errors))
                        encoded += len(positions) + len(errors)
                        bar.update((len(positions) + len(errors)) * me.world)  # the shares go at one pace
                        batches += 1
                        if batches % max(1, shard_batches) == 0:
                            flush()
                finally:
                    stream.close()  # ends the call now, also on errors (the loader's workers are kept)
                flush()
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                flush()  # what was finished stays finished
                if batch == 1:
                    raise AWTError(f"{description}: out of memory encoding a single image's {views + 1} views; "
                                   "use fewer views or a smaller model") from None
                batch = max(1, batch // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if me.main:
                    _log.info(f"{description}: out of memory, retrying with batch size {batch}")
    except BaseException:
        try:
            flush()  # keep every finished batch for the next run, also on Ctrl-C
        finally:
            bar.close()
        raise
    bar.close()

    distributed.barrier()   # every share is on disk
    if not me.main:
        distributed.barrier()
        return _share_only(views, seed, final, "resumed" if resumed else "computed", encoded, batch)
    if me.active:
        parts = _load_parts(parts_dir, n, views)
        encoded = len(todo)  # by all ranks together
    # assemble the finished set from the parts, then drop them
    dims = [p["features"].shape[-1] for p in parts if p["features"].numel()]
    dim = dims[0] if dims else 0
    features = torch.zeros(n, views + 1, dim, dtype=torch.float16)
    valid = torch.zeros(n, dtype=torch.bool)
    errors: dict[int, str] = {}
    for part in parts:
        bad = {int(i) for i, _ in part["errors"]}
        good = [int(i) for i in part["positions"].tolist() if int(i) not in bad]
        if good:
            features[good] = part["features"]
            valid[good] = True
        errors.update({int(i): str(r) for i, r in part["errors"]})
    seconds = float(sum(float(p.get("seconds", 0.0)) for p in parts))
    atomic_torch_save({"features": features, "valid": valid, "errors": [[i, r] for i, r in sorted(errors.items())],
                       "encode_seconds": seconds, "views": views, "seed": seed, "version": FEATURES_VERSION}, final)
    info = dict(meta or {}, key=key, images=n, views=views, seed=seed, decoding=decoding.as_record(), dim=dim,
                **({"video": asdict(video), "video_features_version": VIDEO_FEATURES_VERSION} if video else {}),
                unreadable=len(errors),
                encode_seconds=round(seconds, 3), fingerprint=backbone.fingerprint)
    _atomic_write_json(root / f"{key}.json", info)
    for f in parts_dir.glob("part-*.pt"):
        f.unlink(missing_ok=True)
    try:
        parts_dir.rmdir()
    except OSError:
        pass
    distributed.barrier()   # the set is on disk
    return FeatureSet(features, valid, errors, views, seed, final, "resumed" if resumed else "computed", encoded,
                      seconds, batch)


def _atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
