"""Accuracy metrics of a benchmark run: top-1, top-5 and mean per-class recall, in percent.

A metric is a number only when it measures something: no images, or a score that is not finite
(NaN ranks arbitrarily), is a ValueError, never a ``nan`` or a chance-level figure in a table.
"""

from __future__ import annotations

import torch


def _check(scores: torch.Tensor | None, labels: torch.Tensor) -> None:
    if len(labels) == 0:
        raise ValueError("no images to measure")
    if scores is not None and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{int((~torch.isfinite(scores)).any(1).sum())} of {len(scores)} images have scores that are "
                         "not finite (NaN or inf)")


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of rows whose label is among their ``k`` best scores (all classes when fewer than ``k``)."""
    _check(scores, labels)
    k = max(1, min(k, scores.shape[1]))
    top = scores.topk(k, dim=1).indices
    return 100.0 * float((top == labels.view(-1, 1).to(top.device)).any(1).float().mean())


def mean_per_class_recall(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the share of their images predicted right (%)."""
    _check(None, labels)
    labels = labels.to(predicted.device)
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in labels.unique().tolist()]
    return 100.0 * sum(recalls) / len(recalls)


def metrics_from_topk(top: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1, top-5 and mean per-class recall (%) from each image's ranked (up to 5) class indices
    (of finite scores: the caller checks them, see :func:`compute_metrics`)."""
    _check(None, labels)
    labels = labels.view(-1, 1).to(top.device)
    return {
        "top1": 100.0 * float((top[:, :1] == labels).any(1).float().mean()),
        "top5": 100.0 * float((top[:, :5] == labels).any(1).float().mean()),
        "mean_per_class_recall": mean_per_class_recall(top[:, 0], labels.flatten()),
    }


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of a (images, classes) score matrix against integer labels."""
    _check(scores, labels)
    k = min(5, scores.shape[1])
    return metrics_from_topk(scores.topk(k, dim=1).indices, labels)
