"""awt: training-free zero-shot classification with AWT over open_clip dual encoders."""

__version__ = "0.1.0"
