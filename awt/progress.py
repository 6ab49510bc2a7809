"""Progress bars: the one helper every long stage uses.

The library never decides to draw: a front end turns bars on (:func:`show_progress`), and even then
they are drawn only on a terminal, so a log file never fills with carriage returns. Bars go to stderr,
leaving stdout to results.
"""

from __future__ import annotations

import sys

_shown = False


def show_progress(on: bool = True) -> None:
    """Draw progress bars from now on (``on=False``: stop); the command line turns them on."""
    global _shown
    _shown = on


def progress_bar(total: int | None, desc: str, unit: str = "it", *, disable: bool = False, **options):
    """A tqdm bar on stderr, disabled unless bars are shown and stderr is a terminal (or with
    ``disable``); iterate it (``iterable=``), use it as a context manager, or call ``update`` and
    ``close``. ``options`` go to tqdm (``initial``, ``smoothing``, ...)."""
    from tqdm.auto import tqdm

    drawn = _shown and sys.stderr.isatty() and not disable
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not drawn, **options)
