"""What an input file must be before a decoder sees it, and how a decoder's complaints reach the
user: only regular files in image formats are decoded (a FIFO would block, a device stream forever,
an EPS file reach Ghostscript); a decoder's exception becomes a few words without raw bytes, and its
warnings -- Python's and what libtiff writes to stderr -- are said once each, with the file's path."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
import warnings
from typing import IO, Iterable, Iterator

from PIL import Image

# The formats an input may be: raster formats PIL decodes itself. Not EPS (PIL hands it to
# Ghostscript, a PostScript interpreter), nor the stubs, metadata or scientific formats PIL also
# identifies.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "TGA", "ICO", "PCX", "JPEG2000", "AVIF",
                 "QOI", "SGI", "HEIF")
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}
_BYTES = re.compile(r"""\bb(['"])((?:\\.|(?!\1).)*)\1""")   # a bytes repr in a library's message
_SHOWN_WARNINGS = 3   # distinct decoder warnings said per file

_log = logging.getLogger("awt.images")


class NotRegularFile(Exception):
    """An input that is not a regular file; the message says what it is (``a FIFO``)."""


class ImageWarning(UserWarning):
    """A decoder's warning about one input file (corrupt metadata, data past the end, ...)."""


def open_regular(path: str) -> IO[bytes]:
    """``path`` opened for reading; NotRegularFile unless it is a regular file (with O_NONBLOCK the
    open returns at once, also for a FIFO without a writer), IsADirectoryError for a directory."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", path)
        if not stat.S_ISREG(mode):
            raise NotRegularFile(_KINDS.get(stat.S_IFMT(mode), "a special file"))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def formats() -> list[str]:
    """The formats of :data:`IMAGE_FORMATS` this PIL can open (for ``Image.open(..., formats=...)``)."""
    # Image.ID is not the test: a library that imported one plugin (matplotlib imports PNG's) fills it
    Image.init()   # every plugin, once (later calls return at once)
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def without_bytes(message: str) -> str:
    """A library's message with its raw bytes (``b'\\x89PN'``) left out: printable ones as text."""
    def plain(m: re.Match) -> str:
        body = m.group(2)
        return f"'{body}'" if re.fullmatch(r"[ -~]*", body) and "\\" not in body else "(binary data)"
    return _BYTES.sub(plain, message)


def describe_error(error: BaseException) -> str:
    """A decoder's exception in a few words: its first line (raw bytes left out), with its type where
    that is not one of the usual decoding errors."""
    text = without_bytes(str(error).strip().splitlines()[0]) if str(error).strip() else ""
    usual = isinstance(error, (SyntaxError, ValueError, MemoryError, OSError))
    return text if text and usual else f"{type(error).__name__}: {text}" if text else type(error).__name__


def reissue(path: str, caught: Iterable[warnings.WarningMessage]) -> None:
    """The warnings a decoder gave about ``path``, again, once each and naming it (at most a few), as
    notes of the ``awt.images`` logger."""
    distinct = [m for m in dict.fromkeys(" ".join(without_bytes(str(w.message)).split()) for w in caught) if m]
    for message in distinct[:_SHOWN_WARNINGS]:
        _log.warning(f"{path}: {message}")
    if len(distinct) > _SHOWN_WARNINGS:
        _log.warning(f"{path}: {len(distinct) - _SHOWN_WARNINGS} more decoder warning(s)")


@contextlib.contextmanager
def stderr_as_warnings() -> Iterator[None]:
    """What C code writes to file descriptor 2 meanwhile (libtiff's warnings, which name its stream
    ``tempfile.tif``, not the file) caught and issued as warnings, for :func:`reissue` to name the file."""
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no stderr to redirect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read(1 << 16).decode("utf-8", "replace").splitlines():
                warnings.warn(line.removeprefix("tempfile.tif: "), ImageWarning)


class Unreadable(str):
    """An input whose error was found before it went to a loader worker: the reason, as its item."""


def sendable(item):
    """``item``, ready to travel to a loader worker: a PIL image opened lazily is decoded here (it is
    pickled whole), and one whose decoder fails becomes an :class:`Unreadable` (that image's error,
    not a lost batch)."""
    if isinstance(item, Image.Image):
        try:
            item.load()
        except Exception as e:
            return Unreadable(f"<{type(item).__name__}>: cannot decode: {describe_error(e)}")
    return item
