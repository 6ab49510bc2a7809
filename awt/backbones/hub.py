"""The Hugging Face Hub, asked before anything is downloaded: is a repository's file already on disk,
and can the Hub be reached at all. Without these two answers a missing network costs the hub
client's minute of retries and a screen of warnings; with them it is one line within seconds."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator
from urllib.parse import urlsplit

_TRUE = ("1", "true", "yes", "on")


def offline_env() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def unreachable_reason() -> str | None:
    """Why the Hub cannot be used now (``HF_HUB_OFFLINE is set``, ``huggingface.co cannot be
    reached``), or None when it can."""
    if offline_env():
        return "HF_HUB_OFFLINE is set"
    url = endpoint()
    if not host_reachable(url):
        return f"{urlsplit(url).netloc or url} cannot be reached"
    return None


def cached(repo: str, filename: str, cache_dir: str | os.PathLike | None = None, revision: str | None = None) -> bool:
    """Whether ``filename`` of ``repo`` (at ``revision``) is in the local Hub cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=None if cache_dir is None else str(cache_dir),
                                       revision=revision)
    except Exception:  # a malformed repo id or revision: not cached
        return False
    return isinstance(found, str)


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """The hub client in offline mode for the duration: files come from the cache, no request is tried."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
