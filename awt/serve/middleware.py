"""ASGI middleware (plain ASGI, so that streamed bodies and disconnects pass through untouched):
metrics of every answer, the API key, and the limits on a request's body (its size and the time
it takes to arrive)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, Awaitable, Callable

from .errors import ApiError
from .metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: paths anyone may read without the key: the page and the probes
OPEN_PATHS = ("/", "/healthz", "/readyz")


async def send_error(send: Send, error: ApiError) -> None:
    """Answer with ``error``'s JSON body (the connection is closed after it: the body may be unread)."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Counts every answer by endpoint and status, with its time."""

    def __init__(self, app: App, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def observed(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/page" if scope["path"].startswith("/page/") else scope["path"])
            self.metrics.observe_request(path, status[0], time.perf_counter() - start)


class ApiKey:
    """With a key set, every path but the page and the probes needs it: ``Authorization: Bearer
    KEY`` or ``X-API-Key: KEY``; 401 otherwise."""

    def __init__(self, app: App, key: str | None):
        self.app, self.key = app, key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None and scope["path"] not in OPEN_PATHS \
                and not scope["path"].startswith("/page/"):
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key") or b""
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
            if not hmac.compare_digest(given, self.key):
                await send_error(send, ApiError(401, "this server needs an API key: send it as 'Authorization: "
                                                "Bearer KEY' or 'X-API-Key: KEY'" if not given else
                                                "the API key is not this server's", kind="auth",
                                                headers={"WWW-Authenticate": "Bearer"}))
                return
        await self.app(scope, receive, send)


class BodyLimits:
    """A body larger than ``max_bytes`` is refused (413, without reading it when its Content-Length
    says so); one that has not all arrived ``timeout`` seconds after the request began is refused
    too (408), so a client sending a byte a second holds nothing for long.

    Before a 413 the rest of the body is read and dropped (up to ``drain`` bytes, within the same
    time), as nginx's lingering close does: a client still sending would otherwise meet a reset
    connection instead of the answer. A client that waits for ``100 Continue`` has sent nothing, and
    is answered at once.
    """

    def __init__(self, app: App, max_bytes: int, timeout: float, drain: int = 64 << 20):
        self.app, self.max_bytes, self.timeout, self.drain = app, max_bytes, timeout, max(drain, 2 * max_bytes)

    def _too_large(self, size: str) -> ApiError:
        return ApiError(413, f"the request's body is {size}, more than the limit of {self.max_bytes:,} bytes",
                        kind="limit", field="max_upload_mb")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        deadline = time.monotonic() + self.timeout
        received, complete = 0, False

        async def limited() -> dict:
            nonlocal received, complete
            if complete:   # the body is in: what comes now is the disconnect, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request's body did not arrive within {self.timeout:g} s "
                               f"({received:,} bytes came)", kind="timeout", field="upload_timeout") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    if not complete:
                        await self._drop_rest(receive, deadline)
                    complete = True
                    raise self._too_large(f"at least {received:,} bytes")
            else:
                complete = True
            return message

        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = self._too_large(f"{int(length):,} bytes")
            if headers.get(b"expect", b"").lower() != b"100-continue" and int(length) <= self.drain:
                await self._drop_rest(receive, deadline)
            await send_error(send, error)
            return
        await self.app(scope, limited, send)

    async def _drop_rest(self, receive: Receive, deadline: float) -> None:
        """Read and drop what remains of the body, within the time and ``drain`` bytes (past either,
        the connection is closed after the answer)."""
        dropped = 0
        while dropped < self.drain:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))
