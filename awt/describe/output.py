"""The output of a describe run: a descriptions file with its provenance (the LLM, the endpoint,
the questions, when), resumable, written atomically, held under an exclusive lock.

The file is rewritten atomically each time a class finishes, so a killed run loses only the
classes in flight, and a rerun asks only for unfinished classes. An exclusive lock (``OUT.lock``,
via ``flock``) keeps a second run off the same file: it fails at once with a clear message instead
of waiting. The lock file is left in place on purpose (removing it could let two runs lock
different files).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import awt
from awt.describe.clean import check_question
from awt.describe.generate import DescribeSettings
from awt.descriptions import DescriptionSet, load_descriptions, save_descriptions
from awt.errors import AWTError
from awt.files import WriteError

_log = logging.getLogger("awt.describe")

def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def exclusive_lock(out: Path) -> Iterator[Path]:
    """Hold ``OUT.lock`` exclusively, or fail at once if another run holds it."""
    lock_path = out.with_name(out.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise AWTError(f"cannot create lock file {lock_path}: {e.strerror or e}") from None
    try:
        if not _try_lock(fd):
            raise AWTError(
                f"another `awt describe` is writing {out} (lock {lock_path} is held); "
                "wait for it to finish, then rerun to resume", setting="out", hint="or choose another {out}"
            )
        yield lock_path
    finally:
        os.close(fd)  # closing releases the lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class DescribeOutput:
    """The run's view of its output file; only the main thread touches it."""

    def __init__(self, path: Path, names: list[str], descriptions: list[list[str]], meta: dict[str, Any]) -> None:
        self.path = path
        self.names = names
        self.descriptions = descriptions
        self.meta = meta

    def done(self, index: int) -> bool:
        return len(self.descriptions[index]) >= int(self.meta["per_class"])

    def save(self) -> None:
        self.meta["complete"] = all(self.done(i) for i in range(len(self.names)))
        self.meta["updated"] = _now()
        try:
            save_descriptions(self.path, self.names, self.descriptions, self.meta)
        except WriteError as e:   # the file on disk is the last one saved, whole (atomic writes)
            kept = "the classes saved before are intact in it" if self.path.is_file() else "nothing was saved yet"
            raise WriteError(f"{e}; {kept}: free some space (or fix the folder) and rerun to resume") from None


def open_output(settings: DescribeSettings, names: list[str], user_questions: list[str] | None) -> DescribeOutput:
    out = settings.out
    meta_now = {
        "per_class": settings.per_class,
        "awt_version": awt.__version__,
    }
    if not out.exists():
        meta = {
            "llm": settings.llm,
            "endpoint_host": None,
            "dataset_description": settings.dataset_description,
            "questions": user_questions or [],
            "questions_source": "file" if user_questions else "llm",
            "created": _now(),
            "complete": False,
            **meta_now,
        }
        return DescribeOutput(out, names, [[] for _ in names], meta)
    existing: DescriptionSet = load_descriptions(out)
    if not existing.has_provenance:
        raise AWTError(f"{out} exists and is not an `awt describe` output file; refusing to overwrite it",
                       setting="out", hint="choose another {out}")
    if existing.names != names:
        diff = next((i for i, (a, b) in enumerate(zip(existing.names, names)) if a != b), min(len(names), len(existing.names)))
        raise AWTError(
            f"{out} was started for a different class list ({len(existing.names)} classes there, {len(names)} in "
            f"{settings.classes}; first difference at class {diff})", setting="out",
            hint="delete it or choose another {out}"
        )
    meta = dict(existing.meta)
    saved_q = meta.get("questions") or []
    if not (isinstance(saved_q, list) and all(isinstance(q, str) and check_question(q) is None for q in saved_q)):
        raise AWTError(f"{out}: 'meta.questions' is not a list of questions with {{}}; delete the file to start over")
    if user_questions and saved_q and user_questions != saved_q:
        raise AWTError(
            f"{out} was started with different questions than {settings.questions}", setting="questions",
            hint="rerun without {questions} to reuse the saved ones, or delete the file to start over"
        )
    if not saved_q and user_questions:
        meta["questions"], meta["questions_source"] = user_questions, "file"
    if settings.dataset_description and meta.get("dataset_description") not in ("", None, settings.dataset_description):
        _log.info(f"note: {out} keeps its saved dataset description; the questions were made from it")
    elif settings.dataset_description:
        meta["dataset_description"] = settings.dataset_description
    if meta.get("llm") not in (None, settings.llm):
        _log.info(f"note: {out} was started with the LLM {meta.get('llm')}; continuing with {settings.llm}")
    meta["llm"] = settings.llm
    meta.update(meta_now)
    return DescribeOutput(out, names, [list(d) for d in existing.descriptions], meta)
