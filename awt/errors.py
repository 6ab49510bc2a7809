"""User-facing errors: the command line prints them as one line, without a traceback."""


class AWTError(Exception):
    """An error caused by the user's input or environment (bad file, missing class, no endpoint)."""


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
