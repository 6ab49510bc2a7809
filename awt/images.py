"""Image inputs: finding image files and decoding them, from a path, bytes or a PIL image (the loader
workers that run this are :mod:`awt.loading`)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Collection, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import defaults
from .errors import AWTError
from .image_files import (NotRegularFile, describe_error, formats, open_regular, reissue, stderr_as_warnings,
                          without_bytes)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ImageInput = Union[str, os.PathLike, Image.Image, bytes]   # a path, a decoded image, or a file's bytes

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
    source_cap: shrink the random views' source to four input sizes (see :func:`awt.augment.cap_size`).
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


def find_images(inputs: Sequence[str | os.PathLike], extensions: Collection[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Expand directories (recursively, sorted, symbolic links to directories not followed) into
    their image files (files with one of ``extensions``, lower case with the dot); other inputs are
    kept as given.

    Nothing is dropped silently: a named path that is missing or cannot be opened, a directory met
    while walking that cannot be read, and a broken link or unreadable file with an image extension
    are kept as inputs of their own, which fail with their reason when loaded (see load_image).
    """
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            _walk(os.fspath(item), found, extensions)
        else:
            found.append(str(item))
    return found


def _walk(directory: str, found: list[str], extensions: Collection[str]) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        found.append(directory)  # loading it says why it cannot be read
        return
    for entry in entries:
        if os.path.splitext(entry.name)[1].lower() in extensions:
            try:
                keep = stat.S_ISREG(entry.stat().st_mode)  # not a directory, FIFO, device ...
            except OSError:  # a broken link, no permission: kept, to be reported
                keep = True
            if keep:
                found.append(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, found, extensions)
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
    if isinstance(source, (bytes, bytearray, memoryview)):   # an upload: the same checks as a file's
        return _load(io.BytesIO(source), "<bytes>", min_short_side, max_pixels, exif_transpose)
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
        return _load(fp, path, min_short_side, max_pixels, exif_transpose)


def _load(fp, path: str, min_short_side: int | None, max_pixels: int | None, exif_transpose: bool) -> Image.Image:
    """Decode the open file ``fp`` (named ``path`` in messages); every failure is an ImageError."""
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


def check_pixels(source: bytes, max_pixels: int | None) -> None:
    """Raise the :class:`ImageError` that :func:`load_image` would for encoded image bytes of more
    than ``max_pixels`` pixels, from the header alone (nothing is decoded): a server refuses a
    decompression bomb before it queues it. Any other fault is left for decoding to name."""
    if max_pixels is None:
        return
    try:
        with _pil_limit_off(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(source), formats=formats()) as im:
                w, h = im.size
    except Exception:
        return
    if w * h > max_pixels:
        raise _over_the_limit("<bytes>", w, h, max_pixels)


def _over_the_limit(path: str, w: int, h: int, max_pixels: int) -> ImageError:
    mp = f"{w * h / 1e6:.{0 if w * h >= 1e7 else 1}f}"
    return ImageError(f"{path}: {w} x {h} pixels ({mp} MP) is more than the limit of {max_pixels:,} pixels (a possible "
                      "decompression bomb)", setting="max_pixels", kind="limit", hint="raise the limit with {max_pixels}",
                      pixels=w * h, limit=max_pixels)


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
                    raise _over_the_limit(path, w, h, max_pixels)
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
