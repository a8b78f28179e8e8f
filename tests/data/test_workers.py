"""DataLoader workers: none when the network trains on the CPU, one per spare core (up to 8) on a GPU."""

from __future__ import annotations

import os

import pytest

from emseg.data import loader_workers
from emseg.data.workers import MAX_WORKERS


def test_auto_is_none_on_the_cpu_and_spare_cores_on_a_gpu():
    assert loader_workers("auto", "cpu") == 0
    assert loader_workers("auto", "cuda") == max(0, min(MAX_WORKERS, len(os.sched_getaffinity(0)) - 1))


def test_a_number_is_kept_and_nonsense_refused():
    assert loader_workers(3, "cpu") == 3
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ValueError, match="num_workers must be a whole number >= 0 or \"auto\""):
            loader_workers(bad, "cpu")
