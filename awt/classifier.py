"""The classifier: a backbone and a class set, scoring images and videos with AWT or any registered method.

A thin facade over the pipeline's stages: :func:`~awt.prompts.encode_classes` (once per prompt
set), :func:`~awt.inputs.encode_inputs` (images and videos) and :func:`~awt.methods.score` (per
batch). What it classifies with is one :class:`~awt.spec.ClassifierSpec`; :func:`create_classifier`
builds it the same way for every front end.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from . import defaults, distributed
from .backbones import Backbone, create_backbone
from .errors import AWTError
from .images import ImageInput
from .methods import get_method, score
from .prompts import ClassPrompts, encode_classes
from .spec import ClassifierSpec
from .inputs import encode_inputs
from .views import ViewFeatures


@dataclass
class Prediction:
    index: int      # class index (label order); duplicate names stay distinct by index
    name: str
    score: float


@dataclass
class ImageResult:
    image: str
    predictions: list[Prediction] | None = None
    error: str | None = None                  # why the input could not be read (without its name)
    cause: AWTError | None = field(default=None, repr=False, compare=False)   # that error, with its hint

    def to_json(self) -> dict[str, Any]:
        """The JSON shape every front end gives: ``{"image", "predictions": [{"class", "index",
        "score"}, ...]}``, or ``{"image", "error"}`` for an input that could not be read."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "predictions": [{"class": p.name, "index": p.index, "score": round(p.score, 4)}
                                                      for p in self.predictions or []]}


_NOT_FINITE = ("its class scores are not finite (NaN or inf), so no ranking can be given: the model's features are "
               "broken (NaN in its weights, or a precision that overflows)")


def _describe_input(item: ImageInput) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"<{type(item).__name__}>"


class AWTClassifier:
    """Zero-shot classifier over a fixed class set.

    The class prompts are encoded once per prompt set (and cached on disk per backbone and prompt
    set); images are decoded once, their views cut in a batch on the backbone's device, and scored
    all at once.
    """

    def __init__(self, backbone: Backbone, spec: ClassifierSpec, *, classes: ClassPrompts | None = None):
        """Encode the prompts ``spec.method`` reads (other methods' sets, WaffleCLIP's descriptors
        or CLIP's templates, are encoded on their first use, once). ``classes``: that set already
        encoded (nothing is built or encoded)."""
        self.backbone = backbone
        self.spec = spec
        self._sets: dict[tuple, ClassPrompts] = {}
        main = get_method(spec.method).prompts
        if classes is not None:
            if len(classes) != len(spec.classes):
                raise ValueError(f"encoded prompts for {len(classes)} classes, {len(spec.classes)} names")
            self._sets[spec.prompt_key(main)] = classes
        self.classes = self.classes_for(spec.method)

    @classmethod
    def from_pretrained(cls, classnames: Sequence[str], model: str = defaults.MODEL,
                        pretrained: str | None = defaults.PRETRAINED, device: str | None = None,
                        precision: str = "auto", **spec) -> "AWTClassifier":
        """Load a backbone with :func:`awt.create_backbone` and build the classifier on it; ``spec``:
        the :class:`~awt.spec.ClassifierSpec` fields (``descriptions=``, ``method=``, ...)."""
        return cls(create_backbone(model, pretrained, device, precision), ClassifierSpec(classnames, **spec))

    @property
    def classnames(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def prompts(self) -> list[list[str]] | None:
        return self.classes.prompts

    @property
    def text_features(self) -> torch.Tensor:
        return self.classes.features

    @property
    def logit_scale(self) -> float:
        return self.backbone.logit_scale

    def iter_image_features(self, images: Sequence[ImageInput], batch_size: int = defaults.BATCH_SIZE,
                            num_workers: int | None = None, views: int | None = None,
                            video_view0_only: bool = False) -> Iterator[ViewFeatures]:
        """Encoded views of ``images`` (images and videos, :func:`awt.inputs.encode_inputs`), batch
        by batch, in input order: an image's features are (1 + N, dim), a video's (views of
        ``spec.video``, dim), or (1, dim) with ``video_view0_only``. ``views`` overrides the spec's
        number of random views."""
        return encode_inputs(self.backbone, images, views=self.spec.views if views is None else views,
                             seed=self.spec.seed, batch_size=batch_size, num_workers=num_workers,
                             decoding=self.spec.decoding, sampling=self.spec.video, video_view0_only=video_view0_only)

    def classes_for(self, method: str | None = None) -> ClassPrompts:
        """The encoded prompt set ``method`` (default: the spec's) reads, encoded on first use."""
        prompt_set = get_method(method or self.spec.method).prompts
        key = self.spec.prompt_key(prompt_set)
        if key not in self._sets:
            self._sets[key] = encode_classes(self.backbone, self.spec, prompt_set)
        return self._sets[key]

    def scores(self, image_features: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """(batch, views, dim) image features -> (batch, classes) scores of ``method`` (default: the spec's)."""
        method = method or self.spec.method
        c = self.classes_for(method)
        return score(method, image_features, c.features, c.mask, self.logit_scale, self.spec.awt)

    def predict(self, image_features: torch.Tensor, top_k: int = defaults.TOP_K,
                method: str | None = None) -> list[list[Prediction]]:
        """Ranked predictions, best first, for each image of (batch, views, dim) features. Scores
        that are not finite are an AWTError: a NaN is never ranked."""
        values, indices, finite = self._top_k(image_features, top_k, method)
        if self.text_features.is_cuda:
            torch.cuda.current_stream(self.text_features.device).synchronize()
        if not bool(finite.all()):
            raise AWTError(f"image {int((~finite).nonzero()[0])} of the batch: {_NOT_FINITE}")
        return self._predictions(values, indices)

    def _top_k(self, image_features: torch.Tensor, top_k: int,
               method: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def explain(self, image: ImageInput, top_k: int = 3, method: str | None = None):
        """What decided ``image``'s best ``top_k`` classes: views, prompts, weights and the transport
        plan (:func:`awt.explain.explain`; ``method``, default the spec's, must be AWT or an ablation of it)."""
        from .explain import explain

        return explain(self, image, top_k, method)

    def classify(self, images: Sequence[ImageInput], top_k: int = defaults.TOP_K, method: str | None = None,
                 batch_size: int = defaults.BATCH_SIZE,
                 num_workers: int | None = None) -> list[ImageResult]:
        """Classify images (paths or PIL images); unreadable ones get an ``error`` instead of predictions."""
        return list(self.iter_classify(images, top_k, method, batch_size, num_workers))

    def iter_classify(self, images: Sequence[ImageInput], top_k: int = defaults.TOP_K,
                      method: str | None = None, batch_size: int = defaults.BATCH_SIZE,
                      num_workers: int | None = None) -> Iterator[ImageResult]:
        """Each input's result, in input order, as soon as it and every input before it are done.

        Inputs are images (paths, PIL images, bytes) and videos (paths with a video extension: their
        views are ``spec.video``'s frame crops, and a method that reads view 0 alone reads a video's
        view 0, see :func:`awt.video_sampling.view_zero`). Images are scored ``batch_size`` at a time
        (the scorer's cost per image falls with the batch), videos about as many views at a time; a
        batch holds one kind. On a GPU a batch is scored on a side stream once the next images' encoding is
        queued, and its top-k is read back later: the scorer's convergence checks then wait for the
        scorer alone, and the device never idles while the host waits.
        """
        method = method or self.spec.method
        m = get_method(method)
        self.classes_for(method)   # its prompts encoded now, not on the scoring stream
        results = [ImageResult(_describe_input(x)) for x in images]
        done = [False] * len(results)
        shown = 0
        device = self.text_features.device
        # High priority: the scorer's small kernels go ahead of queued encoder blocks, so the host,
        # waiting on its convergence checks, is back before the encoder's queue runs dry.
        side = torch.cuda.Stream(device, priority=-1) if device.type == "cuda" else None
        # encoded, not yet a whole batch: one group per number of views (images, videos), since a batch
        # is scored as one tensor
        pending: dict[int, list[ViewFeatures]] = {}
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

        image_views = m.views_used(self.spec.views) + 1
        closed: dict[int, int] = {}   # batches closed per group: the first hold 1, 2, 4, ... inputs, so results
                                      # come from the start

        def close(views: int) -> None:
            ready.append((pending.pop(views), _record_event(device)))
            closed[views] = closed.get(views, 0) + 1
            if side is None:  # nothing to overlap with: score it now, show it sooner
                launch()
                collect(keep=0)

        stream = self.iter_image_features(images, batch_size, num_workers, views=m.views_used(self.spec.views),
                                          video_view0_only=not m.random_views)
        try:
            for batch in stream:
                for index, problem in batch.errors:
                    reason, prefix = str(problem), results[index].image + ": "
                    results[index].error = reason[len(prefix):] if reason.startswith(prefix) else reason
                    results[index].cause = problem
                    done[index] = True
                while ready:  # this batch's encoding is queued by now: score the one before behind it
                    launch()
                    collect(keep=1)
                if batch.indices:
                    views = batch.features.shape[1]
                    for other in [v for v in pending if v != views]:
                        close(other)   # inputs come in order: the other kind's inputs wait for nothing more
                    group = pending.setdefault(views, [])
                    group.append(batch)
                    # about batch_size images' worth of views: fewer videos (96 views each) than images
                    size = max(1, round(batch_size * image_views / views))
                    if sum(len(fb.indices) for fb in group) >= min(size, 1 << closed.get(views, 0)):
                        close(views)
                while shown < len(results) and done[shown]:
                    yield results[shown]
                    shown += 1
        finally:
            stream.close()
        for views in list(pending):
            close(views)
        while ready:
            launch()
        collect(keep=0)
        yield from results[shown:]


def create_classifier(spec: ClassifierSpec, backbone: Backbone) -> AWTClassifier:
    """The classifier of ``spec`` on ``backbone``. Under torchrun, rank 0 encodes the prompts (into
    the cache) first, and the other ranks then read them from it."""
    r = distributed.ranks()
    clf = AWTClassifier(backbone, spec) if r.main else None
    distributed.barrier()
    return clf or AWTClassifier(backbone, spec)


def iter_classify_ranks(clf: AWTClassifier, images: Sequence[ImageInput], top_k: int = defaults.TOP_K,
                        method: str | None = None, batch_size: int = defaults.BATCH_SIZE,
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
