"""Where each view of an input came from: its box (and flip) in one picture of the input.

An image's views are drawn again with the loader's own helpers (:func:`awt.loading.decode_input`,
:func:`awt.loading.view_recipe`): the same seed and pixels give the same boxes the encoder saw, in
the pixels of the views' source; view 0 is the part the model's preprocessing keeps. A video's
views are square crops of its sampled frames (:func:`awt.videos.sample_video`, as the loader
workers decode them); its picture is a mosaic of those frames (a row per clip), each view's box
placed in its frame there, so a report draws a video as it draws an image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from ..augment import cap_size
from ..images import ImageInput
from ..loading import decode_input, view_recipe, view_source_side

GAP = 4   # pixels between a video's frames in its mosaic


@dataclass
class View:
    """One view: ``box`` (x0, y0, x1, y1) in the pixels of :attr:`Explanation.source` (for a video,
    the mosaic of its sampled frames: the box lies in frame ``frame``)."""

    index: int
    box: tuple[float, float, float, float]
    flip: bool
    weight: float = 0.0    # a_v, the view's weight (the plan's row sum, the same for every class)
    frame: int | None = None    # a video's view: its sampled frame, (clip, frame) order
    time: float | None = None   # and that frame's presentation time, seconds


def view0_box(preprocess, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of a ``width x height`` image that the backbone's preprocessing keeps for view 0:
    a torchvision ``Resize`` of the shorter side then a ``CenterCrop`` keep a centred box, a resize
    to a fixed (h, w) keeps it all; a preprocessing that cannot be read: the centred square."""
    steps = getattr(preprocess, "transforms", None) or []
    resize = next((t for t in steps if type(t).__name__ == "Resize"), None)
    crop = next((t for t in steps if type(t).__name__ == "CenterCrop"), None)
    size = getattr(resize, "size", None)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        if crop is None:
            return (0.0, 0.0, float(width), float(height))
        size = None   # squashed, then cropped: read as the centred square
    short = min(width, height)
    keep_w = keep_h = float(short)
    if size is not None and crop is not None:
        side = size[0] if isinstance(size, (list, tuple)) else size
        ch, cw = (crop.size, crop.size) if isinstance(crop.size, int) else (crop.size[0], crop.size[-1])
        scale = short / float(side)
        keep_w, keep_h = min(float(width), cw * scale), min(float(height), ch * scale)
    x0, y0 = (width - keep_w) / 2, (height - keep_h) / 2
    return (x0, y0, x0 + keep_w, y0 + keep_h)


def image_views(clf, image: ImageInput, n_random: int) -> tuple[Image.Image, list[View]]:
    """An image's source (the pixels its random views are cut from) and its 1 + ``n_random`` views'
    boxes and flips, as the loader workers drew them (weights 0)."""
    side = view_source_side(clf.backbone)
    decoding = clf.spec.decoding
    decoded = decode_input(image, side, decoding)
    w, h = decoded.size
    x0, y0, x1, y1 = view0_box(clf.backbone.preprocess, w, h)
    if n_random:
        pixels, boxes, flips = view_recipe(decoded, n_random, clf.spec.seed, side, decoding)
        source = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    else:
        source = cap_size(decoded, side) if decoding.source_cap else decoded
        boxes, flips = torch.empty(0, 4), torch.empty(0, dtype=torch.bool)
    sx, sy = source.size[0] / w, source.size[1] / h   # view 0 was cut from the decoded image: its box, scaled
    views = [View(0, (x0 * sx, y0 * sy, x1 * sx, y1 * sy), False, 0.0)]
    views += [View(i + 1, tuple(float(x) for x in box), bool(flip), 0.0)
              for i, (box, flip) in enumerate(zip(boxes.tolist(), flips.tolist()))]
    return source.convert("RGB"), views


def video_views(clf, path: str | os.PathLike, view0_only: bool = False) -> tuple[Image.Image, list[View]]:
    """A video's mosaic of sampled frames (rows: clips, columns: frames, ``GAP`` pixels apart) and
    its views in the encoder's order (view 0 first, :func:`awt.video_sampling.view_order`); only
    view 0 with ``view0_only``."""
    from ..video_sampling import view_order
    from ..video_views import crop_size
    from ..videos import sample_video

    sampling = clf.spec.video
    sampled = sample_video(path, sampling, crop_size(clf.backbone.image_size), clf.spec.decoding.max_pixels)
    h, w = sampled.frames[0].shape[1:]
    clips, per_clip, crops = sampling.clips, sampling.frames, sampling.crops
    mosaic = torch.zeros(3, clips * h + (clips - 1) * GAP, per_clip * w + (per_clip - 1) * GAP, dtype=torch.uint8)
    for f, frame in enumerate(sampled.frames):
        y, x = (f // per_clip) * (h + GAP), (f % per_clip) * (w + GAP)
        mosaic[:, y:y + h, x:x + w] = frame
    views = []
    for k, natural in enumerate(view_order(sampling).tolist()[:1 if view0_only else None]):
        clip, rest = divmod(natural, crops * per_clip)
        crop, t = divmod(rest, per_clip)
        f = clip * per_clip + t
        y, x = (f // per_clip) * (h + GAP), (f % per_clip) * (w + GAP)
        x0, y0, x1, y1 = sampled.boxes[f, crop].tolist()
        views.append(View(k, (x0 + x, y0 + y, x1 + x, y1 + y), False, 0.0, f, float(sampled.times.flat[f])))
    return Image.fromarray(mosaic.permute(1, 2, 0).numpy()), views
