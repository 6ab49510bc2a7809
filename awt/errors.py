"""User-facing errors, carrying data: what went wrong, and which setting decides it.

A message says what and where, in the library's own words; it names no command-line flag, since a
benchmark config, a Python caller or an HTTP client has none. Each front end adds its own hint:
``setting`` is the library parameter that decides the error (``max_pixels``), and ``hint`` a remedy
whose ``{placeholders}`` are setting names, which the front end fills with its own spelling of them
(``--max-pixels``, ``settings.max_pixels``, a JSON field).
"""

from __future__ import annotations

from typing import Any, Mapping


class AWTError(Exception):
    """An error caused by the user's input or environment (bad file, missing class, no endpoint).

    Attributes:
        setting: the setting that decides it, if one does (``"max_pixels"``).
        hint: a remedy with ``{setting}`` placeholders, e.g. ``"raise {max_pixels}"``.
        kind: ``input`` (a bad request), ``limit`` (over a limit), ``missing`` (not found) or
            ``unavailable`` (the environment: no network, no GPU): what an HTTP front end answers.
        data: further facts (the limit, the value), for front ends that show them apart.
    """

    def __init__(self, message: str, *, setting: str | None = None, hint: str | None = None,
                 kind: str = "input", **data: Any):
        super().__init__(message)
        self.setting, self.hint, self.kind, self.data = setting, hint, kind, data

    def hint_for(self, names: Mapping[str, str]) -> str | None:
        """The hint in a front end's words (``names``: setting -> its spelling there), or None when
        there is no hint or the front end has no name for a setting it mentions."""
        if self.hint is None:
            return None
        try:
            return self.hint.format_map(names)
        except (KeyError, IndexError, ValueError):
            return None

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """The message, and the hint in a front end's words (``names``: setting -> its spelling there)."""
        hint = self.hint_for(names or {})
        return f"{self}; {hint}" if hint else str(self)


class SettingError(AWTError, ValueError):
    """A setting outside what the method can compute with: ``key`` names it, ``value`` is what was
    given, ``rule`` what it must be."""

    def __init__(self, key: str, value: object, rule: str):
        super().__init__(f"{key} must be {rule}, got {value!r}")
        self.key, self.value, self.rule = key, value, rule


class DescriptionsError(AWTError):
    """A descriptions file is unreadable, malformed, or lacks classes that were asked for."""


def first_line(error: BaseException) -> str:
    """An exception's message, first line only (its type's name when it has none): the part of a
    library's error that fits in one line of ours."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def yaml_problem(error: BaseException) -> str:
    """A YAML parser's error in one line, with where it is: ``line 5, column 10: expected ',' or ']'``."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(p for p in (getattr(error, "problem", None), getattr(error, "context", None)) if p)
    return where + (what or first_line(error))
