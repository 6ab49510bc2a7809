"""`awt describe`: LLM-written class descriptions (AWT's two-step prompting), cached on disk.

The command lives in :mod:`awt.describe.command`; the pipeline in :mod:`awt.describe.generate`.
"""

from awt.describe.generate import DescribeReport, DescribeSettings, run_describe

__all__ = ["DescribeReport", "DescribeSettings", "run_describe"]
