"""One JSON error body for every refusal: ``{"error": message, "kind", "field", "status"}``."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException

from ..errors import AWTError
from .settings import FIELDS, STATUS


class ApiError(HTTPException):
    """A refusal with its status, its kind (input, limit, missing, unavailable, auth, ...) and the
    request field or server setting that decides it. An HTTPException, so that the framework's own
    body handling passes it through as it is."""

    def __init__(self, status: int, message: str, *, kind: str = "input", field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message, self.kind, self.field, self.extra = message, kind, field, extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "kind": self.kind, "field": self.field, "status": self.status_code,
                **self.extra}


def from_awt(error: AWTError, status: int | None = None, **extra: Any) -> ApiError:
    """A library error as an answer: its message and its hint in the HTTP client's words
    (:data:`~awt.serve.settings.FIELDS`), its kind's status."""
    return ApiError(status or STATUS.get(error.kind, 400), error.describe(FIELDS), kind=error.kind,
                    field=error.setting, **extra)


def upload_reason(error: AWTError) -> str:
    """An upload's error as its client reads it: the server's names for settings, and no ``<bytes>``
    where a file's path would stand (the result names the upload)."""
    reason = error.describe(FIELDS)
    return reason[len("<bytes>: "):] if reason.startswith("<bytes>: ") else reason
