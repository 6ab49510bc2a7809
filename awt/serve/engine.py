"""A batch of uploads into results, on the model's thread, through the library's own stages.

The images of a batch are decoded and their views encoded together
(:func:`awt.views.encode_views`, as ``awt classify`` does); the features are then scored once per
class set and method among them (:meth:`awt.classifier.AWTClassifier.scores`). An image's
features and scores do not depend on the batch it is in (the engine's guarantee), so a served
result equals ``awt classify --json``'s for the same image and settings.
"""

from __future__ import annotations

import io
from typing import Sequence

import torch

from ..backbones import Backbone
from ..classifier import AWTClassifier, ImageResult, Prediction
from ..errors import AWTError
from ..images import Decoding
from ..methods import get_method
from ..views import encode_views
from .batcher import Item
from .class_sets import ClassSet
from .errors import upload_reason

_NOT_FINITE = "its class scores are not finite (NaN or inf): the model's features are broken"


class Engine:
    """The model's side of the server: it alone uses the backbone (from the batcher's thread)."""

    def __init__(self, backbone: Backbone, *, views: int, seed: int, decoding: Decoding, workers: int = 0):
        self.backbone, self.views, self.seed, self.decoding, self.workers = backbone, views, seed, decoding, workers

    def views_for(self, method: str) -> int:
        """Random views encoded for ``method``: items with equal counts share a batch."""
        return get_method(method).views_used(self.views)

    def build(self, class_set: ClassSet) -> ClassSet:
        """Encode a set's prompts (for its spec's method; other methods' on their first use)."""
        if class_set.classifier is None:
            class_set.classifier = AWTClassifier(self.backbone, class_set.spec)
        return class_set

    def run_batch(self, items: Sequence[Item]) -> None:
        """Settle each item's future with its :class:`~awt.classifier.ImageResult` (an unreadable
        image: a result with its ``error`` and ``cause``), or with the AWTError of its class set
        or method."""
        features, rows = self._encode(items)
        groups: dict[tuple[str, str], list[int]] = {}
        for position, item in enumerate(items):
            if position in rows:
                groups.setdefault((item.class_set.id, item.method), []).append(position)
        for (_, method), members in groups.items():
            try:
                clf = self.build(items[members[0]].class_set).classifier
                scores = clf.scores(features[[rows[p] for p in members]], method)
                k = min(max(items[p].top_k for p in members), scores.shape[1])
                values, indices = scores.topk(k, dim=1)
                finite = torch.isfinite(scores).all(1).tolist()
                values, indices = values.tolist(), indices.tolist()
            except AWTError as e:
                for p in members:
                    items[p].future.set_exception(e)
                continue
            for j, p in enumerate(members):
                item = items[p]
                if not finite[j]:
                    item.future.set_exception(AWTError(f"{item.name}: {_NOT_FINITE}", kind="unavailable"))
                    continue
                top = zip(indices[j][:item.top_k], values[j][:item.top_k])
                item.future.set_result(ImageResult(item.name, [Prediction(i, clf.classnames[i], v) for i, v in top]))

    def _encode(self, items: Sequence[Item]) -> tuple[torch.Tensor | None, dict[int, int]]:
        """The views' features of the readable images, (readable, 1 + views, dim), and each one's
        row; the unreadable ones' futures are settled here."""
        parts, rows = [], {}
        stream = encode_views(self.backbone, [it.data for it in items], views=items[0].views, seed=self.seed,
                              batch_size=len(items), num_workers=self.workers, decoding=self.decoding, ramp=False)
        for batch in stream:
            for index, problem in batch.errors:
                items[index].future.set_result(ImageResult(items[index].name, error=upload_reason(problem),
                                                           cause=problem))
            for index in batch.indices:
                rows[index] = len(rows)
            if batch.indices:
                parts.append(batch.features)
        return (torch.cat(parts) if parts else None), rows

    def warm_up(self, class_set: ClassSet, method: str) -> ImageResult:
        """Classify one made-up image, so that the first client does not pay for the first pass."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.linear_gradient("L").convert("RGB").save(buffer, format="PNG")
        item = Item("warm-up.png", buffer.getvalue(), class_set, method, 1, self.views_for(method))
        item.future.set_running_or_notify_cancel()
        self.run_batch([item])
        return item.future.result()
