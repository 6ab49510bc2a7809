"""Decoding every kind of input right: each PIL mode against a reference written here in numpy,
large JPEGs decoded at reduced size, decompression bombs refused, unreadable files and folders
reported. Real images from ../awt/data/examples; the unreadable cases run as an unprivileged user."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from awt.augment import cap_size
from awt.images import DEFAULT_MAX_PIXELS, ImageError, find_images, load_image, to_rgb
from awt.loading import ViewSource

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "awt" / "data" / "examples"


# -- references, independent of awt.images ---------------------------------------------------------

def _round(x) -> np.ndarray:
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def grey3(g: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(g, dtype=np.uint8)[..., None], 3, axis=-1)


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha compositing over an opaque white background."""
    a = alpha.astype(np.float64)[..., None] / 255
    return _round(rgb.astype(np.float64) * a + 255 * (1 - a))


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF (full-range BT.601)."""
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    return _round(np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                            y + 1.772 * (cb - 128)], axis=-1))


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    c = cmyk.astype(np.float64)
    return _round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255)


def image16(values: np.ndarray, mode: str) -> Image.Image:
    """A 16-bit image from its values (PIL's convert between the 16-bit modes clips at 255)."""
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2"}[mode]
    return Image.frombytes(mode, values.shape[::-1], values.astype(dtype).tobytes())


def palette_rgb(im: Image.Image) -> np.ndarray:
    return np.array(im.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)[np.asarray(im)]


# -- the real images the cases are made from -------------------------------------------------------

@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(EXAMPLES / "cat.jpg").convert("RGB")


@pytest.fixture(scope="module")
def grey(photo) -> np.ndarray:
    return np.asarray(photo.convert("L"))


@pytest.fixture(scope="module")
def alpha(photo) -> np.ndarray:
    """A real, varied alpha channel: another photo's luminance, with fully clear and opaque parts."""
    a = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("L").resize(photo.size)).copy()
    a[:40] = 0
    a[-40:] = 255
    return a


def _cases(photo, grey, alpha):
    """name -> (image in that mode, reference RGB, tolerance in levels)."""
    rgb = np.asarray(photo)
    rng = np.random.default_rng(0)
    v16 = (grey.astype(np.int64) * 257 + rng.integers(0, 257, grey.shape)).clip(0, 65535)  # the full 16-bit range
    cases = {}
    for mode in ("I;16", "I;16B", "I;16L"):
        cases[mode] = (image16(v16, mode), grey3(v16 // 256), 0)
    cases["I;16 widened from 8 bits"] = (Image.fromarray((grey.astype(np.uint16) * 257)), grey3(grey), 0)
    cases["I (16-bit data)"] = (Image.fromarray(v16.astype(np.int32)), grey3(v16 // 256), 0)
    v32 = grey.astype(np.int64) * 8421504 - 20  # 0 .. 2**31 - 1 (and a little below 0)
    cases["I (32-bit data)"] = (Image.fromarray(v32.astype(np.int32)), grey3(np.maximum(v32, 0) // 2**23), 0)
    f01 = grey.astype(np.float32) / 255
    cases["F in [0, 1]"] = (Image.fromarray(f01), grey3(_round(f01.astype(np.float64) * 255)), 0)
    f255 = grey.astype(np.float32) * 1.2 - 20  # levels, some beyond 0..255
    f255[0, :10] = np.nan
    cases["F levels"] = (Image.fromarray(f255), grey3(_round(np.nan_to_num(f255.astype(np.float64)))), 0)
    bw = photo.convert("1")
    cases["1"] = (bw, grey3(np.asarray(bw).astype(np.uint8) * 255), 0)
    cases["L"] = (photo.convert("L"), grey3(grey), 0)
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])
    cases["LA"] = (la, grey3(on_white(grey3(grey), alpha)[..., 0]), 1)
    rgba = photo.copy()
    rgba.putalpha(Image.fromarray(alpha))
    cases["RGBA"] = (rgba, on_white(rgb, alpha), 1)
    premultiplied = _round(rgb.astype(np.float64) * alpha[..., None] / 255)
    cases["RGBa"] = (rgba.convert("RGBa"), _round(premultiplied.astype(np.float64) + 255 - alpha[..., None]), 2)
    p = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    idx = np.asarray(p)
    common = int(np.bincount(idx.ravel()).argmax())
    p_index = p.copy()
    p_index.info["transparency"] = common
    cases["P, one transparent index"] = (p_index, on_white(palette_rgb(p), np.where(idx == common, 0, 255)), 0)
    table = rng.integers(0, 256, 64).astype(np.uint8)
    p_table = p.copy()
    p_table.info["transparency"] = table.tobytes()
    cases["P, alpha per index"] = (p_table, on_white(palette_rgb(p), table[idx]), 1)
    cases["P, opaque"] = (p, palette_rgb(p), 0)
    pa = p.convert("PA")
    pa.putalpha(Image.fromarray(alpha))
    cases["PA"] = (pa, on_white(palette_rgb(p), alpha), 1)
    l_key = photo.convert("L")
    l_key.info["transparency"] = int(np.median(grey))
    cases["L, transparent grey"] = (l_key, grey3(np.where(grey == int(np.median(grey)), 255, grey)), 0)
    rgb_key = photo.copy()
    key = tuple(int(c) for c in rgb[100, 100])
    rgb_key.info["transparency"] = key
    cases["RGB, transparent colour"] = (rgb_key, np.where((rgb == key).all(-1, keepdims=True), 255, rgb).astype(np.uint8), 0)
    cmyk = rng.integers(0, 256, rgb.shape[:2] + (4,), dtype=np.uint8)
    cmyk[..., :3] = 255 - rgb  # a real picture in the colour plates, random black
    cmyk[..., 3] //= 2
    cases["CMYK"] = (Image.frombytes("CMYK", photo.size, cmyk.tobytes()), cmyk_to_rgb(cmyk), 0)
    ycc = photo.convert("YCbCr")
    cases["YCbCr"] = (ycc, ycbcr_to_rgb(np.asarray(ycc)), 1)
    cases["RGB"] = (photo, rgb, 0)
    return cases


@pytest.fixture(scope="module")
def cases(photo, grey, alpha):
    return _cases(photo, grey, alpha)


CASE_NAMES = ["I;16", "I;16B", "I;16L", "I;16 widened from 8 bits", "I (16-bit data)", "I (32-bit data)", "F in [0, 1]",
              "F levels", "1", "L", "LA", "RGBA", "RGBa", "P, one transparent index", "P, alpha per index", "P, opaque",
              "PA", "L, transparent grey", "RGB, transparent colour", "CMYK", "YCbCr", "RGB"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_mode_against_its_reference(name, cases):
    image, expected, tolerance = cases[name]
    assert image.mode == name.split(",")[0].split(" ")[0]
    for out in (to_rgb(image), load_image(image)):
        assert out.mode == "RGB" and out.size == image.size
        diff = np.abs(np.asarray(out).astype(int) - expected.astype(int))
        assert diff.max() <= tolerance, (name, diff.max(), diff.mean())


def test_a_16_bit_png_decodes_to_its_8_bit_original(tmp_path, grey):
    Image.fromarray(grey).save(tmp_path / "8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(grey.astype(np.uint16) << 8).save(tmp_path / "16-shifted.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    original = np.asarray(load_image(tmp_path / "8.png"))
    for name in ("16.png", "16-shifted.png"):
        assert np.array_equal(np.asarray(load_image(tmp_path / name)), original), name
    white = (np.asarray(Image.open(tmp_path / "16.png").convert("RGB")) == 255).mean()  # what PIL alone gives
    assert white > 0.9 and (original == 255).mean() < 0.1


def _mode_files(directory: Path, photo: Image.Image, grey: np.ndarray, alpha: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """Files that open in each mode, made from a real photo: name -> (mode when opened, reference RGB)."""
    rgb = np.asarray(photo)
    v16 = grey.astype(np.uint16) * 257
    files = {}

    def save(name, image, expected, **kw):
        image.save(directory / name, **kw)
        files[name] = (Image.open(directory / name).mode, expected)

    save("original-8bit.png", Image.fromarray(grey), grey3(grey))
    save("grey16.png", Image.fromarray(v16), grey3(grey))
    save("grey16-bigendian.tif", image16(v16, "I;16B"), grey3(grey))
    save("grey16-littleendian.tif", image16(v16, "I;16L"), grey3(grey))
    save("int32.tif", Image.fromarray(v16.astype(np.int32)), grey3(grey))
    save("float.tif", Image.fromarray(grey.astype(np.float32) / 255), grey3(grey))
    bw = photo.convert("1")
    save("bilevel.png", bw, grey3(np.asarray(bw).astype(np.uint8) * 255))
    save("grey.png", photo.convert("L"), grey3(grey))
    save("grey-alpha.png", Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]),
         grey3(on_white(grey3(grey), alpha)[..., 0]))
    rgba = photo.copy()
    rgba.putalpha(Image.fromarray(alpha))
    save("rgba.png", rgba, on_white(rgb, alpha))
    p = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    idx = np.asarray(p)
    common = int(np.bincount(idx.ravel()).argmax())
    save("palette-transparent.png", p, on_white(palette_rgb(p), np.where(idx == common, 0, 255)), transparency=common)
    save("palette-transparent.gif", p, on_white(palette_rgb(p), np.where(idx == common, 0, 255)), transparency=common)
    cmyk = photo.convert("CMYK")
    save("cmyk.tif", cmyk, cmyk_to_rgb(np.asarray(cmyk)))
    cmyk.save(directory / "cmyk.jpg", quality=95)  # Adobe inverted CMYK: PIL reads it back as the plates
    files["cmyk.jpg"] = ("CMYK", cmyk_to_rgb(np.asarray(Image.open(directory / "cmyk.jpg"))))
    ycc = photo.convert("YCbCr")
    save("ycbcr.tif", ycc, ycbcr_to_rgb(np.asarray(ycc)))
    return files


EXPECTED_FILE_MODES = {"original-8bit.png": "L", "grey16.png": "I;16", "grey16-bigendian.tif": "I;16B",
                       "grey16-littleendian.tif": "I;16", "int32.tif": "I", "float.tif": "F", "bilevel.png": "1",
                       "grey.png": "L", "grey-alpha.png": "LA", "rgba.png": "RGBA", "palette-transparent.png": "P",
                       "palette-transparent.gif": "P", "cmyk.tif": "CMYK", "cmyk.jpg": "CMYK", "ycbcr.tif": "YCbCr"}


def test_files_of_every_mode(tmp_path, photo, grey, alpha):
    files = _mode_files(tmp_path, photo, grey, alpha)
    assert {name: mode for name, (mode, _) in files.items()} == EXPECTED_FILE_MODES
    for name, (_, expected) in files.items():
        diff = np.abs(np.asarray(load_image(tmp_path / name)).astype(int) - expected.astype(int))
        assert diff.max() <= 1, (name, diff.max())


def test_exif_orientation_is_applied_before_the_conversion(tmp_path, grey):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "rotated.png", exif=exif)
    out = np.asarray(load_image(tmp_path / "rotated.png"))
    assert np.array_equal(out, grey3(np.rot90(grey, -1)))


# -- large images ----------------------------------------------------------------------------------

def make_photo_jpeg(path: Path, width: int, height: int, exif: Image.Exif | None = None) -> None:
    """A real photo enlarged, over colour gradients, with sharp edges and fine texture: a JPEG."""
    x = np.arange(width, dtype=np.uint16)
    y = np.arange(height, dtype=np.uint16)[:, None]
    a = np.empty((height, width, 3), np.uint8)
    a[..., 0] = (x * 255 // width).astype(np.uint8)
    a[..., 1] = (y * 255 // height).astype(np.uint8)
    a[..., 2] = ((x // 40 ^ y // 40) & 1) * 200  # a checkerboard
    a[..., 1] += np.tile(np.random.default_rng(0).integers(0, 32, (8, width), dtype=np.uint8), (height // 8 + 1, 1))[:height]
    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    photo = photo.resize((width // 3, width // 3 * photo.height // photo.width), Image.BICUBIC)
    a[height // 4 : height // 4 + photo.height, width // 3 : width // 3 + photo.width] = np.asarray(photo)
    image = Image.fromarray(a)
    del a
    image.save(path, quality=40, **({"exif": exif} if exif is not None else {}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("world")
    yield path
    for p in path.rglob("*"):  # unlocked for pytest's clean-up
        if not p.is_symlink():
            p.chmod(0o755)


@pytest.fixture(scope="module")
def jpeg_108mp(world) -> Path:
    path = world / "photo-108mp.jpg"
    make_photo_jpeg(path, 12000, 9000)
    return path


@pytest.mark.slow
def test_a_108_megapixel_jpeg_is_decoded_at_reduced_size(jpeg_108mp, tiny_backbone):
    start = time.perf_counter()
    full = load_image(jpeg_108mp)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    reduced = load_image(jpeg_108mp, min_short_side=896)  # ViT-B/32: four input sizes
    reduced_s = time.perf_counter() - start
    print(f"108 MP JPEG: full decode {full_s:.2f} s, reduced {reduced_s:.2f} s")
    assert full.size == (12000, 9000)
    assert reduced.size == (3000, 2250)  # 1/4: still twice the shorter side asked for
    assert load_image(jpeg_108mp, min_short_side=256).size == (1500, 1125)
    assert load_image(jpeg_108mp, min_short_side=2250).size == (6000, 4500)
    assert load_image(jpeg_108mp, min_short_side=2251).size == (12000, 9000)

    # What the pipeline keeps is the same within a few levels: view 0 (resized from the whole image)
    # and the capped source of the random views.
    import open_clip

    preprocess = open_clip.image_transform(224, is_train=False, mean=(0, 0, 0), std=(1, 1, 1))
    view0 = np.abs(preprocess(reduced).numpy() - preprocess(full).numpy()) * 255
    assert view0.max() <= 2.5 and view0.mean() < 0.5, (view0.max(), view0.mean())
    capped = np.abs(np.asarray(cap_size(reduced, 896)).astype(int) - np.asarray(cap_size(full, 896)).astype(int))
    assert capped.mean() < 1.5, capped.mean()
    del full

    # In a loader worker: decoded at reduced size, the views' source capped as before.
    source = ViewSource(tiny_backbone.preprocess, 4 * max(tiny_backbone.image_size))
    sample = source[(0, str(jpeg_108mp), 3, 0)]
    assert sample.error is None and tuple(sample.pixels.shape) == (3, 256, 341)


def test_reduced_decoding_keeps_the_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    make_photo_jpeg(path, 4000, 3000, exif=exif)
    full = load_image(path)
    reduced = load_image(path, min_short_side=256)
    assert full.size == (3000, 4000) and reduced.size == (750, 1000)
    a = np.asarray(full.resize(reduced.size, Image.BOX)).astype(int)
    assert np.abs(a - np.asarray(reduced).astype(int)).mean() < 3


def png_bomb(path: Path, width: int, height: int) -> None:
    """A valid one-colour bilevel PNG: one compressed segment of rows, repeated (nothing of its size in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = 1000  # a deflate segment of this many rows (all 0) after a full flush stands alone: repeated
    segment = bytes((1 + (width + 7) // 8) * rows)
    z = zlib.compressobj(9)
    head = z.compress(segment) + z.flush(zlib.Z_FULL_FLUSH)
    body = z.compress(segment) + z.flush(zlib.Z_FULL_FLUSH)
    end = z.flush()[:-4]  # the last block; the checksum over the whole stream follows
    check = 1
    for _ in range(height // rows):
        check = zlib.adler32(segment, check)
    assert height % rows == 0
    idat = head + body * (height // rows - 1) + end + struct.pack(">I", check)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_bomb(path: Path, width: int, height: int) -> None:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb])
def test_a_decompression_bomb_is_refused_quickly(make, tmp_path, tiny_backbone):
    path = tmp_path / ("bomb.png" if make is png_bomb else "bomb.jpg")
    make(path, 40000, 40000)
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    with pytest.raises(ImageError) as e:
        load_image(path, min_short_side=896)
    assert time.perf_counter() - start < 2
    message = str(e.value)
    assert "\n" not in message
    assert message == (f"{path}: 40000 x 40000 pixels (1600 MP) is more than the limit of 178,956,970 pixels "
                       "(a possible decompression bomb)")
    assert e.value.describe({"max_pixels": "--max-pixels"}) == message + "; raise the limit with --max-pixels"
    assert e.value.kind == "limit" and e.value.data == {"pixels": 40000 * 40000, "limit": 178_956_970}
    assert str(ViewSource(tiny_backbone.preprocess, 256)[(0, str(path), 2, 0)].error) == message


def test_max_pixels(jpeg_108mp, tmp_path, monkeypatch, photo):
    assert DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="12000 x 9000 pixels .108 MP. is more than the limit of 100,000,000"):
        load_image(jpeg_108mp, min_short_side=896, max_pixels=100_000_000)
    photo.save(tmp_path / "photo.png")
    assert load_image(tmp_path / "photo.png", max_pixels=451 * 300).size == (451, 300)
    with pytest.raises(ImageError, match="451 x 300 pixels"):
        load_image(tmp_path / "photo.png", max_pixels=451 * 300 - 1)
    from awt.images import Decoding
    from awt.loading import ViewLoader

    loader = ViewLoader(lambda im: torch.zeros(3, 4, 4), 64, num_workers=0, pin_memory=False,
                        decoding=Decoding(max_pixels=1000))
    (batch,) = loader([str(tmp_path / "photo.png")], n_random=2, seed=0, batch_size=1)
    assert [(i, str(e)) for i, e in batch.errors] == [
        (0, f"{tmp_path / 'photo.png'}: 451 x 300 pixels (0.1 MP) is more than the limit of 1,000 pixels (a possible "
            "decompression bomb)")]
    # PIL's own limit (a global) neither applies nor changes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_image(tmp_path / "photo.png").size == (451, 300)
    assert load_image(tmp_path / "photo.png", max_pixels=None).size == (451, 300)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "photo.png")


# -- finding inputs; what cannot be read -----------------------------------------------------------

def test_find_images_order_and_kinds(tmp_path):
    for name in ["b.jpg", "b/x.PNG", "b-c.jpg", "a/notes.txt", "a/deep/er/z.webp", "c.tiff", "readme.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink(tmp_path / "b", tmp_path / "linked-dir")      # not followed
    os.symlink(tmp_path / "c.tiff", tmp_path / "linked.jpg")  # a file: kept
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    found = [os.path.relpath(p, tmp_path) for p in find_images([tmp_path])]
    assert found == ["a/deep/er/z.webp", "b/x.PNG", "b-c.jpg", "b.jpg", "broken.jpg", "c.tiff", "linked.jpg"]
    assert found == sorted(found, key=lambda p: Path(p).parts)  # pathlib's order, as before
    assert find_images([tmp_path / "missing.jpg", tmp_path / "readme.md"]) == [str(tmp_path / "missing.jpg"),
                                                                              str(tmp_path / "readme.md")]
    with pytest.raises(ImageError, match="broken.jpg: broken symbolic link"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(ImageError, match="dir.jpg: is a directory"):
        load_image(tmp_path / "dir.jpg")


# Root reads anything: a root test runs this first, which drops CAP_DAC_OVERRIDE and
# CAP_DAC_READ_SEARCH from the capability bounding set, so that the program it then runs is root
# bound by file permissions like anyone else (user nobody could not reach this Python in /root).
_DROP_DAC = """if True:
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(f"prctl: {os.strerror(ctypes.get_errno())}")
    os.execv(sys.argv[1], sys.argv[1:])
"""


def _unprivileged(args: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``args`` bound by file permissions (see _DROP_DAC)."""
    if os.geteuid() == 0:
        args = [sys.executable, "-c", _DROP_DAC, *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def locked(world):
    """A tree with a file and a folder that the unprivileged user cannot read."""
    root = world / "tree"
    (root / "private").mkdir(parents=True)
    shutil.copy(EXAMPLES / "cat.jpg", root / "cat.jpg")
    shutil.copy(EXAMPLES / "cat.jpg", root / "private" / "inside.jpg")
    shutil.copy(EXAMPLES / "coffee.jpg", root / "secret.jpg")
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    (root / "secret.jpg").chmod(0o000)
    (root / "private").chmod(0o000)
    probe = _unprivileged([sys.executable, "-c", f"open({str(root / 'secret.jpg')!r}, 'rb')"], cwd=REPO)
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"cannot run a process bound by file permissions here: {probe.stderr.strip()[-200:]}")
    return root


def test_unreadable_files_and_folders_are_reported(locked):
    code = """if True:
        import json, sys
        from awt.images import find_images, load_image, ImageError
        root = sys.argv[1]
        out = {}
        for label, inputs in [("walk", [root]), ("named", [root + "/secret.jpg", root + "/private/inside.jpg",
                                                             root + "/private", root + "/broken.jpg"])]:
            found = find_images(inputs)
            errors = []
            for p in found:
                try:
                    load_image(p)
                    errors.append(None)
                except ImageError as e:
                    errors.append(str(e))
            out[label] = [found, errors]
        print(json.dumps(out))
    """
    r = _unprivileged([sys.executable, "-c", code, str(locked)], cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    root = str(locked)
    found, errors = out["walk"]
    assert found == [f"{root}/broken.jpg", f"{root}/cat.jpg", f"{root}/private", f"{root}/secret.jpg"]
    assert errors == [f"{root}/broken.jpg: broken symbolic link (no such file)", None,
                      f"{root}/private: cannot read directory: permission denied",
                      f"{root}/secret.jpg: cannot open: permission denied"]
    found, errors = out["named"]
    assert found == [f"{root}/secret.jpg", f"{root}/private/inside.jpg", f"{root}/private", f"{root}/broken.jpg"]
    assert errors == [f"{root}/secret.jpg: cannot open: permission denied",
                      f"{root}/private/inside.jpg: cannot open: permission denied",
                      f"{root}/private: cannot read directory: permission denied",
                      f"{root}/broken.jpg: broken symbolic link (no such file)"]


@pytest.mark.slow
def test_one_run_over_every_kind_of_input(world, locked, jpeg_108mp, photo, grey, alpha):
    """The issue's check: every mode, a 108 MP JPEG, bombs, an unreadable file and folder, in one
    `awt classify` run over a folder; the 16-bit PNG scores as its 8-bit original."""
    from conftest import write_tiny_model

    inputs = world / "inputs"
    inputs.mkdir()
    files = _mode_files(inputs, photo, grey, alpha)
    os.link(jpeg_108mp, inputs / "photo-108mp.jpg")
    png_bomb(inputs / "bomb.png", 40000, 40000)
    jpeg_bomb(inputs / "bomb.jpg", 40000, 40000)
    shutil.copy(EXAMPLES / "rocket.jpg", inputs / "unreadable.jpg")
    (inputs / "unreadable-folder").mkdir()
    shutil.copy(EXAMPLES / "astronaut.jpg", inputs / "unreadable-folder" / "astronaut.jpg")
    (inputs / "unreadable.jpg").chmod(0o000)
    (inputs / "unreadable-folder").chmod(0o000)
    home = world / "home"
    model = write_tiny_model(world / "model")
    classes = world / "classes.txt"
    classes.write_text("cat\ncup of coffee\nrocket\nastronaut\n")
    env = {**os.environ, "HOME": str(home), "AWT_CACHE_DIR": str(home / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    try:
        r = _unprivileged([sys.executable, "-m", "awt", "classify", str(inputs), "--classes", str(classes),
                           "--model", model, "--views", "4", "--json", "--top-k", "4"], cwd=REPO, env=env)
    finally:
        (inputs / "unreadable-folder").chmod(0o755)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    by_name = {os.path.relpath(x["image"], inputs): x for x in map(json.loads, r.stdout.splitlines())}
    errors = {name: x["error"] for name, x in by_name.items() if "error" in x}
    assert set(by_name) == set(files) | {"photo-108mp.jpg", "bomb.png", "bomb.jpg", "unreadable.jpg", "unreadable-folder"}
    assert set(errors) == {"bomb.png", "bomb.jpg", "unreadable.jpg", "unreadable-folder"}, errors
    assert "decompression bomb" in errors["bomb.png"] and "decompression bomb" in errors["bomb.jpg"]
    assert errors["unreadable.jpg"].endswith("cannot open: permission denied")
    assert errors["unreadable-folder"].endswith("cannot read directory: permission denied")
    assert "4 of 20 input(s) could not be read" in r.stderr

    def scores(name):
        return {p["class"]: p["score"] for p in by_name[name]["predictions"]}

    for name in ("grey16.png", "grey16-bigendian.tif", "grey16-littleendian.tif", "int32.tif", "float.tif", "grey.png"):
        assert scores(name) == scores("original-8bit.png"), name


def test_bytes_are_read_as_a_file_is(tmp_path, photo, tiny_backbone):
    """An upload (a file's bytes) is decoded with the same checks and gives the same pixels and views."""
    from awt.classifier import AWTClassifier
    from awt.spec import ClassifierSpec

    path = tmp_path / "photo.jpg"
    photo.save(path, quality=90)
    data = path.read_bytes()
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(load_image(path)))
    with pytest.raises(ImageError, match=r"^<bytes>: not an image"):
        load_image(b"%!PS-Adobe-3.0 EPSF-3.0\n")                       # never reaches Ghostscript
    with pytest.raises(ImageError, match=r"^<bytes>: 451 x 300 pixels .* more than the limit of 1,000"):
        load_image(data, max_pixels=1000)
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(["cat", "rocket"], views=2, cache_dir=None))
    from_file, from_bytes, junk = clf.classify([str(path), data, b"junk"], num_workers=0)
    assert from_bytes.image == "<bytes>" and from_bytes.predictions == from_file.predictions
    assert junk.error == "not an image (or an unsupported format)"


def test_a_jpeg_decodes_after_another_library_loaded_one_pil_plugin():
    """matplotlib imports PIL's PNG plugin alone; awt's list of formats still holds every one it reads."""
    code = ("from PIL import PngImagePlugin\nfrom awt.images import load_image\n"
            f"print(load_image({str(REPO / 'awt' / 'data' / 'examples' / 'cat.jpg')!r}).size)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("(")
