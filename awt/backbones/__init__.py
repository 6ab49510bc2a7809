"""Dual encoders: the interface the engine needs (:mod:`~awt.backbones.base`), the factory that
loads one by name (:mod:`~awt.backbones.factory`, names in :mod:`~awt.backbones.names`), and a
module per library: :mod:`~awt.backbones.openclip` (the default) and :mod:`~awt.backbones.hf`
(``hf:``, transformers)."""

from .base import Backbone, weights_fingerprint
from .factory import create_backbone, register_loader, resolve_device, resolve_precision
from .names import NO_WEIGHTS, resolve_model

__all__ = ["Backbone", "NO_WEIGHTS", "create_backbone", "register_loader", "resolve_device", "resolve_model",
           "resolve_precision", "weights_fingerprint"]
