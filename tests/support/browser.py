"""The system's headless Chromium, driven by Playwright, for the tests of pages and reports.

Skips, with the reason, where no Chromium is installed (``apt-get install chromium``) or Playwright
is missing. ``AWT_SCREENSHOTS=DIR`` keeps the screenshots there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def launch_browser():
    """A generator for a module fixture: the launched browser, closed after the module."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the browser test is skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        # no sandbox: tests may run as root, where Chromium refuses its sandbox
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def watch(page) -> tuple[list[str], list[str]]:
    """Lists that fill with the page's console errors and warnings (and uncaught errors), and with
    every URL it requests."""
    problems, requested = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requested.append(r.url))
    return problems, requested


def shot(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in ``tmp_path`` (and in ``$AWT_SCREENSHOTS``, when set)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("AWT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path
