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



@pytest.fixture(scope="session")
def point_mass_images():
    """Planted memorization with an exact score: three training images duplicated 20x (point masses
    of a Gaussian mixture) and 300 distinct images of its 8-dim component, d = 64, as 1x8x8 images.

    Returns ``(gm, train, samples)``: the mixture (its exact score is the model), the 360 training
    images (the 60 duplicates first) and 52 samples (each point mass 4x = 12 copies, then 40
    held-out points of the component), float32 arrays of shape (n, 1, 8, 8). Read-only.
    """
    from lidmem.data.analytic import GaussianMixtureOnSubspaces

    gm = GaussianMixtureOnSubspaces(dims=[0, 0, 0, 8], ambient_dim=64, weights=[0.1, 0.1, 0.1, 0.7], scales=0.5, offset_scale=0.3, seed=0)
    x, _, comp = gm.sample(2000, seed=1)
    pm = gm.offsets[:3].to(torch.float32)
    train = torch.cat([pm.repeat_interleave(20, 0), x[comp == 3][:300]]).reshape(-1, 1, 8, 8).numpy()
    samples = torch.cat([pm.repeat(4, 1), x[comp == 3][300:340]]).reshape(-1, 1, 8, 8).numpy()
    return gm, train, samples
