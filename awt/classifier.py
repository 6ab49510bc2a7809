"""The classifier: a backbone and a class set, scoring batches of images with AWT or a baseline."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Iterator, Mapping, Sequence

import torch

from .augment import cut_views
from .backbone import Backbone, create_backbone
from .errors import AWTError
from .images import ImageInput, to_device
from .prompts import DEFAULT_TEMPLATE, build_prompts, default_cache_dir, encode_prompts
from .scoring import AWTConfig, awt_scores_from_features, clip_scores, ensemble_scores

METHODS = ("awt", "clip", "ensemble", "awt-uniform", "awt-image", "awt-text")
VIEW0_METHODS = ("clip", "ensemble", "awt-text")  # need no random views
DEFAULT_VIEWS = 50
DEFAULT_DESCRIPTIONS = 50


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


@dataclass
class FeatureBatch:
    """Encoded views of the readable images of one loader batch."""

    indices: list[int]                  # positions in the input sequence
    features: torch.Tensor              # (images, views, dim), L2-normalised
    errors: list[tuple[int, str]]       # (position, reason) of unreadable inputs


def default_workers(images: int, batch_size: int) -> int:
    """Loader worker processes for ``images`` images: none for a single batch, else one per spare
    core up to 12."""
    return 0 if images <= batch_size else min(12, max(1, (os.cpu_count() or 2) - 1))


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
        descriptions: Sequence[Sequence[str]] | Mapping[str, Sequence[str]] | object | None = None,
        descriptions_per_class: int = DEFAULT_DESCRIPTIONS,
        allow_fewer_descriptions: bool = False,
        views: int = DEFAULT_VIEWS,
        seed: int = 0,
        config: AWTConfig = AWTConfig(),
        cache_dir: str | os.PathLike | None = "default",
        text_features: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ):
        """``text_features`` (classes, prompts, dim), if given, are used as the class prompts'
        embeddings as they are (no prompts are built or encoded); ``prompt_mask`` marks real ones."""
        if not classnames:
            raise AWTError("no classes given")
        if views < 0:
            raise AWTError("views must be >= 0")
        self.backbone = backbone
        self.classnames = list(classnames)
        self.views = views
        self.seed = seed
        self.config = config
        self.cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
        if text_features is not None:
            if text_features.shape[0] != len(self.classnames):
                raise AWTError(f"text features for {text_features.shape[0]} classes, {len(self.classnames)} names")
            self.prompts = None
            self.text_features = text_features.to(backbone.device, torch.float32)
            self.prompt_mask = None if prompt_mask is None else prompt_mask.to(backbone.device)
            return
        aligned = self._align_descriptions(descriptions)
        self.prompts = build_prompts(self.classnames, template, aligned, descriptions_per_class, allow_fewer_descriptions)
        self.text_features, self.prompt_mask = encode_prompts(backbone, self.prompts, self.cache_dir)

    @classmethod
    def from_pretrained(cls, classnames: Sequence[str], model: str = "ViT-B-32", pretrained: str | None = "openai",
                        device: str | None = None, precision: str = "auto", **kwargs) -> "AWTClassifier":
        """Load a backbone with :func:`awt.create_backbone` and build the classifier on it."""
        return cls(create_backbone(model, pretrained, device, precision), classnames, **kwargs)

    def _align_descriptions(self, descriptions) -> list[list[str]] | None:
        if descriptions is None:
            return None
        if hasattr(descriptions, "for_classes"):
            return descriptions.for_classes(self.classnames)
        if isinstance(descriptions, Mapping):
            missing = [n for n in self.classnames if n not in descriptions]
            if missing:
                raise AWTError(f"no descriptions for {len(missing)} class(es): {', '.join(map(repr, missing[:5]))}")
            return [list(descriptions[n]) for n in self.classnames]
        return [list(d) for d in descriptions]

    @property
    def logit_scale(self) -> float:
        return self.backbone.logit_scale

    # -- images -----------------------------------------------------------------------------------

    def iter_image_features(
        self, images: Sequence[ImageInput], batch_size: int = 8, num_workers: int | None = None, views: int | None = None
    ) -> Iterator[FeatureBatch]:
        """Encode all views of ``images``, batch by batch, decoding in worker processes meanwhile.

        ``views`` overrides the number of random views (0: view 0 only, for the baselines). With
        workers, each decodes and packs a quarter batch, and quarters are encoded as they come (an
        encoder's throughput hardly depends on the batch size, and the device starts sooner); the
        first ones are smaller still (1, 2, 4, ... images).
        """
        bb = self.backbone
        views = self.views if views is None else views
        if num_workers is None:
            num_workers = default_workers(len(images), batch_size)
        loader_batch = max(1, batch_size // 4) if num_workers > 0 else batch_size
        batches = bb.view_loader(num_workers)(images, views, self.seed, loader_batch)
        for batch in to_device(batches, bb.device):
            host = batch.host
            if not host.indices:
                yield FeatureBatch([], torch.empty(0, views + 1, 0), host.errors)
                continue
            pixels = batch.view0.to(bb.device).unsqueeze(1)
            if batch.packed is not None:
                crops = cut_views(batch.packed, bb.image_size, bb.mean, bb.std, bb.device, bb.input_dtype)
                pixels = torch.cat([pixels.to(crops.dtype), crops], dim=1)
            n, v = pixels.shape[:2]
            features = bb.encode_images(pixels.flatten(0, 1)).view(n, v, -1)
            yield FeatureBatch(host.indices, features, host.errors)

    # -- scores -----------------------------------------------------------------------------------

    def scores(self, image_features: torch.Tensor, method: str = "awt") -> torch.Tensor:
        """(batch, views, dim) image features -> (batch, classes) scores of ``method``."""
        img = image_features.to(self.text_features.device)
        txt, mask, s = self.text_features, self.prompt_mask, self.logit_scale
        if method == "awt":
            return awt_scores_from_features(img, txt, s, self.config, prompt_mask=mask)
        if method == "awt-uniform":
            return awt_scores_from_features(img, txt, s, replace(self.config, uniform_weights=True), prompt_mask=mask)
        if method == "awt-image":
            return awt_scores_from_features(img, txt[:, :1], s, self.config)
        if method == "awt-text":
            return awt_scores_from_features(img[:, :1], txt, s, self.config, prompt_mask=mask)
        if method == "clip":
            return clip_scores(img, txt, s)
        if method == "ensemble":
            return ensemble_scores(img, txt, s, mask)
        raise AWTError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")

    def predict(self, image_features: torch.Tensor, top_k: int = 5, method: str = "awt") -> list[list[Prediction]]:
        """Ranked predictions, best first, for each image of (batch, views, dim) features."""
        values, indices = self._top_k(image_features, top_k, method)
        if self.text_features.is_cuda:
            torch.cuda.current_stream(self.text_features.device).synchronize()
        return self._predictions(values, indices)

    def _top_k(self, image_features: torch.Tensor, top_k: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, k) best scores and their class indices; from a GPU, on their way to pinned host
        memory (read them after the current stream's work is done)."""
        scores = self.scores(image_features, method)
        values, indices = scores.topk(max(1, min(top_k, scores.shape[1])), dim=1)
        return values.to("cpu", non_blocking=True), indices.to("cpu", non_blocking=True)

    def _predictions(self, values: torch.Tensor, indices: torch.Tensor) -> list[list[Prediction]]:
        return [[Prediction(i, self.classnames[i], float(v)) for i, v in zip(idx, val)]
                for idx, val in zip(indices.tolist(), values.tolist())]

    def classify(
        self, images: Sequence[ImageInput], top_k: int = 5, method: str = "awt", batch_size: int = 8,
        num_workers: int | None = None,
    ) -> list[ImageResult]:
        """Classify images (paths or PIL images); unreadable ones get an ``error`` instead of predictions.

        Images are scored ``batch_size`` at a time (the scorer's cost per image falls with the
        batch). On a GPU a batch is scored on a side stream once the next images' encoding is
        queued, and its top-k is read back later: the scorer's convergence checks then wait for the
        scorer alone, and the device never idles while the host waits.
        """
        if method not in METHODS:
            raise AWTError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        results = [ImageResult(_describe_input(x)) for x in images]
        views = 0 if method in VIEW0_METHODS else None
        device = self.text_features.device
        # High priority: the scorer's small kernels go ahead of queued encoder blocks, so the host,
        # waiting on its convergence checks, is back before the encoder's queue runs dry.
        side = torch.cuda.Stream(device, priority=-1) if device.type == "cuda" else None
        pending: list[FeatureBatch] = []        # encoded, not yet a whole batch
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
                indices, values, classes, copied = in_flight.pop(0)
                if copied is not None:
                    copied.synchronize()
                for index, preds in zip(indices, self._predictions(values, classes)):
                    results[index].predictions = preds

        def close_batch() -> None:
            ready.append((pending[:], _record_event(device)))
            pending.clear()

        for batch in self.iter_image_features(images, batch_size, num_workers, views):
            for index, reason in batch.errors:
                results[index].error = reason
            while ready:  # this batch's encoding is queued by now: score the one before behind it
                launch()
                collect(keep=1)
            if batch.indices:
                pending.append(batch)
                if sum(len(fb.indices) for fb in pending) >= batch_size:
                    close_batch()
        if pending:
            close_batch()
        while ready:
            launch()
        collect(keep=0)
        return results


def _record_event(device: torch.device) -> torch.cuda.Event | None:
    """An event on ``device``'s current stream (CUDA), else None."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event
