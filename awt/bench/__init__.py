"""Benchmark sweeps: backbones x datasets x methods from one YAML config, one comparable table out.

``awt bench CONFIG.yaml --output DIR`` (see ``benchmarks/README.md``); in Python::

    from awt.bench.config import load_config
    from awt.bench.runner import run_bench
    result = run_bench(load_config("benchmarks/configs/smoke.yaml"), "runs/smoke")

Modules, in the order a sweep uses them: :mod:`~awt.bench.config` (the schema and its loader),
:mod:`~awt.bench.plan` (runs and their keys), :mod:`~awt.bench.datasets` and
:mod:`~awt.bench.prepare` (reading data), :mod:`~awt.bench.features` (encoded views on disk),
:mod:`~awt.bench.metrics`, :mod:`~awt.bench.records` (one JSON per run),
:mod:`~awt.bench.runner` (the sweep) and :mod:`~awt.bench.report` (the summary).
"""
