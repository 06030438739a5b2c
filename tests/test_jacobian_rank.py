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
    assert est.singular_values_.shape == (9, 4) and est.threshold_ is None  # "gap": no global tau
    assert JacobianRank(G, threshold="percentile").estimate(z).shape == (9,)
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


# ----------------------------------------------------------------------------------------------
# decoders of known rank (issue 13): the default "gap" rule is exact, the paper's percentile is not
# ----------------------------------------------------------------------------------------------
def _orthonormal(rows, cols, g):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q.float()


def _decoders():
    """(name, G, latent dim, true rank) with spectra that the percentile rule gets wrong."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(16, 5, generator=g)  # injective R^5 -> R^16 (full column rank 5 a.s.)
    s = torch.logspace(0, -3, 8)  # full-rank R^8 -> R^16 with singular values 1 .. 1e-3
    U, V = _orthonormal(16, 8, g), _orthonormal(8, 8, g)
    M = U @ torch.diag(s) @ V.T
    B, C = torch.randn(16, 2, generator=g), torch.randn(2, 5, generator=g)  # rank 2 < 5 (rank-deficient)
    return [
        ("injective linear R^5->R^16", lambda z: z @ A.T, 5, 5),
        ("injective nonlinear R^5->R^16", lambda z: torch.tanh(0.5 * z @ A.T) + 0.1 * (z @ A.T) ** 2, 5, 5),
        ("full-rank R^8->R^16, s = 1..1e-3", lambda z: (z + 0.1 * torch.tanh(z)) @ M.T, 8, 8),
        ("rank-2 nonlinear R^5->R^16", lambda z: torch.tanh(0.3 * z @ C.T) @ B.T, 5, 2),
    ]


@pytest.mark.parametrize("case", range(4), ids=[c[0] for c in _decoders()])
def test_default_gap_rule_is_exact_on_decoders_of_known_rank(case):
    _, G, dz, rank = _decoders()[case]
    z = torch.randn(500, dz, generator=torch.Generator().manual_seed(1))
    lid, sv = jacobian_rank(G, z, return_singular_values=True)
    assert lid.tolist() == [rank] * 500
    # ground truth: torch.linalg.matrix_rank of each Jacobian (float32 tolerance) agrees
    J = torch.func.vmap(torch.func.jacfwd(lambda v: G(v[None])[0]))(z[:50])
    assert torch.linalg.matrix_rank(J).tolist() == [rank] * 50
    # the paper's global 10th percentile drops about a tenth of all singular values of full-rank Jacobians
    pct = jacobian_rank(G, z, "percentile").double()
    if rank == dz:
        assert pct.mean() < rank - 0.3
        assert (pct == rank).double().mean() < 0.8


def test_percentile_rule_scores_collapsed_latents_low_and_gap_rule_does_not():
    """A decoder that is nearly constant on half of latent space (a collapsed, 'memorizing' region):
    the global percentile ranks it low, the per-latent gap still counts its (tiny) directions."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(16, 4, generator=g)

    def G(z):
        scale = torch.where(z[:, :1] > 0, torch.full_like(z[:, :1], 1e-3), torch.ones_like(z[:, :1]))
        return (z * scale) @ A.T

    z = torch.randn(400, 4, generator=g)
    collapsed = z[:, 0] > 0
    pct = jacobian_rank(G, z, "percentile", percentile=50.0)
    assert pct[collapsed].max() < pct[~collapsed].min()
    assert jacobian_rank(G, z).tolist() == [4] * 400
    assert jacobian_rank(G, z, 1e-2)[collapsed].tolist() == [0] * int(collapsed.sum())


def test_constant_generator_has_rank_zero():
    z = torch.randn(5, 3)
    assert jacobian_rank(lambda v: 0.0 * v @ torch.ones(3, 7) + 1.0, z).tolist() == [0] * 5


def test_threshold_forms_are_validated():
    with pytest.raises(ValueError, match="threshold"):
        jacobian_rank(lambda v: v, torch.randn(2, 2), threshold="median")
    with pytest.raises(TypeError, match="threshold"):
        jacobian_rank(lambda v: v, torch.randn(2, 2), threshold=None)
