"""The classifier: a backbone and a class set, scoring images with AWT or any registered method.

A thin facade over the pipeline's stages: :func:`~awt.prompts.encode_classes` (once),
:func:`~awt.views.encode_views` and :func:`~awt.methods.score` (per batch).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from . import defaults, distributed
from .backbone import Backbone, create_backbone
from .errors import AWTError
from .images import Decoding, ImageInput
from .methods import DESCRIPTIONS, get_method, score
from .prompts import DEFAULT_DESCRIPTIONS, DEFAULT_TEMPLATE, ClassPrompts, default_cache_dir, encode_classes
from .scoring import AWTConfig
from .views import DEFAULT_VIEWS, ViewFeatures, encode_views


@dataclass
class Prediction:
    index: int      # class index (label order); duplicate names stay distinct by index
    name: str
    score: float


@dataclass
class ImageResult:
    image: str
    predictions: list[Prediction] | None = None
    error: str | None = None


_NOT_FINITE = ("its class scores are not finite (NaN or inf), so no ranking can be given: the model's features are "
               "broken (NaN in its weights, or a precision that overflows)")


def _describe_input(item: ImageInput) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"<{type(item).__name__}>"


class AWTClassifier:
    """Zero-shot classifier over a fixed class set.

    The class prompts are encoded once (and cached on disk per backbone and prompt set); images are
    decoded once, their views cut in a batch on the backbone's device, and scored all at once.
    """

    def __init__(
        self,
        backbone: Backbone,
        classnames: Sequence[str],
        *,
        template: str = DEFAULT_TEMPLATE,
        descriptions=None,
        descriptions_per_class: int = DEFAULT_DESCRIPTIONS,
        allow_fewer_descriptions: bool = False,
        views: int = DEFAULT_VIEWS,
        seed: int = 0,
        config: AWTConfig = AWTConfig(),
        cache_dir: str | os.PathLike | None = "default",
        classes: ClassPrompts | None = None,
        progress: bool = False,
        decoding: Decoding = Decoding(),
    ):
        """``descriptions``: a :class:`~awt.descriptions.DescriptionSet`, ``{name: [sentences]}`` or
        one list per class. ``classes``, if given, are the class prompts already encoded (no prompts
        are built or encoded). ``progress``: a progress bar on stderr while the prompts are encoded.
        ``decoding``: how image files are read (:class:`~awt.images.Decoding`: the pixel limit for
        possible decompression bombs, EXIF orientation, reduced JPEG decoding, the views' source cap).

        The template and descriptions are encoded here; a method that reads another prompt set
        (WaffleCLIP's descriptors, CLIP's templates) has it encoded on its first use, once."""
        if views < 0:
            raise AWTError("views must be >= 0")
        self.backbone = backbone
        self.views = views
        self.seed = seed
        self.config = config
        self.decoding = decoding
        self.template = template
        self._cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
        self._progress = progress
        self._other_sets: dict[tuple, ClassPrompts] = {}
        if classes is None:
            classes = encode_classes(
                backbone, classnames, template=template, descriptions=descriptions,
                descriptions_per_class=descriptions_per_class, allow_fewer_descriptions=allow_fewer_descriptions,
                cache_dir=self._cache_dir, progress=progress)
        elif len(classes) != len(classnames):
            raise AWTError(f"encoded prompts for {len(classes)} classes, {len(classnames)} names")
        self.classes = classes

    @classmethod
    def from_pretrained(cls, classnames: Sequence[str], model: str = "ViT-B-32", pretrained: str | None = "openai",
                        device: str | None = None, precision: str = "auto", **kwargs) -> "AWTClassifier":
        """Load a backbone with :func:`awt.create_backbone` and build the classifier on it."""
        return cls(create_backbone(model, pretrained, device, precision), classnames, **kwargs)

    @property
    def classnames(self) -> list[str]:
        return self.classes.names

    @property
    def prompts(self) -> list[list[str]] | None:
        return self.classes.prompts

    @property
    def text_features(self) -> torch.Tensor:
        return self.classes.features

    @property
    def logit_scale(self) -> float:
        return self.backbone.logit_scale

    def iter_image_features(self, images: Sequence[ImageInput], batch_size: int = 8,
                            num_workers: int | None = None, views: int | None = None) -> Iterator[ViewFeatures]:
        """Encoded views of ``images``, batch by batch (:func:`awt.views.encode_views`); ``views``
        overrides the classifier's number of random views."""
        return encode_views(self.backbone, images, views=self.views if views is None else views, seed=self.seed,
                            batch_size=batch_size, num_workers=num_workers, decoding=self.decoding)

    def classes_for(self, method: str = "awt") -> ClassPrompts:
        """The encoded prompt set ``method`` reads: the classifier's own (template and descriptions),
        or its own set, encoded on first use (:func:`~awt.prompts.method_prompts`)."""
        m = get_method(method)
        key = m.prompt_set(0, True, self.seed)
        if key[0] == DESCRIPTIONS:
            return self.classes
        if key not in self._other_sets:
            self._other_sets[key] = encode_classes(
                self.backbone, self.classnames, template=self.template, cache_dir=self._cache_dir,
                progress=self._progress, method=m, seed=self.seed)
        return self._other_sets[key]

    def scores(self, image_features: torch.Tensor, method: str = "awt") -> torch.Tensor:
        """(batch, views, dim) image features -> (batch, classes) scores of ``method``."""
        c = self.classes_for(method)
        return score(method, image_features, c.features, c.mask, self.logit_scale, self.config)

    def predict(self, image_features: torch.Tensor, top_k: int = 5, method: str = "awt") -> list[list[Prediction]]:
        """Ranked predictions, best first, for each image of (batch, views, dim) features. Scores
        that are not finite are an AWTError: a NaN is never ranked."""
        values, indices, finite = self._top_k(image_features, top_k, method)
        if self.text_features.is_cuda:
            torch.cuda.current_stream(self.text_features.device).synchronize()
        if not bool(finite.all()):
            raise AWTError(f"image {int((~finite).nonzero()[0])} of the batch: {_NOT_FINITE}")
        return self._predictions(values, indices)

    def _top_k(self, image_features: torch.Tensor, top_k: int,
               method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, k) best scores, their class indices and (batch,) whether all of an image's scores
        are finite; from a GPU, on their way to pinned host memory (read them after the current
        stream's work is done)."""
        scores = self.scores(image_features, method)
        values, indices = scores.topk(max(1, min(top_k, scores.shape[1])), dim=1)
        finite = torch.isfinite(scores).all(1)
        return (values.to("cpu", non_blocking=True), indices.to("cpu", non_blocking=True),
                finite.to("cpu", non_blocking=True))

    def _predictions(self, values: torch.Tensor, indices: torch.Tensor) -> list[list[Prediction]]:
        return [[Prediction(i, self.classnames[i], float(v)) for i, v in zip(idx, val)]
                for idx, val in zip(indices.tolist(), values.tolist())]

    def classify(self, images: Sequence[ImageInput], top_k: int = defaults.TOP_K, method: str = defaults.METHOD,
                 batch_size: int = defaults.BATCH_SIZE,
                 num_workers: int | None = None) -> list[ImageResult]:
        """Classify images (paths or PIL images); unreadable ones get an ``error`` instead of predictions."""
        return list(self.iter_classify(images, top_k, method, batch_size, num_workers))

    def iter_classify(self, images: Sequence[ImageInput], top_k: int = defaults.TOP_K,
                      method: str = defaults.METHOD, batch_size: int = defaults.BATCH_SIZE,
                      num_workers: int | None = None) -> Iterator[ImageResult]:
        """Each image's result, in input order, as soon as it and every image before it are done.

        Images are scored ``batch_size`` at a time (the scorer's cost per image falls with the
        batch). On a GPU a batch is scored on a side stream once the next images' encoding is
        queued, and its top-k is read back later: the scorer's convergence checks then wait for the
        scorer alone, and the device never idles while the host waits.
        """
        m = get_method(method)
        self.classes_for(method)   # its prompts encoded now, not on the scoring stream
        results = [ImageResult(_describe_input(x)) for x in images]
        done = [False] * len(results)
        shown = 0
        device = self.text_features.device
        # High priority: the scorer's small kernels go ahead of queued encoder blocks, so the host,
        # waiting on its convergence checks, is back before the encoder's queue runs dry.
        side = torch.cuda.Stream(device, priority=-1) if device.type == "cuda" else None
        pending: list[ViewFeatures] = []        # encoded, not yet a whole batch
        ready: list[tuple] = []                 # whole batches, with the event of their encoding
        in_flight: list[tuple] = []             # scored; top-k on the way to the host

        def launch() -> None:
            group, encoded = ready.pop(0)
            features = [fb.features for fb in group]
            if side is not None:
                side.wait_event(encoded)
                for t in features:  # made on the main stream, read on the side one
                    t.record_stream(side)
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                top = self._top_k(torch.cat(features), top_k, method)
                copied = _record_event(device)
            in_flight.append(([i for fb in group for i in fb.indices], *top, copied))

        def collect(keep: int) -> None:
            while len(in_flight) > keep:
                indices, values, classes, finite, copied = in_flight.pop(0)
                if copied is not None:
                    copied.synchronize()
                if not bool(finite.all()):
                    raise AWTError(f"{results[indices[int((~finite).nonzero()[0])]].image}: {_NOT_FINITE}")
                for index, preds in zip(indices, self._predictions(values, classes)):
                    results[index].predictions = preds
                    done[index] = True

        def close_batch() -> None:
            ready.append((pending[:], _record_event(device)))
            pending.clear()

        closed = 0   # batches scored so far: the first are 1, 2, 4, ... images, so results come from the start

        stream = self.iter_image_features(images, batch_size, num_workers, views=m.views_used(self.views))
        try:
            for batch in stream:
                for index, reason in batch.errors:
                    prefix = results[index].image + ": "
                    results[index].error = reason[len(prefix):] if reason.startswith(prefix) else reason
                    done[index] = True
                while ready:  # this batch's encoding is queued by now: score the one before behind it
                    launch()
                    collect(keep=1)
                if batch.indices:
                    pending.append(batch)
                    if sum(len(fb.indices) for fb in pending) >= min(batch_size, 1 << closed):
                        close_batch()
                        closed += 1
                        if side is None:  # nothing to overlap with: score it now, show it sooner
                            launch()
                            collect(keep=0)
                while shown < len(results) and done[shown]:
                    yield results[shown]
                    shown += 1
        finally:
            stream.close()
        if pending:
            close_batch()
        while ready:
            launch()
        collect(keep=0)
        yield from results[shown:]


def iter_classify_ranks(clf: AWTClassifier, images: Sequence[ImageInput], top_k: int = defaults.TOP_K,
                        method: str = defaults.METHOD, batch_size: int = defaults.BATCH_SIZE,
                        num_workers: int | None = None) -> Iterator[ImageResult]:
    """:meth:`AWTClassifier.iter_classify` shared by the ranks of a torchrun job.

    The images go in chunks of ``world x 2 x batch_size``; each rank classifies every ``world``-th
    image of a chunk, and rank 0 yields the chunk's results in input order (the other ranks yield
    nothing). One process: the same as ``iter_classify``.
    """
    r = distributed.ranks()
    if not r.active:
        yield from clf.iter_classify(images, top_k, method, batch_size, num_workers)
        return
    chunk = r.world * 2 * batch_size
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        mine = list(clf.iter_classify(r.share(part), top_k, method, batch_size, num_workers))
        shares = distributed.gather(mine)
        if r.main:
            for j in range(len(part)):
                yield shares[j % r.world][j // r.world]


def _record_event(device: torch.device) -> torch.cuda.Event | None:
    """An event on ``device``'s current stream (CUDA), else None."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event
