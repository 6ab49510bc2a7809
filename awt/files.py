"""Files: the one atomic writer every cache and record uses, the one reader of line lists, and the
cache folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, IO

from . import defaults
from .errors import AWTError


class WriteError(AWTError, OSError):
    """A file could not be written (a full disk, a read-only folder, ...); the old file, if any, is
    intact. An OSError too, for callers that catch those."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` so that it is either the old file or the whole new one.

    ``write`` fills a temporary file in the same folder, which is flushed, fsynced and renamed over
    ``path``; the folder is then fsynced so that the rename itself survives a crash. The file gets
    the usual permissions (0o666 less the umask), not the owner-only ones of ``mkstemp``. A failure
    of the file system (full, read-only, no permission) is a :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise WriteError(f"cannot write {target}: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {target}: {_reason(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and make sure files can be written into it (a small file is written
    and removed: a full disk fails here, before the work whose results would go there). An AWTError
    naming the folder and ``what`` it is for otherwise."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AWTError(f"{folder}: the {what} is a file, not a folder") from None
    except OSError as e:
        raise AWTError(f"{folder}: cannot create the {what}: {_reason(e)}") from None
    if not folder.is_dir():
        raise AWTError(f"{folder}: the {what} is not a folder")
    probe = folder / f".awt-write-test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise AWTError(f"{folder}: cannot write into the {what}: {_reason(e)}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` (``\\n`` line ends) atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_lines(path: str | os.PathLike, what: str) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 file that does not start with ``#``.

    Every problem is an AWTError naming the file and what it is: ``x.txt: class file not found``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AWTError(f"{p}: {what} file not found") from None
    except IsADirectoryError:
        raise AWTError(f"{p}: {what} file expected, found a directory") from None
    except UnicodeDecodeError as e:
        raise AWTError(f"{p}: {what} file is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise AWTError(f"{p}: cannot read {what} file: {e.strerror or e}") from None
    lines = ((n, line.strip()) for n, line in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def default_cache_dir() -> Path:
    """``$AWT_CACHE_DIR``, else ``$XDG_CACHE_HOME/awt``, else ``~/.cache/awt``."""
    if os.environ.get(defaults.CACHE_ENV):
        return Path(os.environ[defaults.CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "awt"


def check_cache_dir(cache_dir: str | os.PathLike) -> Path:
    """Create ``cache_dir`` if needed; an AWTError if it cannot hold cache files (checked before the
    work whose result it would keep)."""
    path = Path(cache_dir)
    hint = "choose another {cache_dir}, or {no_cache}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AWTError(f"{path}: cache directory is a file", setting="cache_dir", hint=hint) from None
    except OSError as e:
        raise AWTError(f"{path}: cannot create cache directory: {e.strerror or e}", setting="cache_dir",
                       hint=hint) from None
    if not path.is_dir():
        raise AWTError(f"{path}: cache directory is not a directory", setting="cache_dir", hint=hint)
    if not os.access(path, os.W_OK | os.X_OK):
        raise AWTError(f"{path}: cache directory is not writable", setting="cache_dir", hint=hint)
    return path
