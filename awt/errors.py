"""User-facing errors: the command line prints them as one line, without a traceback."""


class AWTError(Exception):
    """An error caused by the user's input or environment (bad file, missing class, no endpoint)."""


class DescriptionsError(AWTError):
    """A descriptions file is unreadable, malformed, or lacks classes that were asked for."""
