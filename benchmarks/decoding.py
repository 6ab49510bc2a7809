"""What the engine's decoding defaults change and cost, against the AWT authors' loaders.

The authors read every image with ``Image.open(path).convert("RGB")`` (no EXIF orientation, full
size) and cut each random view from the full image (torchvision's ``RandomResizedCrop``). The
engine's defaults (``awt.images.Decoding``) turn photos upright by EXIF, decode a JPEG whose shorter
side is at least four times the views' source at 1/2 to 1/8 size (``draft``), and shrink the random
views' source to four model input sizes on its shorter side (``source_cap``); the paper configs turn
all three off. Measured here, in one run, on real images:

* how many images each switch touches (every image of ``../shared/data``: Caltech101's test split
  and the ImageNet sample), and two kinds of large stand-ins: photos of the ImageNet sample enlarged
  to ``--large-side`` px (smooth: a lower bound) and mosaics of them at their own resolution (real
  detail at that size; JPEGs, so ``draft`` engages too);
* what the cap and the reduced decode change: the random views cut from the capped (or reduced)
  source against the same views cut from the full image, in levels of 255, without 8-bit rounding
  (PIL's bilinear filter in float, which the engine's batched cut reproduces), and view 0;
* what they cost: decoding time per image, the bytes of the views' source (what is packed into a
  batch canvas and copied to the device), and the time and working memory of cutting the views.

    python benchmarks/decoding.py [--data ../shared/data] [--size 224] [--views 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from awt.augment import crop_views, image_seed, sample_views
from awt.augment import cap_size
from awt.images import Decoding, load_image

REPO = Path(__file__).resolve().parents[1]
AUTHORS = Decoding(exif_transpose=False, draft=False, source_cap=False)


def authors_load(path: Path) -> Image.Image:
    """The authors' loaders: data/fewshot_datasets.py, torchvision's ImageFolder (pil_loader)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def engine_source(path: Path, side: int, draft: bool = True, cap: bool = True) -> Image.Image:
    """The engine's source of the random views, EXIF off (compared with the authors' on the same
    orientation): reduced JPEG decode, then the cap."""
    image = load_image(path, min_short_side=side if draft else None, exif_transpose=False)
    return cap_size(image, side) if cap else image


def float_views(image: Image.Image, boxes: np.ndarray, size: int) -> np.ndarray:
    """(views, size, size, 3) float32 levels: each box resized with PIL's bilinear filter in float
    (mode ``F``, no 8-bit rounding), as RandomResizedCrop does it in 8 bits."""
    channels = [Image.fromarray(np.asarray(image)[..., c].astype(np.float32), mode="F") for c in range(3)]
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for i, box in enumerate(boxes):
        for c, ch in enumerate(channels):
            out[i, :, :, c] = np.asarray(ch.resize((size, size), Image.BILINEAR, box=tuple(float(v) for v in box)))
    return out


def view0_levels(image: Image.Image, size: int) -> np.ndarray:
    import open_clip

    pre = open_clip.image_transform(size, is_train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return pre(image).numpy() * 255.0


@dataclass
class Stats:
    images: int = 0
    capped: int = 0                 # shorter side over the cap
    drafted: int = 0                # a JPEG decoded at reduced size
    exif: int = 0                   # an EXIF orientation other than 1
    largest_short: int = 0
    decode_ms_authors: list = field(default_factory=list)
    decode_ms_engine: list = field(default_factory=list)
    source_bytes_authors: list = field(default_factory=list)
    source_bytes_engine: list = field(default_factory=list)
    view_diff_sum: float = 0.0
    view_diff_max: float = 0.0
    view_diff_n: int = 0
    changed_images: int = 0
    view0_diff: list = field(default_factory=list)
    exif_view0_diff: list = field(default_factory=list)
    same_source: int = 0

    def report(self) -> dict:
        mean = lambda v: round(statistics.fmean(v), 3) if v else None   # noqa: E731
        return {
            "images": self.images, "cap_engages": self.capped, "draft_engages": self.drafted, "exif_rotated": self.exif,
            "largest_short_side": self.largest_short, "same_source_as_authors": self.same_source,
            "decode_ms_authors": mean(self.decode_ms_authors), "decode_ms_engine": mean(self.decode_ms_engine),
            "source_mb_authors_mean": mean([b / 2**20 for b in self.source_bytes_authors]),
            "source_mb_authors_max": _max_mb(self.source_bytes_authors),
            "source_mb_engine_mean": mean([b / 2**20 for b in self.source_bytes_engine]),
            "source_mb_engine_max": _max_mb(self.source_bytes_engine),
            "images_with_changed_views": self.changed_images,
            "views_mean_level_diff": round(self.view_diff_sum / self.view_diff_n, 3) if self.view_diff_n else 0.0,
            "views_max_level_diff": round(self.view_diff_max, 2),
            "view0_mean_level_diff": mean(self.view0_diff) if self.view0_diff else 0.0,
            "exif_view0_mean_level_diff": mean(self.exif_view0_diff),
        }


def _max_mb(sizes: list) -> float | None:
    return round(max(sizes) / 2**20, 2) if sizes else None


def measure(paths: list[Path], size: int, views: int, stats: Stats) -> Stats:
    side = 4 * size
    for path in paths:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112)
            is_jpeg = im.format in ("JPEG", "MPO")
        stats.images += 1
        stats.largest_short = max(stats.largest_short, min(w, h))
        stats.exif += orientation not in (None, 1)
        path.read_bytes()                  # in the page cache for both timings
        t = time.perf_counter()
        full = authors_load(path)
        a = np.asarray(full)
        stats.decode_ms_authors.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        ours = engine_source(path, side)
        e = np.asarray(ours)
        stats.decode_ms_engine.append((time.perf_counter() - t) * 1e3)
        stats.source_bytes_authors.append(a.nbytes)
        stats.source_bytes_engine.append(e.nbytes)
        reduced = is_jpeg and min(w, h) // 2 >= 2 * side
        stats.drafted += reduced
        stats.capped += min(w, h) > side
        if orientation not in (None, 1):   # EXIF: what the encoder gets, upright against as stored
            upright = load_image(path, exif_transpose=True)
            stats.exif_view0_diff.append(float(np.abs(view0_levels(upright, size) - view0_levels(full, size)).mean()))
        if a.shape == e.shape and np.array_equal(a, e):
            stats.same_source += 1         # the same array: every view is the same
            continue
        # the same boxes (drawn on the full image, as the authors do), scaled to the engine's source
        boxes, _ = sample_views(a.shape[0], a.shape[1], views, image_seed(a, 0))
        scale = np.array([e.shape[1] / a.shape[1], e.shape[0] / a.shape[0]] * 2, np.float32)
        diff = np.abs(float_views(ours, boxes * scale, size) - float_views(full, boxes, size))
        stats.changed_images += 1
        stats.view_diff_sum += float(diff.sum())
        stats.view_diff_n += diff.size
        stats.view_diff_max = max(stats.view_diff_max, float(diff.max()))
        if reduced:   # view 0 is made from the reduced decode too
            drafted = load_image(path, min_short_side=side, exif_transpose=False)
            stats.view0_diff.append(float(np.abs(view0_levels(drafted, size) - view0_levels(full, size)).mean()))
    return stats


def cut_memory(height: int, width: int, views: int, size: int) -> float:
    """MiB of cut_views' float32 arrays for one image: the canvas, both weight matrices, the
    intermediate (rows applied)."""
    return (3 * height * width + views * size * (height + width) + views * size * 3 * width) * 4 / 2**20


def cut_cost(path: Path, size: int, views: int, side: int, all_views: int) -> dict:
    """Time (CPU, one thread) and working memory of the engine's batched cut of ``views`` views from
    the capped source and from the full image; the memory also for ``all_views``."""
    out = {}
    for name, image in (("capped", engine_source(path, side)), ("full", authors_load(path))):
        a = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()
        boxes, flips = sample_views(a.shape[1], a.shape[2], views, image_seed(np.asarray(image), 0))
        args = ([a], [torch.from_numpy(boxes)], [torch.from_numpy(flips)], (size, size), (0, 0, 0), (1, 1, 1),
                torch.device("cpu"))
        crop_views(*args)    # warm-up
        t = time.perf_counter()
        crop_views(*args)
        seconds = time.perf_counter() - t
        height, width = a.shape[1], a.shape[2]
        out[name] = {"source": f"{width} x {height}", "ms_per_view": round(seconds / views * 1e3, 2),
                     "working_mb": round(cut_memory(height, width, views, size), 1),
                     f"working_mb_{all_views}_views": round(cut_memory(height, width, all_views, size), 1)}
    return out


def read_labels(folder: Path) -> list[Path]:
    with open(folder / "labels.csv", newline="") as f:
        return [folder / row["path"] for row in csv.DictReader(f)]


def stand_ins(images: list[Path], out: Path, count: int, long_side: int) -> tuple[list[Path], list[Path]]:
    """``count`` photos enlarged to ``long_side`` px, and ``count`` mosaics of 500 x 500 centre crops
    of the photos at their own resolution, ``long_side`` x 2/3 of it; JPEG, quality 95."""
    enlarged, mosaics = [], []
    for i, path in enumerate(images[:count]):
        image = authors_load(path)
        scale = long_side / max(image.size)
        p = out / f"enlarged-{i}.jpg"
        image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC).save(p, quality=95)
        enlarged.append(p)
    tile, cols = 500, long_side // 500
    rows = max(1, cols * 2 // 3)
    usable = [p for p in images if min(Image.open(p).size) >= tile]
    for i in range(count):
        canvas = Image.new("RGB", (cols * tile, rows * tile))
        for k in range(cols * rows):
            src = authors_load(usable[(i * cols * rows + k) % len(usable)])
            x0, y0 = (src.width - tile) // 2, (src.height - tile) // 2
            canvas.paste(src.crop((x0, y0, x0 + tile, y0 + tile)), ((k % cols) * tile, (k // cols) * tile))
        p = out / f"mosaic-{i}.jpg"
        canvas.save(p, quality=95)
        mosaics.append(p)
    return enlarged, mosaics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--size", type=int, default=224, help="model input size (ViT-B/16: 224; the cap is 4x)")
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--large", type=int, default=4, help="stand-ins of each kind")
    p.add_argument("--large-side", type=int, default=6000, help="their longer side (6000: a 24 MP photo)")
    p.add_argument("--cut-views", type=int, default=8, help="views per image when timing the batched cut")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sets = {name: read_labels(args.data / name) for name in ("caltech101", "imagenet-sample")}
    results: dict = {"size": args.size, "cap": 4 * args.size, "views": args.views}
    print(f"model input {args.size} px: the views' source is capped at {4 * args.size} px on the shorter side; "
          f"a JPEG is decoded at 1/2-1/8 when its shorter side is >= {4 * 4 * args.size} px; {args.views} views",
          flush=True)
    for name, paths in sets.items():
        stats = measure(paths, args.size, args.views, Stats()).report()
        results[name] = stats
        print(f"{name}: {json.dumps(stats)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        enlarged, mosaics = stand_ins(sets["imagenet-sample"], Path(tmp), args.large, args.large_side)
        for name, paths in (("enlarged", enlarged), ("mosaic", mosaics)):
            stats = measure(paths, args.size, args.views, Stats()).report()
            results[name] = stats
            print(f"{name} ({args.large_side} px stand-ins): {json.dumps(stats)}", flush=True)
        big = max(sets["imagenet-sample"], key=lambda q: min(Image.open(q).size))
        results["cut_largest_imagenet_sample"] = cut_cost(big, args.size, args.cut_views, 4 * args.size, args.views)
        print(f"cut {args.cut_views} views of {big.name}: {json.dumps(results['cut_largest_imagenet_sample'])}",
              flush=True)
        results["cut_mosaic"] = cut_cost(mosaics[0], args.size, args.cut_views, 4 * args.size, args.views)
        print(f"cut {args.cut_views} views of a {args.large_side} px mosaic: {json.dumps(results['cut_mosaic'])}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
