"""`awt serve` under load and faults, against `awt classify` on the same images, in one run.

    python benchmarks/serve_load.py                       # ViT-B-32, random weights, 50 views (~10 min on 2 cores)
    python benchmarks/serve_load.py --model tiny-b --views 8 --images 32    # the pipeline in ~1 minute

Everything runs on 127.0.0.1; every loop is bounded in count and time, and the script stops what
it started. It prints:

1. start-up: `awt serve` from the command to ready (its "ready" line, then /readyz), and the first
   request's latency;
2. throughput: `awt classify --json` on the images in one process (its pace from the first result
   to the last), one `awt classify` process per image (what a service saves), and the server with
   1, 4 and 16 concurrent clients sending one image per request (images/s, p50 and p99 latency);
   every served answer is checked against the command's, score for score;
3. faults, mixed into a 16-client load: bursts that overfill the queue (503 + Retry-After, then
   retried), clients that leave mid-upload and mid-batch, a client sending a byte a second, a
   decompression bomb, a malformed multipart body, a file that is not an image; and what the
   other clients got meanwhile (server errors, lost and wrong answers; like the bursts, they wait
   out a 503 for a full queue as its Retry-After says, and ask again);
4. SIGTERM under load: answers completed, connections refused once it stopped, requests lost,
   its exit status and how long it took to exit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gpu_data import TINY_CONFIGS, image_files, labelled_set, write_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
RETRIES = 30   # a client's tries of one request refused with 503 + Retry-After (bounded)
_READY = re.compile(r"awt serve: ready in [\d.]+ s on http://127\.0\.0\.1:(\d+)/")


def multipart(files: list[tuple[str, bytes]], fields: list[tuple[str, str]] = ()) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n\r\n'.encode()
              + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(port: int, files, fields=(), connection: http.client.HTTPConnection | None = None, timeout: float = 600):
    """(status, headers, JSON body, seconds) of one classify request."""
    body, content_type = multipart(files, list(fields))
    own = connection is None
    connection = connection or http.client.HTTPConnection(HOST, port, timeout=timeout)
    start = time.perf_counter()
    try:
        connection.request("POST", "/v1/classify", body, {"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data or b"null"), time.perf_counter() - start
    finally:
        if own:
            connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


class Server:
    def __init__(self, args: list[str]):
        self.started = time.perf_counter()
        self.lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, "-m", "awt", "serve", "--port", "0", *args], cwd=REPO,
                                        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.port, ready = None, threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                found = _READY.search(line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(900) or self.port is None:
            self.process.kill()
            raise SystemExit("awt serve did not start:\n" + "".join(self.lines))
        self.ready_line = time.perf_counter() - self.started
        while True:
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.02)
        self.ready = time.perf_counter() - self.started

    def metric(self, name: str) -> float:
        c = http.client.HTTPConnection(HOST, self.port, timeout=30)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def server_errors(server: Server) -> int:
    """Answers of 500 and above other than 503 (busy), counted by the server itself."""
    c = http.client.HTTPConnection(HOST, server.port, timeout=30)
    c.request("GET", "/metrics")
    found = re.findall(r'awt_serve_errors_total\{endpoint="[^"]*",status="(5\d\d)"\} ([\d.]+)',
                       c.getresponse().read().decode())
    return int(sum(float(n) for status, n in found if status != "503"))


def reference(paths: list[str], common: list[str], batch_size: int, env: dict | None = None
              ) -> tuple[dict, float, float]:
    """`awt classify --json` over every image: {path: predictions}, its wall time, and its pace
    (images/s from the first result to the last)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "awt", "classify", *paths, *common, "--json", "--batch-size",
                                str(batch_size)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    answers, first = {}, None
    for line in process.stdout:
        first = first or time.perf_counter()
        doc = json.loads(line)
        answers[doc["image"]] = doc["predictions"]
    last = time.perf_counter()
    if process.wait() != 0 or len(answers) != len(set(paths)):
        raise SystemExit("awt classify failed")
    return answers, last - start, (len(paths) - 1) / (last - first)


def cold(paths: list[str], common: list[str]) -> float:
    """Seconds per image with one `awt classify` process per image (a model loaded per request)."""
    start = time.perf_counter()
    for path in paths:
        subprocess.run([sys.executable, "-m", "awt", "classify", path, *common, "--json"], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    return (time.perf_counter() - start) / len(paths)


def load(port: int, images: list[tuple[str, bytes]], expected: list, clients: int, requests: int) -> dict:
    """``clients`` threads, each on its own keep-alive connection, send ``requests`` one-image
    requests in all; every answer checked against ``expected`` (the command's predictions)."""
    todo = iter(range(requests))
    lock = threading.Lock()
    out = {"latency": [], "ok": 0, "server_errors": 0, "lost": 0, "wrong": 0, "other": 0, "refused": 0}

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=600)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            k = i % len(images)
            started = time.perf_counter()
            for _ in range(RETRIES + 1):   # a 503 with Retry-After is the queue's word: wait, then ask again
                try:
                    status, headers, body, _ = post(port, [images[k]], connection=connection)
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, port, timeout=600)
                    status = None
                    break
                wait = {h.lower(): v for h, v in headers.items()}.get("retry-after")
                if status != 503 or wait is None:
                    break
                with lock:
                    out["refused"] += 1
                time.sleep(min(float(wait), 10.0))
                connection.close()   # the server closes a connection idle for longer than its keep-alive
                connection = http.client.HTTPConnection(HOST, port, timeout=600)
            with lock:
                if status is None:
                    out["lost"] += 1
                    continue
                out["latency"].append(time.perf_counter() - started)
                if status == 200:
                    out["ok"] += 1
                    out["wrong"] += body["results"][0]["predictions"] != expected[k]
                elif status >= 500:
                    out["server_errors"] += 1
                else:
                    out["other"] += 1
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["seconds"] = time.perf_counter() - start
    out["per_s"] = requests / out["seconds"]
    return out


# -- faults -----------------------------------------------------------------------------------------

def _bomb() -> bytes:
    """A 300-byte PNG that says it is 50,000 x 50,000 pixels (2.5 gigapixels, 7.5 GB decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (1 + 3 * 50_000) * 2)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _raw(port: int, head: bytes, body: bytes, *, send: int | None = None, wait: bool = True,
         trickle: float = 0.0, timeout: float = 60) -> int | None:
    """Send ``head`` and the first ``send`` bytes of ``body`` (a byte every ``trickle`` s if set);
    the answer's status, or None when the client leaves without reading it."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.sendall(head)
        part = body if send is None else body[:send]
        if trickle:
            for byte in part:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(trickle)
        else:
            sock.sendall(part)
        if not wait:
            return None
        reply = sock.recv(4096).decode(errors="replace")
        return int(reply.split()[1]) if reply.startswith("HTTP/1.1") else -1
    finally:
        sock.close()


def faults(port: int, images: list[tuple[str, bytes]], expected: list, clients: int, requests: int,
           upload_timeout: float) -> tuple[dict, list]:
    """The 16-client load with the faults running beside it; the load's figures and the faults' table."""
    table, lock = [], threading.Lock()
    burst_files = images[:16]

    def record(name: str, expect: str, got: list, ok: bool) -> None:
        with lock:
            table.append((name, len(got), expect, ", ".join(str(g) for g in got), ok))

    bursts = 6   # 6 x 16 images at once: more than the queue's 64 wherever they meet it
    together = threading.Barrier(bursts)
    burst_outcomes: list[tuple[int, bool, bool]] = []   # (503s met, each with Retry-After, right at last)

    def burst() -> None:   # 16 images at once, honouring Retry-After until answered (bounded)
        statuses, waits, deadline = [], [], time.monotonic() + 900
        together.wait()
        while time.monotonic() < deadline:
            status, headers, body, _ = post(port, burst_files)
            statuses.append(status)
            if status != 503:
                break
            waits.append(headers.get("retry-after") or headers.get("Retry-After"))
            time.sleep(float(waits[-1] or 1))
        right = status == 200 and [r["predictions"] for r in body["results"]] == expected[:16]
        with lock:
            burst_outcomes.append((len(waits), all(w is not None for w in waits), right))

    def leave(mid_upload: bool) -> None:
        body, content_type = multipart([images[0]])
        head = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for _ in range(3):
            _raw(port, head, body, send=len(body) // 2 if mid_upload else None, wait=False)
            time.sleep(0.5)
        record("client leaves mid-upload" if mid_upload else "client leaves mid-batch", "no answer needed; others "
               "unaffected", ["left"] * 3, True)

    def slow() -> None:
        head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
        start = time.monotonic()
        status = _raw(port, head, images[0][1], send=int(upload_timeout * 2), trickle=1.0, timeout=upload_timeout + 30)
        record(f"a byte a second ({time.monotonic() - start:.0f} s)", f"408 after {upload_timeout:g} s", [status],
               status == 408)

    def single(name: str, files, expect: int, fields=()) -> None:
        got = [post(port, files, fields)[0] for _ in range(3)]
        record(name, str(expect), got, got == [expect] * 3)

    def malformed() -> None:
        got = []
        for _ in range(3):
            c = http.client.HTTPConnection(HOST, port, timeout=60)
            c.request("POST", "/v1/classify", b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\ntrunc",
                      {"Content-Type": "multipart/form-data; boundary=b"})
            got.append(c.getresponse().status)
            c.close()
        record("malformed multipart body", "400", got, got == [400] * 3)

    jobs = [burst] * bursts + [lambda: leave(True), lambda: leave(False), slow, malformed,
            lambda: single("decompression bomb (50,000 x 50,000 PNG)", [("bomb.png", _bomb())], 413),
            lambda: single("not an image", [("notes.txt", b"plain text, no pixels")], 422)]
    threads = [threading.Thread(target=j) for j in jobs]
    for t in threads:
        t.start()
    figures = load(port, images, expected, clients, requests)
    for t in threads:
        t.join()
    refusals = sum(b[0] for b in burst_outcomes)
    table.insert(0, (f"{bursts} bursts of 16 images at once", bursts, "503 + Retry-After, retried until 200, right",
                     f"503 x{refusals}, right 200 x{sum(b[2] for b in burst_outcomes)}",
                     refusals > 0 and all(b[1] and b[2] for b in burst_outcomes)))
    return figures, table


def sigterm(server: Server, images, expected, clients: int, after: float) -> dict:
    """Clients in bounded loops, one connection per request; SIGTERM ``after`` s into it."""
    out = {"answered": 0, "wrong": 0, "refused": 0, "lost": 0, "other": 0}
    lock, stop_at = threading.Lock(), time.monotonic() + after + 600

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < stop_at:
            try:
                status, _, body, _ = post(server.port, [images[i % len(images)]])
            except ConnectionRefusedError:
                with lock:
                    out["refused"] += 1
                return
            except (OSError, http.client.HTTPException):
                with lock:
                    out["lost"] += 1
                return
            with lock:
                if status == 200:
                    out["answered"] += 1
                    out["wrong"] += body["results"][0]["predictions"] != expected[i % len(images)]
                else:
                    out["other"] += 1
            i += clients
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(after)
    sent = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    out["exit_status"] = server.process.wait(600)
    out["exit_seconds"] = time.perf_counter() - sent
    for t in threads:
        t.join()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32", help="open_clip model, or one of " + ", ".join(TINY_CONFIGS))
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--images", type=int, default=32, help="distinct images (at least 16)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--rounds", type=int, default=2, help="requests per client at each level (at least 4 in all)")
    p.add_argument("--cold", type=int, default=2, help="images classified one process each")
    p.add_argument("--upload-timeout", type=float, default=5.0)
    p.add_argument("--work", type=Path, help="folder for images and caches (default: a temporary one)")
    args = p.parse_args()
    begun = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = write_tiny_model(work / args.model, args.model) if args.model in TINY_CONFIGS else args.model
    paths = image_files(work / "images", max(16, args.images), max(16, args.images))
    labelled = labelled_set(work / "set", 1)
    images = [(Path(p).name, Path(p).read_bytes()) for p in paths]
    common = ["--model", model, "--pretrained", "none", "--views", str(args.views), "--classes",
              str(labelled["classes"]), "--descriptions", str(labelled["descriptions"]), "--descriptions-per-class",
              "5", "--cache-dir", str(work / "cache")]
    print(f"serve_load: {model}, {args.views} views, {len(paths)} images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    answers, command_s, command_pace = reference(paths, common, args.batch_size)
    # GNU OpenMP's threads spin while they wait: on a busy machine the command's main thread then
    # loses much of its time (the server's model thread does not); passive waiting is the fair rival
    passive, passive_s, passive_pace = reference(paths, common, args.batch_size, {"OMP_WAIT_POLICY": "PASSIVE"})
    assert passive == answers
    expected = [answers[p] for p in paths]
    best = max(command_pace, passive_pace)
    per_process = cold(paths[:args.cold], common) if args.cold else float("nan")
    server = Server([*common, "--batch-size", str(args.batch_size), "--queue-size", "64",
                     "--upload-timeout", str(args.upload_timeout), "--request-timeout", "900"])
    first = post(server.port, [images[0]])
    assert first[0] == 200 and first[2]["results"][0]["predictions"] == expected[0], first
    print(f"\nstart-up: ready line {server.ready_line:.1f} s, /readyz {server.ready:.1f} s after the command; "
          f"first request {first[3] * 1000:.0f} ms", flush=True)

    rows = []
    for clients in [int(c) for c in args.clients.split(",")]:
        n = max(4, clients * args.rounds)
        batches = server.metric("awt_serve_batch_size_count"), server.metric("awt_serve_batch_size_sum")
        f = load(server.port, images, expected, clients, n)
        count = server.metric("awt_serve_batch_size_count") - batches[0]
        f["batch"] = (server.metric("awt_serve_batch_size_sum") - batches[1]) / max(1, count)
        rows.append((f"serve, {clients} client(s)", n, f))
        print(f"  {clients} client(s): {f['per_s']:.2f} images/s", flush=True)
    print(f"\nthroughput: images/s, and its ratio to the faster `awt classify` in one process ({best:.2f} images/s); "
          "latency per request")
    print(f"{'':34s} {'requests':>8s} {'img/s':>7s} {'ratio':>6s} {'p50 s':>7s} {'p99 s':>7s} {'batch':>6s} "
          f"{'5xx':>4s} {'lost':>4s} {'wrong':>5s}")
    for name, pace, total in (("awt classify (one process)", command_pace, command_s),
                              ("  with OMP_WAIT_POLICY=PASSIVE", passive_pace, passive_s)):
        print(f"{name:34s} {len(paths):8d} {pace:7.2f} {pace / best:6.2f} {'':>7s} {'':>7s} {args.batch_size:6d}"
              f"   (whole command {total:.1f} s)")
    if args.cold:
        print(f"{'awt classify, a process per image':34s} {args.cold:8d} {1 / per_process:7.2f} "
              f"{1 / per_process / best:6.2f} {per_process:7.2f} {'':>7s} {1:6d}")
    for name, n, f in rows:
        print(f"{name:34s} {n:8d} {f['per_s']:7.2f} {f['per_s'] / best:6.2f} {percentile(f['latency'], 50):7.2f} "
              f"{percentile(f['latency'], 99):7.2f} {f['batch']:6.1f} {f['server_errors']:4d} {f['lost']:4d} "
              f"{f['wrong']:5d}")

    clients = max(int(c) for c in args.clients.split(","))
    f, table = faults(server.port, images, expected, clients, max(4, clients * args.rounds), args.upload_timeout)
    print(f"\nfaults beside {clients} clients ({f['ok']} of {max(4, clients * args.rounds)} answered 200 "
          f"after {f['refused']} refusals for a full queue, each retried after its Retry-After: "
          f"{f['server_errors']} server errors, {f['lost']} lost, {f['wrong']} wrong; latency with the retries "
          f"p50 {percentile(f['latency'], 50):.2f} s, p99 {percentile(f['latency'], 99):.2f} s)")
    print(f"{'fault':42s} {'sent':>4s}  {'expected':52s} {'got':24s} ok")
    for name, sent, expect, got, ok in table:
        print(f"{name:42s} {sent:4d}  {expect:52s} {got:24s} {'yes' if ok else 'NO'}")
    print(f"server: {server_errors(server)} answers of 500 or above other than 503, "
          f"{server.metric('awt_serve_disconnects_total'):.0f} disconnects seen, "
          f"{server.metric('awt_serve_queue_full_total'):.0f} requests refused for a full queue, queue now "
          f"{server.metric('awt_serve_queue_depth'):.0f}")

    s = sigterm(server, images, expected, clients=8, after=max(2.0, 3 / best))
    print(f"\nSIGTERM under load (8 clients): {s['answered']} answered ({s['wrong']} wrong), {s['refused']} refused "
          f"once stopped, {s['lost']} lost, {s['other']} other; exit status {s['exit_status']} "
          f"{s['exit_seconds']:.1f} s after the signal")
    server.stop()
    print(f"\nserve_load: {time.perf_counter() - begun:.0f} s in all")


if __name__ == "__main__":
    main()
