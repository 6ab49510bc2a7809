"""The command line: ``awt classify``, ``awt explain``, ``awt describe``, ``awt bench``, ``awt models``, ``awt serve``.

This package is the only place that knows about typer, exit codes and stderr; the library below it
never imports it. Each command module imports only light modules at load time (its heavy imports
happen when the command runs), so ``awt --help`` and ``awt describe`` start without torch.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import warnings

import typer

from .. import __version__
from ..errors import AWTError, first_line
from .flags import FLAGS
from .interrupts import defer_interrupts, interrupt_pending
from .text import printable

# rich_markup_mode=None: plain click help, which wraps to the terminal and never cuts option names
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Training-free zero-shot image classification with AWT over dual-encoder models.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {printable(str(message))}", file=sys.stderr)


class _Notes(logging.Formatter):
    """Notes as they are; warnings and errors behind their level: ``warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno <= logging.INFO:
            return printable(record.getMessage())
        return f"{record.levelname.lower()}: {printable(record.getMessage())}"


def _rank_prefix() -> str:
    """``rank N: `` under a launcher's rank N > 0 (rank 0 speaks plainly); empty otherwise."""
    from ..distributed import ranks_from_env

    rank = ranks_from_env().rank
    return f"rank {rank}: " if rank else ""




def _os_error(e: OSError) -> str:
    """One line for a failing write or read of the command's own streams and files."""
    reason = e.strerror or str(e) or type(e).__name__
    if isinstance(e, BrokenPipeError):
        return "the output was closed before the end (broken pipe)"
    return f"cannot write {e.filename}: {reason}" if e.filename else f"cannot write the output: {reason}"


def _close_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of a broken one is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _is_click_error(e: BaseException) -> bool:
    """One of click's usage errors (typer ships its own copy of click, so the class is not enough)."""
    return hasattr(e, "format_message") and hasattr(e, "exit_code")


def _outcome(e: BaseException) -> tuple[int, str | None]:
    """The exit status and the one line of a command that raised ``e`` (click's own errors, and
    anything with ``AWT_TRACEBACK`` set, are raised again)."""
    if isinstance(e, AWTError):
        return 1, f"error: {printable(e.describe(FLAGS))}"
    if isinstance(e, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(e, typer.Exit):   # the command's own status (unreadable inputs, its own Ctrl-C line)
        return e.exit_code, None
    if isinstance(e, OSError):
        if isinstance(e, BrokenPipeError) or e.filename is None:
            _close_stdout()
        return 1, f"error: {printable(_os_error(e))}"
    if _is_click_error(e) or not isinstance(e, Exception) or os.environ.get("AWT_TRACEBACK"):
        raise e
    return 1, (f"error: unexpected {type(e).__name__}: {printable(first_line(e))} (a bug in awt: AWT_TRACEBACK=1 "
               "shows where; please report it)")


def user_errors(fn):
    """Run a command with its user errors as one line on stderr: AWTError -> exit status 1, Ctrl-C
    -> 130; a write to stdout or a file that fails (full disk, closed pipe) -> 1. The library's notes
    (the ``awt`` loggers) print on stderr, warnings as ``warning: ...``; progress bars are drawn (on
    a terminal, by rank 0). Anything else is a bug: one line too, with how to see its traceback
    (``AWT_TRACEBACK=1``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        if not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_Notes())
            logging.basicConfig(level=logging.ERROR, handlers=[handler])  # other libraries: errors only
            logging.getLogger("awt").setLevel(logging.INFO)
        rank = _rank_prefix()
        if rank:  # rank 0 alone says the notes and warnings that every rank would repeat
            warnings.simplefilter("ignore")
            logging.getLogger("awt").setLevel(logging.ERROR)
        from ..progress import show_progress

        show_progress(not rank)
        code, message, result = 0, None, None
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            defer_interrupts()   # what the command built is torn down as this handler lets go of it
            code, message = _outcome(e)
        # the rest of the teardown (loader workers) runs now, with Ctrl-C recorded
        defer_interrupts()
        gc.collect()
        if interrupt_pending() and code == 0:
            code, message = 130, "interrupted"
        if message:
            print(f"{rank}{message}", file=sys.stderr)
        if code:
            raise typer.Exit(code)
        return result

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"awt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Training-free zero-shot image classification with AWT over dual-encoder models."""


def _register() -> None:
    from .bench import bench
    from .classify import classify
    from .describe import describe
    from .explain import explain
    from .models import models
    from .serve import serve

    from .classify import METHODS_EPILOG

    for name, command in (("classify", classify), ("explain", explain), ("describe", describe), ("bench", bench), ("models", models),
                          ("serve", serve)):
        app.command(name, epilog=METHODS_EPILOG if name == "classify" else None)(user_errors(command))


_register()


def main() -> None:
    """The ``awt`` command: a bad option or argument is one line too (``error: Invalid value for
    '--views': -1 is not in the range x>=0.``, exit status 2), not a usage box."""
    try:
        code = app(prog_name="awt", standalone_mode=False)
        sys.stdout.flush()   # here, where a full disk or a closed pipe can still be said in one line
    except KeyboardInterrupt:  # during parsing or start-up, before a command's own handling
        print("interrupted", file=sys.stderr)
        code = 130
    except OSError as e:
        _close_stdout()
        print(f"error: {_os_error(e)}", file=sys.stderr)
        code = 1
    except Exception as e:
        if _is_click_error(e):
            print(f"error: {printable(e.format_message())}", file=sys.stderr)
            code = e.exit_code
        elif type(e).__name__ == "Abort":   # click's answer to a Ctrl-C (or an EOFError) while parsing
            print("interrupted", file=sys.stderr)
            code = 130
        else:
            raise
    if interrupt_pending() and code == 0:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
