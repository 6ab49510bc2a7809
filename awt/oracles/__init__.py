"""Oracles: each method written literally, one image (or video) at a time, as its paper and its
authors' code state it — slow on purpose, never on a hot path. The batched implementations are
tested against them (``tests/``), and ``benchmarks/throughput.py`` times against them.

- :mod:`~awt.oracles.awt`: AWT's weights, Sinkhorn and score per image (the paper's loop);
- :mod:`~awt.oracles.rivals`: ZERO, MTA, DCLIP/WaffleCLIP, AutoCLIP, CLIP's templates per image;
- :mod:`~awt.oracles.video`: Open-VCLIP's test-time frame and crop sampling per view.
"""
