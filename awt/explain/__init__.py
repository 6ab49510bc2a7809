"""See why: which views and which descriptions decided an image's classes, and the transport plan
between them (:func:`explain`), as a self-contained HTML report (:func:`render_report`) or a figure
(:func:`save_figure`, matplotlib)."""

from .compute import ClassExplanation, Decision, Explanation, Pair, View, check_explainable, explain

__all__ = ["ClassExplanation", "Decision", "Explanation", "Pair", "View", "check_explainable", "explain"]
