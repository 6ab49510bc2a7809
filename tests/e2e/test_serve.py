"""`awt serve` as a client sees it: a real server process on 127.0.0.1, real HTTP requests.

The served results equal `awt classify --json`'s for the same model folder, class set and images;
requests from concurrent clients are batched together with the same results; every refusal is one
JSON body with the right status; a full queue is a 503 with Retry-After; SIGTERM finishes what is in
flight and exits 0.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

from conftest import REPO, SERVE_MAX_PIXELS, SERVE_VIEWS  # noqa: E402
from support.serve_server import ServeProcess, multipart, wait_until  # noqa: E402

ERROR_KEYS = {"error", "kind", "field", "status"}


def _files(rows, n):
    return [(f"{path.parent.name}-{path.name}", path.read_bytes()) for path, _, _ in rows[:n]]


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb(side: int = 50_000) -> bytes:
    """A PNG of a few hundred bytes whose header says ``side`` x ``side`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def _error(answer, status: int) -> dict:
    assert answer.status == status, answer.body
    body = answer.json()
    assert ERROR_KEYS <= set(body) and body["status"] == status
    assert "\n" not in body["error"] and body["error"]
    return body


def _predictions(answer) -> list:
    assert answer.status == 200, answer.body
    return [r["predictions"] for r in answer.json()["results"]]


# -- results ----------------------------------------------------------------------------------------

def test_served_scores_equal_the_commands(served, labeled_images, tiny_model_name, tmp_path):
    """The same images, class set (with descriptions) and settings: `awt classify --json` and the
    server give the same JSON, score for score; the set's id is its spec's key."""
    from awt import ClassifierSpec
    from awt.descriptions import load_descriptions
    from awt.images import Decoding

    rows = labeled_images.rows[::2]   # 8 images, JPEG and PNG, every class
    descriptions = json.loads(labeled_images.descriptions.read_text())
    names = labeled_images.classnames
    registered = served.request("POST", "/v1/class-sets", json.dumps(
        {"classes": names, "descriptions": descriptions, "descriptions_per_class": 3, "name": "examples"}).encode(),
        {"Content-Type": "application/json"})
    assert registered.status == 201, registered.body
    set_id = registered.json()["id"]
    spec = ClassifierSpec(names, load_descriptions(labeled_images.descriptions), descriptions_per_class=3,
                          views=SERVE_VIEWS, decoding=Decoding(max_pixels=SERVE_MAX_PIXELS), cache_dir=None)
    assert set_id == spec.key()
    assert (served.cache_dir / "serve-class-sets" / f"{set_id}.json").is_file()

    command = subprocess.run(
        [sys.executable, "-m", "awt", "classify", *[str(p) for p, _, _ in rows], "--classes", str(served.classes_file),
         "--descriptions", str(labeled_images.descriptions), "--descriptions-per-class", "3", "--views",
         str(SERVE_VIEWS), "--max-pixels", str(SERVE_MAX_PIXELS), "--model", tiny_model_name, "--pretrained", "none",
         "--json", "--workers", "0", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                                                     "OMP_NUM_THREADS": "1"})
    assert command.returncode == 0, command.stderr
    expected = [json.loads(line) for line in command.stdout.splitlines()]
    answer = served.classify(_files(rows, 8), [("class_set", set_id), ("top_k", "5")])
    assert answer.status == 200, answer.body
    got = answer.json()
    assert got["class_set"] == set_id and got["method"] == "awt"
    assert [r["predictions"] for r in got["results"]] == [e["predictions"] for e in expected]
    assert [r["image"] for r in got["results"]] == [f"{p.parent.name}-{p.name}" for p, _, _ in rows]


def test_raw_body_multipart_and_top_k(served, labeled_images):
    path = labeled_images.rows[0][0]
    raw = served.request("POST", "/v1/classify?top_k=3&name=photo.jpg", path.read_bytes(),
                         {"Content-Type": "image/jpeg"})
    assert raw.status == 200, raw.body
    [result] = raw.json()["results"]
    assert result["image"] == "photo.jpg" and len(result["predictions"]) == 3
    [full] = _predictions(served.classify([("a.jpg", path.read_bytes())]))
    assert len(full) == 4 and full[:3] == result["predictions"]   # top 5 of 4 classes: all, the same ranking
    scores = [p["score"] for p in full]
    assert scores == sorted(scores, reverse=True)
    clip = served.classify([("a.jpg", path.read_bytes())], [("method", "clip")])
    assert clip.json()["method"] == "clip" and _predictions(clip)[0] != full


def test_class_sets_registered_once_and_named_inline(served):
    names = ["a cat", "a rocket", "a cup of coffee"]
    body = json.dumps({"classes": names, "name": "three"}).encode()
    first = served.request("POST", "/v1/class-sets", body, {"Content-Type": "application/json"})
    again = served.request("POST", "/v1/class-sets", body, {"Content-Type": "application/json"})
    assert (first.status, again.status) == (201, 200)
    set_id = first.json()["id"]
    assert again.json()["id"] == set_id and first.json()["classes"] == 3
    listed = served.request("GET", "/v1/class-sets").json()["class_sets"]
    assert set_id in [s["id"] for s in listed] and listed[0]["origin"] == "startup"
    assert served.request("GET", f"/v1/class-sets/{set_id}").json()["names"] == names
    image = [("x.png", _png(96, 80))]
    by_id = served.classify(image, [("class_set", set_id)])
    inline = served.classify(image, [("classes", "a cat\na rocket"), ("classes", "a cup of coffee")])
    assert inline.json()["class_set"] == set_id   # the same names, template and settings: the same set
    assert _predictions(inline) == _predictions(by_id)
    assert {p["class"] for p in _predictions(inline)[0]} == set(names)


# -- refusals: one JSON body each --------------------------------------------------------------------

def test_every_refusal_is_one_json_error(served, labeled_images):
    good = [("cat.jpg", labeled_images.rows[4][0].read_bytes())]
    bad = served.classify([("notes.txt", b"these are not pixels")])
    assert _error(bad, 422)["results"] == [{"image": "notes.txt", "error": "not an image (or an unsupported format)"}]
    mixed = served.classify(good + [("notes.txt", b"nope")])   # the other image is answered
    assert mixed.status == 200 and "predictions" in mixed.json()["results"][0]
    assert mixed.json()["results"][1]["error"].startswith("not an image")
    big = _error(served.classify([("big.png", _png(1100, 1000))]), 413)
    assert big["field"] == "max_pixels" and "--max-pixels" in big["error"]
    assert _error(served.classify(good, [("class_set", "0" * 24)]), 404)["field"] == "class_set"
    assert "choose one of awt" in _error(served.classify(good, [("method", "best")]), 400)["error"]
    too_many = _error(served.classify(good * 9), 413)
    assert too_many["field"] == "max_images" and too_many["error"] == "more than 8 images in one request; the limit is 8"
    assert _error(served.classify(good, [("classes", " \n")]), 400)["field"] == "classes"   # not the server's set
    video = _error(served.classify([("clip.mp4", b"\0\0\0\x18ftypmp42")]), 415)
    assert video["field"] == "image" and video["error"] == "clip.mp4: a video; awt serve classifies images (awt " \
        "classify takes videos)"
    assert _error(served.request("POST", "/v1/classify", b"\0", {"Content-Type": "video/mp4"}), 415)["field"] == "image"
    assert _error(served.classify([("huge.jpg", b"\xff" * (1 << 20))]), 413)["field"] == "max_upload_mb"
    many = "\n".join(f"class {i}" for i in range(11))
    assert _error(served.classify(good, [("classes", many)]), 413)["field"] == "max_classes"
    assert _error(served.classify(good, [("top_k", "zero")]), 400)["field"] == "top_k"
    assert _error(served.classify(good, [("classes", "cat"), ("class_set", "x")]), 400)["field"] == "classes"
    assert _error(served.classify([]), 400)["field"] == "image"
    broken = served.request("POST", "/v1/classify", b"--xyz\r\nnot a part", {"Content-Type":
                                                                            "multipart/form-data; boundary=xyz"})
    assert _error(broken, 400)["field"] == "image"
    assert _error(served.request("POST", "/v1/classify", b"a=1", {"Content-Type":
                                                                 "application/x-www-form-urlencoded"}), 415)
    assert _error(served.request("POST", "/v1/class-sets", b'{"classes": "cat"}',
                                 {"Content-Type": "application/json"}), 400)["field"] == "classes"
    not_json = _error(served.request("POST", "/v1/class-sets", b"notjson", {"Content-Type": "application/json"}), 400)
    assert not_json["field"] == "body" and not_json["error"].startswith("the body is not valid JSON")
    assert _error(served.request("POST", "/v1/class-sets", b'{"classes": ["cat"], "template": "{} {}"}',
                                 {"Content-Type": "application/json"}), 400)["field"] == "template"
    assert _error(served.request("GET", "/nowhere"), 404)
    assert _error(served.request("POST", "/v1/explain"), 400)["field"] == "image"
    assert served.request("GET", "/readyz").json()["ready"] is True   # and it goes on


def test_explain_answers_the_numbers_and_the_report_of_what_classify_scored(served, labeled_images):
    [(name, data)] = _files(labeled_images.rows[4:], 1)
    answer = served.explain([(name, data)], [("top_k", "2")])
    assert answer.status == 200, answer.body
    doc = answer.json()
    [result] = served.classify([(name, data)], [("top_k", "4")]).json()["results"]
    assert doc["image"] == name and doc["class_set"] and len(doc["views"]) == SERVE_VIEWS + 1
    assert [c["index"] for c in doc["classes"]] == [p["index"] for p in result["predictions"][:2]]
    assert all(abs(c["score"] - p["score"]) < 1e-4 for c, p in zip(doc["classes"], result["predictions"]))
    assert doc["clip"]["class"] in labeled_images.classnames and isinstance(doc["changed"], bool)
    assert doc["html"].startswith("<!doctype html>") and "default-src 'none'" in doc["html"]
    # inline classes and an ablation; then what cannot be explained, each one JSON error
    inline = served.explain([(name, data)], [("classes", "rocket\ncat"), ("method", "awt-uniform")]).json()
    assert sorted(c["class"] for c in inline["classes"]) == ["cat", "rocket"] and inline["method"] == "awt-uniform"
    assert _error(served.explain([(name, data)] * 2), 400)["field"] == "image"
    assert _error(served.explain([(name, data)], [("method", "clip")]), 400)["field"] == "method"
    bad = _error(served.explain([("notes.txt", b"not pixels")]), 422)
    assert bad["kind"] == "unreadable" and bad["error"] == "notes.txt: not an image (or an unsupported format)"
    assert served.metric('awt_serve_images_total{outcome="explained"}') >= 2


def _read_reply(sock: socket.socket) -> str:
    """A whole HTTP reply: the headers and ``content-length`` bytes of body (they may come apart)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_a_slow_upload_is_408_and_the_others_are_answered(served, labeled_images):
    """A client sending a byte every 0.3 s is cut off after the upload timeout (2 s here); a
    request meanwhile is answered as usual."""
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
    answered = []

    def trickle() -> None:
        try:
            for _ in range(30):
                sock.sendall(b"x")
                time.sleep(0.3)
        except OSError:
            pass

    writer = threading.Thread(target=trickle)
    writer.start()
    start = time.monotonic()
    answered.append(served.classify([("a.jpg", labeled_images.rows[1][0].read_bytes())]).status)
    reply = _read_reply(sock)
    took = time.monotonic() - start
    sock.close()
    writer.join()
    assert answered == [200]
    assert reply.startswith("HTTP/1.1 408") and '"field":"upload_timeout"' in reply
    assert 1.5 < took < 6


# -- batching --------------------------------------------------------------------------------------

def _batches(served) -> tuple[float, float]:
    return served.metric("awt_serve_batch_size_count"), served.metric("awt_serve_batch_size_sum")


def test_concurrent_clients_are_batched_with_the_same_results(served, labeled_images):
    files = _files(labeled_images.rows, 16)[:8]
    alone = [_predictions(served.classify([f]))[0] for f in files]
    count, images = _batches(served)
    barrier = threading.Barrier(len(files))
    together: list = [None] * len(files)

    def client(i: int) -> None:
        barrier.wait()
        together[i] = _predictions(served.classify([files[i]]))[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    batches, batched = (a - b for a, b in zip(_batches(served), (count, images)))
    assert batched == len(files) and batches < len(files)   # fewer batches than requests: batched together
    depth = served.metric("awt_serve_queue_depth")
    assert depth == 0
    metrics = served.request("GET", "/metrics").body.decode()
    assert 'awt_serve_requests_total{endpoint="/v1/classify",status="200"}' in metrics
    assert 'awt_serve_request_seconds_bucket{endpoint="/v1/classify",le="+Inf"}' in metrics


# -- a server of its own: the key, a full queue, a client that leaves, SIGTERM -------------------------

@pytest.fixture(scope="module")
def slow(tiny_model_name, tmp_path_factory):
    """A server whose batches wait 1.5 s for more images (so that the queue can be seen full, and a
    request be in flight when SIGTERM comes), with an API key."""
    pytest.importorskip("fastapi", reason="awt serve needs the serve extra: pip install 'awt[serve]'")
    with ServeProcess(["--model", tiny_model_name, "--pretrained", "none", "--views", "1", "--max-wait-ms", "1500",
                       "--batch-size", "8", "--queue-size", "4", "--max-images", "4", "--api-key", "s3cret",
                       "--cache-dir", str(tmp_path_factory.mktemp("slow-cache"))]) as server:
        yield server


KEY = {"Authorization": "Bearer s3cret"}


def test_the_key_is_needed(slow):
    image = [("a.png", _png(64, 64))]
    assert _error(slow.classify(image, [("classes", "cat")]), 401)["kind"] == "auth"
    assert _error(slow.classify(image, [("classes", "cat")], {"X-API-Key": "wrong"}), 401)
    assert slow.request("GET", "/metrics").status == 401
    assert slow.request("GET", "/healthz").status == 200 and slow.request("GET", "/").status == 200
    assert slow.request("GET", "/metrics", headers={"X-API-Key": "s3cret"}).status == 200


def test_a_full_queue_is_503_with_retry_after_and_a_client_that_leaves_costs_nothing(slow):
    image = _png(64, 64)
    first: list = []
    holder = threading.Thread(target=lambda: first.append(
        slow.classify([("a.png", image)] * 4, [("classes", "cat\ndog")], KEY)))
    holder.start()
    assert wait_until(lambda: slow.metric("awt_serve_queue_depth", KEY) == 4)
    full = _error(slow.classify([("b.png", image)], [("classes", "cat\ndog")], KEY), 503)
    assert full["kind"] == "busy" and full["field"] == "queue_size"
    # a decompression bomb is refused from its header, before the queue: a 413 even now
    bomb = _error(slow.classify([("bomb.png", _bomb())], [("classes", "cat\ndog")], KEY), 413)
    assert bomb["field"] == "max_pixels" and bomb["results"][0]["image"] == "bomb.png"
    assert "50000 x 50000 pixels" in bomb["error"] and bomb["error"].startswith("bomb.png: ")
    holder.join()
    assert first[0].status == 200 and len(first[0].json()["results"]) == 4

    # a client that sends its request and leaves: its image is dropped before the model sees it
    images_before = slow.metric("awt_serve_batch_size_sum", KEY)
    body, content_type = multipart([("c.png", image)], [("classes", "cat")])
    sock = socket.create_connection(("127.0.0.1", slow.port))
    sock.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: "
                 f"{content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert wait_until(lambda: slow.metric("awt_serve_queue_depth", KEY) == 1)
    sock.close()
    assert wait_until(lambda: slow.metric("awt_serve_disconnects_total", KEY) == 1)
    assert slow.metric("awt_serve_queue_depth", KEY) == 0
    answer = slow.classify([("d.png", image)], [("classes", "cat")], KEY)
    assert answer.status == 200
    assert slow.metric("awt_serve_batch_size_sum", KEY) == images_before + 1   # only d.png was scored


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(slow):
    in_flight: list = []
    client = threading.Thread(target=lambda: in_flight.append(
        slow.classify([("e.png", _png(80, 64))], [("classes", "cat\nrocket")], KEY)))
    client.start()
    assert wait_until(lambda: slow.metric("awt_serve_queue_depth", KEY) == 1)
    slow.process.send_signal(__import__("signal").SIGTERM)
    client.join(30)
    assert in_flight and in_flight[0].status == 200, in_flight
    assert len(in_flight[0].json()["results"][0]["predictions"]) == 2
    assert slow.process.wait(30) == 0
    assert "awt serve: stopped" in slow.output and "Traceback" not in slow.output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", slow.port), timeout=2)


# -- the command ----------------------------------------------------------------------------------

def _run_serve(*args: str, hide: str | None = None) -> subprocess.CompletedProcess:
    """``awt serve ARGS`` in a fresh interpreter; ``hide``: a module it then cannot import."""
    code = (f"import sys\nsys.modules[{hide!r}] = None\n" if hide else "import sys\n") + \
        f"sys.argv = ['awt', 'serve', *{list(args)!r}]\nfrom awt.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_without_the_extra_the_command_says_which(tmp_path):
    r = _run_serve("--model", "no-such-model", hide="fastapi")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["error: awt serve needs fastapi: pip install 'awt[serve]'"]


def test_the_command_refuses_before_loading_anything(tmp_path):
    pytest.importorskip("fastapi", reason="awt serve needs the serve extra: pip install 'awt[serve]'")
    run = _run_serve

    exposed = run("--host", "0.0.0.0", "--model", "no-such-model")
    assert exposed.returncode == 1
    assert exposed.stderr.strip().splitlines() == [
        "error: 0.0.0.0 is reachable from other machines: set --api-key (or $AWT_API_KEY) to listen there"]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = run("--port", str(busy.getsockname()[1]), "--model", "no-such-model")
    busy.close()
    assert taken.returncode == 1 and taken.stderr.strip().startswith("error: cannot listen on 127.0.0.1:")
    assert len(taken.stderr.strip().splitlines()) == 1
    help_text = run("--help").stdout
    for option in ("--classes", "--model", "--api-key", "--queue-size", "--max-wait-ms", "--max-upload-mb"):
        assert option in help_text
