"""A real ``awt serve`` process on 127.0.0.1 for the tests, and a plain HTTP client for it.

The server runs as ``python -m awt serve ... --port 0``; its first line on stderr says where it
listens. Requests go over real sockets (``http.client``), multipart bodies are built here by hand,
so the tests need nothing beyond the standard library to talk to it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(r"awt serve: ready in [\d.]+ s on http://127\.0\.0\.1:(\d+)/")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def multipart(files: Sequence[tuple[str, bytes]], fields: Sequence[tuple[str, str]] = (),
              file_field: str = "image") -> tuple[bytes, str]:
    """A multipart/form-data body of ``files`` ((name, bytes)) and ``fields``; and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class ServeProcess:
    """``awt serve`` with ``args``, started and ready; :meth:`stop` sends SIGTERM and waits."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120):
        self.args = list(args)
        self.lines: list[str] = []
        environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "awt", "serve", "--port", "0", *self.args],
                                        cwd=REPO, env=environment, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ready = threading.Event()
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port is None:
            self.process.kill()
            raise RuntimeError("awt serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            found = _READY.search(line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def classify(self, files: Sequence[tuple[str, bytes]], fields: Sequence[tuple[str, str]] = (),
                 headers: dict[str, str] | None = None) -> Answer:
        body, content_type = multipart(files, fields)
        return self.request("POST", "/v1/classify", body, {"Content-Type": content_type, **(headers or {})})

    def explain(self, files: Sequence[tuple[str, bytes]], fields: Sequence[tuple[str, str]] = (),
                headers: dict[str, str] | None = None) -> Answer:
        body, content_type = multipart(files, fields)
        return self.request("POST", "/v1/explain", body, {"Content-Type": content_type, **(headers or {})})

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """The value of one sample (``name`` with its labels, as the text format writes it)."""
        text = self.request("GET", "/metrics", headers=headers).body.decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_until(condition, timeout: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()
