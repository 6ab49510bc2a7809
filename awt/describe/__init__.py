"""LLM-written class descriptions (AWT's two-step prompting), cached on disk.

:mod:`~awt.describe.generate` holds the two steps, :mod:`~awt.describe.cache` the resumable cache,
:mod:`~awt.describe.run` a whole run; the command is ``awt describe`` (:mod:`awt.cli.describe`).
"""

from awt.describe.generate import DescribeReport, DescribeSettings
from awt.describe.run import run_describe

__all__ = ["DescribeReport", "DescribeSettings", "run_describe"]
