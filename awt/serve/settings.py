"""The service's settings and limits, and how a library error becomes an HTTP answer (no serving
library imported here: the command reads it for its help)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults

#: AWTError.kind -> HTTP status
STATUS = {"input": 400, "limit": 413, "missing": 404, "unavailable": 503}

#: How an HTTP client reaches each setting, for the hints errors carry (awt.errors): request fields
#: by their name, the server's own settings by its command-line option.
FIELDS = {
    "classes": "the request's classes", "descriptions": "the class set's descriptions",
    "template": "the request's template", "method": "the request's method", "top_k": "the request's top_k",
    "class_set": "the request's class_set", "image": "the request's images",
    "descriptions_per_class": "the class set's descriptions_per_class",
    "allow_fewer_descriptions": "the class set's allow_fewer_descriptions",
    "max_pixels": "the server's --max-pixels", "views": "the server's --views", "seed": "the server's --seed",
    "cache_dir": "the server's --cache-dir", "no_cache": "the server's --no-cache",
    "max_images": "the server's --max-images", "max_upload_mb": "the server's --max-upload-mb",
    "max_classes": "the server's --max-classes", "max_set_classes": "the server's --max-set-classes",
    "max_class_sets": "the server's --max-class-sets", "queue_size": "the server's --queue-size",
    "request_timeout": "the server's --request-timeout", "upload_timeout": "the server's --upload-timeout",
}


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how long the server waits for it."""

    max_images: int = 16             # images per classify request
    max_upload_bytes: int = 32 << 20  # a request's whole body
    max_classes: int = 100           # classes named inline by one request
    max_set_classes: int = 5000      # classes of a registered set
    max_class_sets: int = 256        # registered sets kept
    max_top_k: int = 1000
    upload_timeout: float = 30.0     # seconds to receive a request's body
    request_timeout: float = 60.0    # seconds from the body received to the answer

    def as_json(self) -> dict:
        return {"max_images": self.max_images, "max_upload_bytes": self.max_upload_bytes,
                "max_classes": self.max_classes, "max_set_classes": self.max_set_classes,
                "max_class_sets": self.max_class_sets, "max_top_k": self.max_top_k,
                "upload_timeout_s": self.upload_timeout, "request_timeout_s": self.request_timeout}


@dataclass(frozen=True)
class Batching:
    """How requests are gathered into batches on the model's thread."""

    batch_size: int = 16             # images per batch at most
    max_wait: float = 0.01           # seconds a batch waits for more after its first image
    queue_size: int = 64             # images waiting at most; beyond, 503 with Retry-After
    workers: int = 0                 # image decoding processes (0: on the model's thread)


@dataclass(frozen=True)
class Defaults:
    """What a request that says nothing gets."""

    method: str = defaults.METHOD
    top_k: int = defaults.TOP_K
    template: str = defaults.TEMPLATE
