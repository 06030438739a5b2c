"""Shared test fixtures."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Run the whole suite on ``LIDMEM_TEST_THREADS`` torch threads (default 1).

    The tests use tiny models, which gain nothing from more threads, and on a shared machine
    torch's default (one thread per core; CI exports OMP_NUM_THREADS=2) made the suite 25x slower
    as soon as one other process was busy (52 min instead of ~2): each parallel kernel waits for
    its slowest thread (benchmarks/threads_under_load.py).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("LIDMEM_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (explicit, for tests that time or compare runs; the
    session fixture already sets 1 unless LIDMEM_TEST_THREADS says otherwise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
