"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models run fastest single-threaded, and the CI
    machine's 2 cores are shared with the test runner itself."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
