"""The loader's batches (awt/loading.py); its kept workers are tested with the classifier."""

from __future__ import annotations

from awt.loading import batch_sizes


def test_batch_sizes_ramp_up_then_stay():
    assert batch_sizes(20, 8, ramp=True) == [1, 2, 4, 8, 5]
    assert batch_sizes(2, 8, ramp=True) == [1, 1]
    assert batch_sizes(10, 4, ramp=False) == [4, 4, 2]
    assert batch_sizes(0, 4, ramp=True) == []
