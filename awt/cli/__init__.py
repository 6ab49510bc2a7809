"""The command line: ``awt classify``, ``awt describe``, ``awt bench``, ``awt models``.

This package is the only place that knows about typer, exit codes and stderr; the library below it
never imports it. Each command module imports only light modules at load time (its heavy imports
happen when the command runs), so ``awt --help`` and ``awt describe`` start without torch.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings

import typer

from .. import __version__
from ..errors import AWTError

# rich_markup_mode=None: plain click help, which wraps to the terminal and never cuts option names
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Training-free zero-shot image classification with AWT over dual-encoder models.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


class _Notes(logging.Formatter):
    """Notes as they are; warnings and errors behind their level: ``warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno <= logging.INFO:
            return record.getMessage()
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _rank_prefix() -> str:
    """``rank N: `` under a launcher's rank N > 0 (rank 0 speaks plainly); empty otherwise."""
    from ..distributed import ranks_from_env

    rank = ranks_from_env().rank
    return f"rank {rank}: " if rank else ""


#: each library setting as the command line spells it, for the hints errors carry (awt.errors)
FLAGS = {
    "classes": "--classes", "descriptions": "--descriptions", "template": "--template", "views": "--views",
    "descriptions_per_class": "--descriptions-per-class", "allow_fewer_descriptions": "--allow-fewer-descriptions",
    "model": "--model", "pretrained": "--pretrained", "device": "--device", "precision": "--precision",
    "seed": "--seed", "method": "--method", "cache_dir": "--cache-dir", "no_cache": "--no-cache",
    "max_pixels": "--max-pixels", "batch_size": "--batch-size", "workers": "--workers",
    # awt describe
    "llm": "--llm", "base_url": "--base-url", "out": "--out", "questions": "--questions", "per_class": "--per-class",
    "num_questions": "--num-questions", "concurrency": "--concurrency", "timeout": "--timeout",
    "max_attempts": "--max-attempts", "max_requests": "--max-requests", "backoff": "--backoff",
}


def user_errors(fn):
    """Run a command with its user errors as one line on stderr: AWTError -> exit status 1, Ctrl-C
    -> 130. The library's notes (the ``awt`` loggers) print on stderr, warnings as ``warning: ...``;
    progress bars are drawn (on a terminal, by rank 0)."""

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
        try:
            return fn(*args, **kwargs)
        except AWTError as e:
            print(f"{rank}error: {e.describe(FLAGS)}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print(f"{rank}interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

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
    from .models import models

    from .classify import METHODS_EPILOG

    for name, command in (("classify", classify), ("describe", describe), ("bench", bench), ("models", models)):
        app.command(name, epilog=METHODS_EPILOG if name == "classify" else None)(user_errors(command))


_register()


def main() -> None:
    """The ``awt`` command: a bad option or argument is one line too (``error: Invalid value for
    '--views': -1 is not in the range x>=0.``, exit status 2), not a usage box."""
    try:
        code = app(prog_name="awt", standalone_mode=False)
    except Exception as e:
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):  # not one of click's errors
            raise
        print(f"error: {e.format_message()}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:  # during parsing or start-up, before a command's own handling
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
