"""awt: training-free zero-shot classification with AWT over dual-encoder vision-language models.

>>> import awt
>>> clf = awt.AWTClassifier.from_pretrained(["cat", "dog"], model="ViT-B-32", pretrained="openai")
>>> clf.classify(["photo.jpg"])[0].predictions[0].name
>>> clf.classify(["clip.mp4"])[0].predictions[0].name      # videos too: 8 frames x 3 crops x 4 clips

Names are imported lazily, so ``import awt`` (and ``awt describe``) does not pay for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AWTClassifier": "classifier", "ImageResult": "classifier", "Prediction": "classifier",
    "create_classifier": "classifier", "ClassifierSpec": "spec",
    "METHODS": "methods", "Method": "methods", "register_method": "methods", "get_method": "methods",
    "score": "methods",
    "Backbone": "backbones", "create_backbone": "backbones", "register_loader": "backbones",
    "resolve_device": "backbones",
    "AWTError": "errors", "DescriptionsError": "errors",
    "encode_views": "views", "ViewFeatures": "views", "Decoding": "images",
    "encode_inputs": "inputs", "find_inputs": "inputs", "encode_videos": "video_views",
    "VideoSampling": "video_sampling",
    "build_prompts": "prompt_sets", "PromptSet": "prompt_sets", "encode_prompts": "prompts", "encode_classes": "prompts",
    "ClassPrompts": "prompts",
    "read_class_file": "classes",
    "AWTConfig": "scoring", "awt_scores": "scoring", "awt_scores_from_features": "scoring",
    "clip_scores": "scoring", "ensemble_scores": "scoring",
    "sinkhorn": "transport",
    "load_descriptions": "descriptions", "save_descriptions": "descriptions", "DescriptionSet": "descriptions",
}
__all__ = ["__version__", *_EXPORTS]


_RENAMED = {"register_method": "register"}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, _RENAMED.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'awt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
