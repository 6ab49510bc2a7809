"""LLM-written class descriptions (AWT's two-step prompting), written to a file with their provenance.

:mod:`~awt.describe.generate` holds the two steps, :mod:`~awt.describe.output` the resumable output file,
:mod:`~awt.describe.run` a whole run; the command is ``awt describe`` (:mod:`awt.cli.describe`).
"""

from awt.describe.generate import DescribeReport, DescribeSettings
from awt.describe.run import run_describe

__all__ = ["DescribeReport", "DescribeSettings", "run_describe"]
