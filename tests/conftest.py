"""Shared pytest setup: one torch thread per worker (tiny tensors;
pytest-xdist already uses the cores), and the gloo process groups that the
SyncBatchNorm, distributed and chapter 11 tests run on."""
import pytest
import torch

from normbook.common.distributed import LocalGroup

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def group2():
    """Two processes on loopback, one group per test module."""
    with LocalGroup(2, timeout=30) as group:
        yield group


@pytest.fixture(scope="module")
def group3():
    """Three processes on loopback, one group per test module."""
    with LocalGroup(3, timeout=30) as group:
        yield group
