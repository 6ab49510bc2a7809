"""A classify request read: its images (multipart parts, or the raw body) and its fields (from the
multipart form or the query string), checked against the limits before anything is queued."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..errors import AWTError
from ..methods import get_method
from ..videos import is_video_path
from .errors import ApiError, from_awt
from .settings import Limits

#: the fields a classify request reads (besides its images)
FIELD_NAMES = ("class_set", "classes", "method", "top_k", "template", "name")


@dataclass
class ClassifyRequest:
    images: list[tuple[str, bytes]]     # (name, bytes), in the order sent
    class_set: str | None
    classes: list[str]                  # named inline, one per line of each value
    method: str | None
    top_k: int | None
    template: str | None


async def read_classify(request: Request, limits: Limits) -> ClassifyRequest:
    """The request's images and fields; an :class:`ApiError` for a malformed or oversized one."""
    fields: dict[str, list[str]] = {k: request.query_params.getlist(k) for k in FIELD_NAMES}
    content_type = request.headers.get("content-type", "")
    images: list[tuple[str, bytes]] = []
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=limits.max_images, max_fields=100, max_part_size=1 << 20)
        except HTTPException as e:
            if str(e.detail).startswith("Too many files"):
                raise _too_many(None, limits) from None
            raise ApiError(400, f"the multipart body cannot be read: {e.detail}", field="image") from None
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    _refuse_video(value.filename or key, value.content_type)
                    data = await value.read()
                    if data or value.filename:   # a form's empty file input sends neither
                        images.append((value.filename or key, data))
                elif key in fields:
                    fields[key].append(value)
        finally:
            await form.close()
    elif content_type.startswith("application/x-www-form-urlencoded"):
        raise ApiError(415, "images come as multipart/form-data parts, or as the raw body with the image's own "
                       "content type", field="image")
    else:
        name = (fields["name"] or ["image"])[-1]
        _refuse_video(name, content_type)
        body = await request.body()
        if body:
            images.append((name, body))
    if not images:
        raise ApiError(400, "no image in the request: send them as multipart parts (-F image=@photo.jpg) or as the "
                       "raw body (--data-binary @photo.jpg)", field="image")
    if len(images) > limits.max_images:
        raise _too_many(len(images), limits)
    last = lambda key: fields[key][-1] if fields[key] else None  # noqa: E731 -- the form's value wins
    classes = [name.strip() for value in fields["classes"] for name in value.splitlines() if name.strip()]
    if fields["classes"] and not classes:
        raise ApiError(400, "classes names no class (one per line)", field="classes")
    return ClassifyRequest(images, last("class_set") or None, classes, last("method") or None,
                           _top_k(last("top_k"), limits), last("template") or None)


def _too_many(count: int | None, limits: Limits) -> ApiError:
    """413 for ``count`` images (None: more than the limit, where the parser stopped counting)."""
    said = f"more than {limits.max_images}" if count is None else str(count)
    return ApiError(413, f"{said} images in one request; the limit is {limits.max_images}", kind="limit",
                    field="max_images")


def _refuse_video(name: str, content_type: str | None) -> None:
    """415 for a video: the service classifies images (``awt classify`` takes videos)."""
    if is_video_path(name) or (content_type or "").startswith("video/"):
        raise ApiError(415, f"{name}: a video; awt serve classifies images (awt classify takes videos)",
                       field="image")


def _top_k(value: str | None, limits: Limits) -> int | None:
    if value is None or value == "":
        return None
    try:
        k = int(value)
    except ValueError:
        k = 0
    if not 1 <= k <= limits.max_top_k:
        raise ApiError(400, f"top_k must be a whole number from 1 to {limits.max_top_k}, got {value!r}",
                       field="top_k")
    return k


def check_method(name: str) -> str:
    """``name`` if it is a registered method; a 400 listing them otherwise."""
    try:
        get_method(name)
    except AWTError as e:
        raise from_awt(AWTError(str(e), setting="method")) from None
    return name
