"""awt: training-free zero-shot classification with AWT over open_clip dual encoders.

>>> import awt
>>> clf = awt.AWTClassifier.from_pretrained(["cat", "dog"], model="ViT-B-32", pretrained="openai")
>>> clf.classify(["photo.jpg"])[0].predictions[0].name
"""

__version__ = "0.1.0"

from .backbone import Backbone, create_backbone, resolve_device
from .classifier import METHODS, AWTClassifier, ImageResult, Prediction
from .errors import AWTError, DescriptionsError
from .prompts import build_prompts, encode_prompts, read_class_file
from .scoring import AWTConfig, awt_scores, awt_scores_from_features, clip_scores, ensemble_scores
from .transport import sinkhorn

__all__ = [
    "__version__", "AWTClassifier", "AWTConfig", "AWTError", "Backbone", "DescriptionsError", "ImageResult",
    "METHODS", "Prediction", "awt_scores", "awt_scores_from_features", "build_prompts", "clip_scores",
    "create_backbone", "encode_prompts", "ensemble_scores", "read_class_file", "resolve_device", "sinkhorn",
]
