"""The HTTP API (FastAPI: its OpenAPI document at ``/openapi.json``) and the web page.

Every answer that is not a result is one JSON error body (:mod:`awt.serve.errors`). The model is
used from the batcher's thread only; handlers read requests, queue their images and wait.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Union

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import AWTError, first_line
from ..explain import check_explainable, render_report
from ..images import ImageError, check_pixels
from ..methods import METHODS
from .batcher import Batcher, Item, QueueFull
from .class_sets import ClassSet, ClassSets
from .engine import Engine
from .errors import ApiError, from_awt, upload_reason
from .metrics import CONTENT_TYPE, Metrics
from .middleware import ApiKey, BodyLimits, Observe
from .settings import Defaults, Limits
from .uploads import check_method, read_classify

_log = logging.getLogger("awt.serve")
EXPLAIN_TOP_K = 3   # classes explained when a request names no top_k


@dataclass
class Server:
    """What the handlers share: the model's side, the class sets, the limits and the metrics."""

    engine: Engine
    batcher: Batcher
    class_sets: ClassSets
    metrics: Metrics
    limits: Limits = Limits()
    defaults: Defaults = Defaults()
    api_key: str | None = None
    model: dict[str, Any] = field(default_factory=dict)   # what /v1/info says of the model
    ready: bool = False


class ClassSetIn(BaseModel):
    """A class set to register: names, optional descriptions, template."""

    classes: list[str] = Field(..., description="Class names, in label order.")
    descriptions: Union[dict[str, list[str]], list[list[str]], None] = Field(
        None, description="Each class's descriptions: {name: [sentences]} or one list per class.")
    descriptions_per_class: int | None = Field(None, description="Descriptions used per class (M); default: "
                                               "the library's (50), 0 without descriptions.")
    allow_fewer_descriptions: bool = Field(False, description="A class with fewer than M uses what it has.")
    template: str | None = Field(None, description="Prompt template with one '{}' (default: the server's).")
    name: str | None = Field(None, max_length=200, description="A label for people; not part of the id.")


_CLASSIFY_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "One or more images (any field name; each file part is an image)."},
        "class_set": {"type": "string"}, "classes": {"type": "string", "description": "One class per line."},
        "method": {"type": "string"}, "top_k": {"type": "integer"}, "template": {"type": "string"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(server: Server) -> FastAPI:
    """The ASGI application over ``server`` (whose batcher is already running)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.ready = True
        yield
        server.ready = False   # SIGTERM: uvicorn has let the requests in flight finish by now
        await asyncio.get_running_loop().run_in_executor(None, server.batcher.stop, server.limits.request_timeout)

    app = FastAPI(title="awt serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Zero-shot image classification with AWT: one model kept warm, requests batched "
                              "together. Errors are one JSON body: {error, kind, field, status}.")
    _errors(app, server)
    _pages(app)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded and its thread takes requests")
    async def readyz() -> JSONResponse:
        ready = server.ready and server.batcher.alive
        return JSONResponse({"ready": ready, "queue": server.batcher.waiting}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Metrics in the Prometheus text format")
    async def metrics() -> Response:
        server.metrics.queue_depth.set(server.batcher.waiting)
        return Response(server.metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/info", summary="The model, the methods, the defaults and the limits")
    async def info() -> dict:
        default = server.class_sets.default
        return {"version": __version__, "model": server.model, "batch_size": server.batcher.batch_size,
                "methods": [{"name": m.name, "summary": m.summary} for m in METHODS.values()],
                "defaults": {"method": server.defaults.method, "top_k": server.defaults.top_k,
                             "template": server.defaults.template},
                "class_set": default.describe() if default else None, "limits": server.limits.as_json(),
                "explain": True}

    @app.post("/v1/classify", summary="Classify one or more images", openapi_extra=_CLASSIFY_BODY)
    async def classify(request: Request,
                       class_set: str | None = Query(None, description="A registered class set's id."),
                       classes: list[str] | None = Query(None, description="Classes named inline (repeat it)."),
                       method: str | None = Query(None, description="Scoring method (default: the server's)."),
                       top_k: int | None = Query(None, description="Predictions per image."),
                       template: str | None = Query(None, description="Template for inline classes."),
                       name: str | None = Query(None, description="The raw body's name in its result.")
                       ) -> JSONResponse:
        """Images as multipart parts or the raw body; fields from the form or the query string.
        The answer: ``{"class_set", "method", "results": [...]}``, each result as ``awt classify
        --json`` prints it. An image that cannot be read is a result with an ``error``; when no
        image of the request can be, the answer is an error (422, or 413 over the pixel limit)."""
        try:
            req = await read_classify(request, server.limits)
        except ClientDisconnect:   # gone mid-upload
            server.metrics.disconnects.inc()
            return Response(status_code=499)
        method_name = check_method(req.method or server.defaults.method)
        chosen = _class_set(server, req.class_set, req.classes, req.template)
        _refuse_if_all_too_large(server, req.images)
        items = [Item(name_, data, chosen, method_name, req.top_k or server.defaults.top_k,
                      server.engine.views_for(method_name)) for name_, data in req.images]
        outcomes = await _answer(server, request, items)
        if outcomes is None:
            return Response(status_code=499)   # the client went away: nobody reads this
        for outcome in outcomes:
            if isinstance(outcome, AWTError):
                raise from_awt(outcome)
            if isinstance(outcome, BaseException):
                raise outcome
        results = [r.to_json() for r in outcomes]
        failed = [r for r in outcomes if r.error is not None]
        server.metrics.images.labels("classified").inc(len(outcomes) - len(failed))
        server.metrics.images.labels("unreadable").inc(len(failed))
        if len(failed) == len(outcomes):
            cause = failed[0].cause
            limit = cause is not None and cause.kind == "limit"
            raise ApiError(413 if limit else 422, f"{failed[0].image}: {failed[0].error}",
                           kind="limit" if limit else "unreadable", field=getattr(cause, "setting", None) or "image",
                           results=results)
        return JSONResponse({"class_set": chosen.id, "method": method_name, "results": results})

    @app.post("/v1/class-sets", status_code=201, summary="Register a class set; its prompts are encoded once")
    async def register(body: ClassSetIn) -> JSONResponse:
        """Answers ``{"id", ...}``: 201 when new, 200 when the same set is registered already."""
        if any(not c.strip() for c in body.classes):
            raise ApiError(400, "a class name is empty", field="classes")
        try:
            spec = server.class_sets.spec(body.classes, body.descriptions, body.template, body.descriptions_per_class,
                                          body.allow_fewer_descriptions)
            class_set, new = server.class_sets.prepare(spec, body.name)
        except AWTError as e:
            raise from_awt(e) from None
        if new:
            def build() -> None:   # on the model's thread; kept even if this client gives up waiting
                server.engine.build(class_set)
                server.class_sets.add(class_set)
                server.metrics.class_sets.set(len(server.class_sets.registered()))

            try:
                await asyncio.wait_for(asyncio.wrap_future(server.batcher.call(build)), server.limits.request_timeout)
            except asyncio.TimeoutError:
                raise ApiError(503, f"the class set's prompts were not encoded within {server.limits.request_timeout:g}"
                               " s; it is registered once they are (ask again later)", kind="timeout",
                               field="request_timeout", headers={"Retry-After": "10"}) from None
            except AWTError as e:
                raise from_awt(e) from None
        return JSONResponse(class_set.describe(), status_code=201 if new else 200)

    @app.get("/v1/class-sets", summary="The registered class sets")
    async def class_sets() -> dict:
        return {"class_sets": [c.describe() for c in server.class_sets.registered()]}

    @app.get("/v1/class-sets/{set_id}", summary="One class set, with its class names")
    async def class_set(set_id: str) -> dict:
        try:
            return server.class_sets.get(set_id).describe(names=True)
        except AWTError as e:
            raise from_awt(e) from None

    @app.post("/v1/explain", summary="Explain one image's top classes: views, prompts, weights, the transport plan",
              openapi_extra=_CLASSIFY_BODY)
    async def explain(request: Request) -> JSONResponse:
        """One image, with the fields of ``/v1/classify`` (``top_k`` default 3; the method must be AWT
        or an ablation of it). The answer: ``{"class_set", ...}`` with the numbers of ``awt explain
        --json`` (the image's views, each top class's prompts, weights, plan and score splits, CLIP's
        prediction) and ``html``, the self-contained report."""
        try:
            req = await read_classify(request, server.limits)
        except ClientDisconnect:
            server.metrics.disconnects.inc()
            return Response(status_code=499)
        if len(req.images) != 1:
            raise ApiError(400, f"explain takes one image, got {len(req.images)}", field="image")
        method_name = check_method(req.method or server.defaults.method)
        try:
            check_explainable(method_name)
        except AWTError as e:
            raise from_awt(e) from None
        chosen = _class_set(server, req.class_set, req.classes, req.template)
        _refuse_if_all_too_large(server, req.images)
        image_name, data = req.images[0]

        def job() -> dict:   # on the model's thread, between batches
            ex = server.engine.build(chosen).classifier.explain(data, req.top_k or EXPLAIN_TOP_K, method_name)
            ex.image = image_name
            return {"class_set": chosen.id, **ex.to_json(), "html": render_report(ex)}

        try:
            doc = await asyncio.wait_for(asyncio.wrap_future(server.batcher.call(job)), server.limits.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, f"not explained within the request time limit of {server.limits.request_timeout:g} s "
                           "(the server is busy)", kind="timeout", field="request_timeout",
                           headers={"Retry-After": str(server.batcher.retry_after())}) from None
        except AWTError as e:
            if not isinstance(e, ImageError):
                raise from_awt(e) from None
            reason = upload_reason(e)
            limit = e.kind == "limit"
            raise ApiError(413 if limit else 422, f"{image_name}: {reason}", kind="limit" if limit else "unreadable",
                           field=e.setting or "image") from None
        server.metrics.images.labels("explained").inc()
        return JSONResponse(doc)

    wrapped = BodyLimits(app, server.limits.max_upload_bytes, server.limits.upload_timeout)
    return Observe(ApiKey(wrapped, server.api_key), server.metrics)   # type: ignore[return-value]


def _refuse_if_all_too_large(server: Server, images: list[tuple[str, bytes]]) -> None:
    """413 at once, before the queue, when every image's header says it is over the pixel limit
    (decompression bombs cost the server no queue place and no decoding)."""
    refused = []
    for name, data in images:
        try:
            check_pixels(data, server.engine.decoding.max_pixels)
        except ImageError as e:
            refused.append({"image": name, "error": upload_reason(e)})
            continue
        return
    if refused:
        first = refused[0]
        raise ApiError(413, f"{first['image']}: {first['error']}", kind="limit", field="max_pixels", results=refused)


def _class_set(server: Server, set_id: str | None, classes: list[str], template: str | None) -> ClassSet:
    """The class set a request names: inline classes, a registered id, or the server's own."""
    try:
        if classes and set_id:
            raise ApiError(400, "name either a class_set or classes, not both", field="classes")
        if classes:
            return server.class_sets.inline(classes, template)
        if set_id:
            return server.class_sets.get(set_id)
    except AWTError as e:
        raise from_awt(e) from None
    if server.class_sets.default is None:
        raise ApiError(400, "this server was started without classes: name a class_set or classes", field="classes")
    return server.class_sets.default


async def _answer(server: Server, request: Request, items: list[Item]) -> list[Any] | None:
    """Queue the items and wait for them: their results (or exceptions), or None when the client
    went away first. A full queue or the request's time running out is a 503 with Retry-After."""
    try:
        server.batcher.submit(items)
    except QueueFull as e:
        server.metrics.refused.inc()
        raise ApiError(503, f"{e}; try again in {e.retry_after} s", kind="busy", field="queue_size",
                       headers={"Retry-After": str(e.retry_after)}) from None
    server.metrics.queue_depth.set(server.batcher.waiting)
    results = asyncio.gather(*(asyncio.wrap_future(it.future) for it in items), return_exceptions=True)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({results, gone}, timeout=server.limits.request_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if results in done:
        return results.result()
    server.batcher.cancel(items)
    results.cancel()
    if gone in done:
        server.metrics.disconnects.inc()
        return None
    retry = server.batcher.retry_after()
    raise ApiError(503, f"not answered within the request time limit of {server.limits.request_timeout:g} s "
                   f"(the server is busy); try again in {retry} s", kind="timeout", field="request_timeout",
                   headers={"Retry-After": str(retry)})


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _errors(app: FastAPI, server: Server) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        error = e if isinstance(e, ApiError) else ApiError(e.status_code, str(e.detail), kind="http",
                                                          headers=e.headers)
        return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problem = e.errors()[0] if e.errors() else {}
        if problem.get("type") == "json_invalid":   # its "location" is a character offset, not a field
            error = ApiError(400, f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'invalid')} "
                             f"at character {problem.get('loc', ('', '?'))[-1]})", field="body")
            return JSONResponse(error.body(), status_code=400)
        where = [str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path")]
        error = ApiError(400, f"{'.'.join(where) or 'the request'}: {problem.get('msg', 'invalid')}",
                         field=where[0] if where else None)
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        _log.error(f"{request.method} {request.url.path}: unexpected {type(e).__name__}: {first_line(e)}")
        error = ApiError(500, f"unexpected {type(e).__name__}: {first_line(e)} (a bug in awt: please report it)",
                         kind="bug")
        return JSONResponse(error.body(), status_code=500)


def _pages(app: FastAPI) -> None:
    page = resources.files("awt.serve") / "page"
    index = (page / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(index)

    app.mount("/page", StaticFiles(directory=str(page)), name="page")
