"""The ``awt`` command run as a user runs it: a real process, offline, with its own cache folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def awt_env(cache: Path) -> dict:
    """The environment of a test's ``awt`` process: its cache in ``cache``, the Hub offline."""
    return {**os.environ, "AWT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def run_awt(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """``python -m awt ARGS`` from the repository root; its exit status and output."""
    return subprocess.run([sys.executable, "-m", "awt", *args], capture_output=True, text=True, env=awt_env(cache),
                          cwd=REPO, timeout=300)
