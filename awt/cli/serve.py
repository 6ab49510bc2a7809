"""``awt serve``: the classifier as an HTTP service, one model kept warm (:mod:`awt.serve`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .. import defaults
from . import options
from ..errors import AWTError
from ..serve.settings import Batching, Limits

_LIMITS, _BATCHING = Limits(), Batching()
KEY_ENV = "AWT_API_KEY"
MAX_CONNECTIONS = 1000   # connections and requests at once; uvicorn answers 503 beyond


def serve(
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names, one per line: the class set of "
                                           "requests that name none.", show_default=False),
    descriptions: Optional[Path] = typer.Option(None, help="Descriptions JSON for --classes: {class: [sentences]} "
                                                "or an `awt describe` cache.", show_default=False),
    template: str = options.TEMPLATE,
    descriptions_per_class: Optional[int] = options.DESCRIPTIONS_PER_CLASS,
    allow_fewer_descriptions: bool = options.ALLOW_FEWER,
    model: str = options.MODEL,
    pretrained: str = options.PRETRAINED,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    views: int = options.VIEWS,
    seed: int = options.SEED,
    method: str = typer.Option(defaults.METHOD, help="Scoring method of requests that name none."),
    top_k: int = typer.Option(defaults.TOP_K, min=1, help="Predictions per image of requests that name none."),
    cache_dir: Optional[Path] = typer.Option(None, help=f"Embedding cache folder (default ${defaults.CACHE_ENV} "
                                             "or ~/.cache/awt); registered class sets are kept there too.",
                                             show_default=False),
    no_cache: bool = options.NO_CACHE,
    max_pixels: int = typer.Option(defaults.MAX_PIXELS, min=0, help="Refuse images of more pixels than this "
                                   "(width x height, as stored); 0: no limit."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any but loopback needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free one, said on start)."),
    api_key: Optional[str] = typer.Option(None, envvar=KEY_ENV, show_default=False,
                                          help="Key every request must carry (Authorization: Bearer KEY, or "
                                          "X-API-Key); better given in the environment than on a command line, "
                                          "which other users can see."),
    batch_size: int = typer.Option(_BATCHING.batch_size, min=1, help="Images scored together at most."),
    max_wait_ms: float = typer.Option(_BATCHING.max_wait * 1000, min=0, help="How long a batch waits for more "
                                      "images after its first (milliseconds)."),
    queue_size: int = typer.Option(_BATCHING.queue_size, min=1, help="Images waiting at most; a request beyond "
                                   "is refused (503, Retry-After)."),
    workers: int = typer.Option(_BATCHING.workers, min=0, help="Image decoding processes (0: decode on the "
                                "model's thread)."),
    max_images: int = typer.Option(_LIMITS.max_images, min=1, help="Images per request at most."),
    max_upload_mb: float = typer.Option(_LIMITS.max_upload_bytes / 2**20, min=0.001,
                                        help="A request's body at most (MiB)."),
    max_classes: int = typer.Option(_LIMITS.max_classes, min=1, help="Classes a request may name inline."),
    max_set_classes: int = typer.Option(_LIMITS.max_set_classes, min=1, help="Classes of a registered set."),
    max_class_sets: int = typer.Option(_LIMITS.max_class_sets, min=1, help="Registered class sets kept."),
    upload_timeout: float = typer.Option(_LIMITS.upload_timeout, min=0.1, help="Seconds a request's body may "
                                         "take to arrive (408 after)."),
    request_timeout: float = typer.Option(_LIMITS.request_timeout, min=0.1, help="Seconds from a request's body "
                                          "to its answer (503 after)."),
) -> None:
    """Serve the classifier over HTTP: a JSON API, metrics and a web page at /.

    The model is loaded once; images of concurrent requests are scored together, each with the
    same result as `awt classify --json` gives. SIGTERM (or Ctrl-C) stops taking requests, finishes
    those in flight and exits.
    """
    from ..serve import missing_packages

    missing = missing_packages()
    if missing:
        raise AWTError(f"awt serve needs {', '.join(missing)}: pip install 'awt[serve]'")
    if queue_size < max_images:
        raise AWTError(f"--queue-size {queue_size} is less than --max-images {max_images}: a request of "
                       f"{max_images} images could never be taken")
    sock = _bind(host, port, api_key)   # before the model loads: a taken port is said at once

    from ..files import default_cache_dir
    from ..images import Decoding
    from ..spec import ClassifierSpec

    cache = None if no_cache else (cache_dir or default_cache_dir())
    base = dict(template=template, method=method, views=views, seed=seed, cache_dir=cache,
                decoding=Decoding(max_pixels=max_pixels or None))
    start_spec = None
    if classes is not None:
        start_spec = ClassifierSpec.from_files(classes, descriptions, descriptions_per_class=descriptions_per_class,
                                               allow_fewer_descriptions=allow_fewer_descriptions, **base)
    elif descriptions is not None:
        raise AWTError("--descriptions needs --classes", setting="descriptions")
    else:
        ClassifierSpec(["check"], **base)   # the settings checked before the model loads

    limits = Limits(max_images=max_images, max_upload_bytes=int(max_upload_mb * 2**20), max_classes=max_classes,
                    max_set_classes=max_set_classes, max_class_sets=max_class_sets, upload_timeout=upload_timeout,
                    request_timeout=request_timeout)
    batching = Batching(batch_size=batch_size, max_wait=max_wait_ms / 1000, queue_size=queue_size, workers=workers)
    started = time.perf_counter()
    server = _build(model, pretrained, device, precision, base, start_spec, classes.name if classes else None,
                    limits, batching, api_key, top_k)
    _run(server, sock, started)


def _bind(host: str, port: int, api_key: str | None):
    """The listening address, bound now; any address but loopback needs a key."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise AWTError(f"cannot listen on {host!r}: {e.strerror or e}") from None
    family, _, _, _, address = infos[0]
    loopback = all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
    if not loopback and not api_key:
        raise AWTError(f"{host} is reachable from other machines: set --api-key (or ${KEY_ENV}) to listen there")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise AWTError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _build(model, pretrained, device, precision, base, start_spec, start_name, limits, batching, api_key, top_k):
    """The model loaded, the class set of --classes encoded, one image classified to warm up."""
    import logging

    from ..backbones import create_backbone
    from ..serve.app import Server
    from ..serve.batcher import Batcher
    from ..serve.class_sets import ClassSet, ClassSets
    from ..serve.engine import Engine
    from ..serve.metrics import Metrics
    from ..serve.settings import Defaults
    from ..spec import ClassifierSpec

    backbone = create_backbone(model, pretrained, device, precision)
    engine = Engine(backbone, views=base["views"], seed=base["seed"], decoding=base["decoding"],
                    workers=batching.workers)
    metrics = Metrics()
    store = None if base["cache_dir"] is None else Path(base["cache_dir"]) / "serve-class-sets"
    sets = ClassSets(lambda names, **fields: ClassifierSpec(names, **{**base, **fields}), limits, store)
    if start_spec is not None:
        engine.build(sets.start_with(start_spec, start_name))
    warm = sets.default or ClassSet("warm-up", ClassifierSpec(["thing"], **base), "inline")
    engine.warm_up(warm, base["method"])
    batcher = Batcher(engine.run_batch, batch_size=batching.batch_size, max_wait=batching.max_wait,
                      queue_size=batching.queue_size, observe=metrics.observe_batch, depth=metrics.queue_depth.set)
    metrics.class_sets.set(len(sets.registered()))
    logging.getLogger("awt.serve").setLevel(logging.INFO)
    return Server(engine, batcher, sets, metrics, limits, Defaults(base["method"], top_k, base["template"]), api_key,
                  model={**backbone.info(), "views": base["views"], "seed": base["seed"]})


def _run(server, sock, started: float) -> None:
    import signal

    import uvicorn

    from ..serve.app import create_app

    app = create_app(server)
    server.batcher.start()
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=max(5.0, server.limits.request_timeout + 5),
                            limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5)
    httpd = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    default = server.class_sets.default
    what = f"{len(default.spec.classes)} classes from {default.name}" if default else "no default classes"
    sock.listen(2048)   # from here on, connections wait in the backlog until uvicorn takes them
    print(f"awt serve: ready in {time.perf_counter() - started:.1f} s on http://{shown}:{port}/ ({what}, batch "
          f"{server.batcher.batch_size}); SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
    # uvicorn raises the signal again once it has shut down gracefully; SIGTERM then ends the
    # command normally (exit 0), Ctrl-C as every command's does (130)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        httpd.run(sockets=[sock])
    finally:
        sock.close()
        server.batcher.stop(1.0)
    print("awt serve: stopped", file=sys.stderr)
