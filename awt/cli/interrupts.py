"""Ctrl-C at the end of a command: recorded, not raised.

Once a command's results are out, what it built is torn down in finalizers (a DataLoader's workers
are joined in its iterator's ``__del__``). A KeyboardInterrupt raised there cannot propagate: Python
prints it as an ignored exception, traceback and all, and the process exits 0. From the moment
:func:`defer_interrupts` is called, Ctrl-C only sets a flag, and the command ends with status 130
and one line once the teardown is done.
"""

from __future__ import annotations

import signal
import threading

_pending = False


def _record(signum, frame) -> None:
    global _pending
    _pending = True


def defer_interrupts() -> None:
    """From now until the process ends, Ctrl-C is recorded (see :func:`interrupt_pending`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _record)


def interrupt_pending() -> bool:
    """Whether Ctrl-C came after :func:`defer_interrupts`."""
    return _pending
