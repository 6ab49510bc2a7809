"""Benchmark sweeps: backbones x datasets x methods from one YAML config, one comparable table out.

``awt bench CONFIG.yaml --output DIR`` (see ``benchmarks/README.md``); in Python::

    from awt.bench import load_config, run_bench
    result = run_bench(load_config("benchmarks/configs/smoke.yaml"), "runs/smoke")
"""

from .datasets import LabeledImages, read_dataset, stratified_subset
from .features import FeatureSet, compute_features
from .runner import (
    BenchConfig, BenchResult, compute_metrics, load_config, mean_per_class_recall, plan_runs, run_bench,
    top_k_accuracy,
)

__all__ = [
    "BenchConfig", "BenchResult", "FeatureSet", "LabeledImages", "compute_features", "compute_metrics",
    "load_config", "mean_per_class_recall", "plan_runs", "read_dataset", "run_bench", "stratified_subset",
    "top_k_accuracy",
]
