"""See why: which views and which descriptions decided an image's classes, and the transport plan
between them (:func:`explain`), as a self-contained HTML report (:func:`render_report`) or a figure
(:func:`save_figure`, matplotlib)."""

from .compute import ClassExplanation, Decision, Explanation, Pair, View, check_explainable, explain
from .figure import check_figure_support, save_figure
from .report import render_report, write_report

__all__ = ["ClassExplanation", "Decision", "Explanation", "Pair", "View", "check_explainable", "explain",
           "render_report", "write_report", "check_figure_support", "save_figure"]
