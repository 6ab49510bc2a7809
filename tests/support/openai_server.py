"""A small OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, scripted faults.

``POST /v1/chat/completions`` (and ``/chat/completions``) answers deterministically:

* a step-1 request (its system prompt contains "{}") gets ``question_answer``;
* any other request gets a numbered list of ``sentences`` distinct sentences that repeat
  the question (so they mention the class) and carry a global reply counter;
* ``fixed_answers[substring]`` pins the answer for requests whose last user message
  contains ``substring`` (e.g. a class that never yields enough new sentences).

Faults are consumed in order by the first request they match (``match`` is a substring of
the last user message, or None for any): "429" (with Retry-After), "500", "503", "hang"
(sleep past the client's timeout, then answer), "drop" (close the connection without an
answer), "empty" (empty content), "garbage" (content with no usable sentence),
"malformed" (a JSON content type with a broken body), "401", "400", "404".
Every request is recorded in ``requests``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_QUESTIONS = (
    "- What does a {class} look like in a photo?\n"
    "- Which colours are typical of a {}?\n"
    "- Describe the shape of a {}.\n"
    "- What is a {}?\n"  # kept: has a {}
    "- A line without a placeholder.\n"
)


@dataclass
class Fault:
    kind: str
    match: str | None = None
    times: int = 1
    retry_after: str | None = "0.1"
    hang_s: float = 2.0


@dataclass
class Recorded:
    path: str
    authorization: str | None
    model: str | None
    user: str
    system: str
    outcome: str  # "ok" or the fault kind
    at: float = field(default_factory=time.monotonic)


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as srv:``; point clients at ``srv.base_url``."""

    def __init__(self, *, sentences: int = 8, delay_s: float = 0.0, question_answer: str = DEFAULT_QUESTIONS) -> None:
        self.sentences = sentences
        self.delay_s = delay_s
        self.question_answer = question_answer
        self.fixed_answers: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._serial = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection
    def add_fault(self, kind: str, match: str | None = None, times: int = 1, **kw: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, match, times, **kw))

    def mentioning(self, text: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if text in r.user]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- used by the handler
    def _take_fault(self, user: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and (f.match is None or f.match in user):
                    f.times -= 1
                    return f
        return None

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _answer(self, system: str, user: str) -> str:
        if "{}" in system:
            return self.question_answer
        for key, text in self.fixed_answers.items():
            if key in user:
                return text
        with self._lock:
            self._serial += 1
            n = self._serial
        subject = user.rstrip("?.! ")
        return "\n".join(
            f"{k}. In reply {n}, the answer to '{subject}' notes visible trait {k}." for k in range(1, self.sentences + 1)
        )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # don't wait for "hang" handlers when stopping

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that time out or are killed reset their connections: expected here
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"{}")
            messages = body.get("messages") or []
        except (ValueError, AttributeError):
            self._json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        fault = self.fake._take_fault(user)
        outcome = fault.kind if fault else "ok"
        self.fake._record(Recorded(self.path, self.headers.get("Authorization"), body.get("model"), user, system, outcome))
        if fault is not None and self._fault(fault):
            return
        if self.fake.delay_s:
            time.sleep(self.fake.delay_s)
        text = "" if outcome == "empty" else ("Sure!" if outcome == "garbage" else self.fake._answer(system, user))
        self._json(200, _completion(body.get("model") or "test-model", text, messages))

    def _fault(self, fault: Fault) -> bool:
        """Apply a fault; True when the response has been sent (or dropped)."""
        kind = fault.kind
        if kind == "429":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}, headers)
        elif kind in ("500", "503", "401", "400", "404"):
            msg = {"401": "Incorrect API key provided", "400": "bad request", "404": "model not found"}.get(kind, "server error")
            self._json(int(kind), {"error": {"message": msg, "type": "error"}})
        elif kind == "hang":
            time.sleep(fault.hang_s)
            return False  # then answer normally, long after the client gave up
        elif kind == "drop":
            self.close_connection = True
            self.connection.close()
        elif kind == "malformed":
            self._send(200, b'{"id": "x", "choices": [ {"message": ', {"Content-Type": "application/json"})
        else:
            return False  # "empty", "garbage": answered with bad content
        return True

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client timed out and went away


def _completion(model: str, text: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


if __name__ == "__main__":  # handy for trying `awt describe` by hand
    with FakeOpenAI() as srv:
        print(f"OPENAI_BASE_URL={srv.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
