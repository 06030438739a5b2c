"""Jacobian-rank LID of decoders with known rank: low-rank linear maps and ReLU networks."""

import pytest
import torch

from lidmem.estimators import JacobianRank, jacobian_rank
from lidmem.estimators.jacobian import jacobian_singular_values


@pytest.mark.parametrize("r", [1, 3, 5])
def test_low_rank_linear_map(r):
    g = torch.Generator().manual_seed(r)
    W = torch.randn(12, r, generator=g) @ torch.randn(r, 6, generator=g)  # R^6 -> R^12, rank r
    z = torch.randn(20, 6, generator=g)
    lid, sv = jacobian_rank(lambda v: v @ W.T, z, return_singular_values=True)
    assert lid.dtype == torch.int64 and lid.tolist() == [r] * 20
    assert sv.shape == (20, 6)
    torch.testing.assert_close(sv[0], torch.linalg.svdvals(W.double()), rtol=1e-5, atol=1e-5)
    assert jacobian_rank(lambda v: v @ W.T, z, threshold=1e-3).tolist() == [r] * 20


def test_relu_generator_rank_is_number_of_active_units():
    """G(z) = A relu(B z + c) has Jacobian A diag(active) B: rank = number of active hidden units."""
    g = torch.Generator().manual_seed(0)
    A, B, c = torch.randn(30, 4, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, generator=g)

    def G(z):
        return torch.relu(z @ B.T + c) @ A.T

    z = torch.randn(200, 8, generator=g)
    true = ((z @ B.T + c) > 0).sum(1)
    assert set(true.tolist()) >= {1, 2, 3, 4}
    for mode in ("forward", "reverse"):
        assert torch.equal(jacobian_rank(G, z, mode=mode, batch_size=64), true)


def test_image_generator_latent_larger_than_output_and_class():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(2 * 2, 3, generator=g) @ torch.randn(3, 10, generator=g)  # R^10 -> 1x2x2 images, rank 3

    def G(z):
        return (z @ W.T).reshape(len(z), 1, 2, 2)

    z = torch.randn(9, 10, generator=g)
    est = JacobianRank(G)
    assert est.estimate(z).tolist() == [3] * 9  # jacrev branch (latent 10 > output 4)
    assert est.singular_values_.shape == (9, 4) and est.threshold_ >= 0
    assert jacobian_singular_values(G, z).shape == (9, 4)


def test_bad_inputs():
    with pytest.raises(TypeError, match="generator"):
        jacobian_rank(3, torch.randn(2, 2))
    with pytest.raises(ValueError, match="z"):
        jacobian_rank(lambda v: v, torch.randn(0, 2))
    with pytest.raises(ValueError, match="z contains NaN"):
        jacobian_rank(lambda v: v, torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="threshold"):
        jacobian_rank(lambda v: v, torch.randn(2, 2), threshold=-1.0)
    with pytest.raises(ValueError, match="mode"):
        jacobian_rank(lambda v: v, torch.randn(2, 2), mode="sideways")
