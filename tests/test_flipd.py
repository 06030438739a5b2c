"""FLIPD against analytic ground truth: Gaussian mixtures on subspaces and dense Jacobians."""

import pytest
import torch
from torch import nn

from lidmem import ScoreModel, VESDE, VPSDE
from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.estimators import FLIPD, flipd, flipd_curve, select_t0

T0 = 3e-3  # small t0 at which the exact oracle's FLIPD is within 0.01 of the true LID


@pytest.fixture(scope="module")
def mixture():
    gm = GaussianMixtureOnSubspaces(dims=[0, 2, 5, 8], ambient_dim=20, seed=0, sde=VPSDE())
    x, lid, comp = gm.sample(800, seed=1)
    return gm, x, lid, comp


def test_exact_trace_recovers_true_lid(mixture):
    gm, x, lid, _ = mixture
    est = flipd(gm, x, T0, trace="exact", progress=False)
    assert est.shape == (800,) and est.dtype == torch.float32
    assert float(((est - lid).abs() < 0.5).float().mean()) >= 0.95
    # and it equals the mixture's closed-form FLIPD (divergence computed analytically)
    torch.testing.assert_close(est.double(), gm.true_flipd(x, T0), atol=1e-3, rtol=0)


def test_hutchinson_one_probe_is_unbiased_per_component(mixture):
    gm, x, lid, comp = mixture
    est = flipd(gm, x, T0, trace="hutchinson", n_probes=1, probe="rademacher", seed=0, progress=False)
    for k, dk in enumerate(gm.dims):
        sel = comp == k
        assert int(sel.sum()) >= 180
        assert abs(float(est[sel].mean()) - dk) < 0.5, (dk, float(est[sel].mean()))
    # Gaussian probes have a larger variance (e.g. 2 (D - d) for the point mass): 4 standard errors
    est = flipd(gm, x, T0, trace="hutchinson", n_probes=1, probe="gaussian", seed=0, progress=False)
    for k, dk in enumerate(gm.dims):
        sel = comp == k
        err = 4 * float(est[sel].std()) / float(sel.sum()) ** 0.5
        assert abs(float(est[sel].mean()) - dk) < max(0.5, err), (dk, float(est[sel].mean()), err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rademacher_probes_are_randints_bits(dtype):
    """The fast CPU draw of the probes gives exactly torch.randint(0, 2)'s +-1 values and leaves the
    generator where randint leaves it, so seeded Hutchinson results did not move with it."""
    from lidmem.estimators.flipd import _draw_probes

    for shape in [(512, 1, 784), (3, 2, 1, 5, 5), (1, 1, 1)]:
        g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        fast = _draw_probes(shape, "rademacher", g1, dtype, torch.device("cpu"))
        ref = torch.randint(0, 2, shape, generator=g2, dtype=dtype).mul_(2).sub_(1)
        assert fast.dtype == dtype and fast.shape == shape
        assert torch.equal(fast, ref)
        assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    # and they are +-1 with equal frequency
    v = _draw_probes((200, 1, 500), "rademacher", torch.Generator().manual_seed(0), dtype, torch.device("cpu"))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(v.float().mean())) < 0.01


def test_all_finite_fast_path_agrees_with_isfinite():
    from lidmem._validation import all_finite

    x = torch.randn(64, 50)
    assert all_finite(x) and all_finite(torch.empty(0, 3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[17, 3] = bad
        assert not all_finite(y)
    # finite values whose sum overflows: the element-wise check decides
    big = torch.full((4,), 3e38)
    assert float(big.sum()) == float("inf") and all_finite(big)
    assert all_finite(torch.full((8,), 60000.0, dtype=torch.float16))


def test_ve_points_far_from_origin():
    gm = GaussianMixtureOnSubspaces(dims=[1, 4], ambient_dim=10, offset_scale=50.0, seed=2, sde=VESDE())
    x, lid, _ = gm.sample(100, seed=0)
    est = flipd(gm, x, 0.01, progress=False)
    assert float(((est - lid).abs() < 0.5).float().mean()) >= 0.95


class _MLP(nn.Module):
    def __init__(self, d=6):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, 32), nn.Tanh(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, d))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def _dense_flipd(model, x, t0):
    sde = model.sde
    psi, sig2 = float(sde.psi(torch.tensor(t0))), float(sde.sigma(torch.tensor(t0))) ** 2
    out = []
    for xi in psi * x:
        f = lambda v: model(v[None], torch.tensor([t0]))[0]  # noqa: E731
        J = torch.func.jacrev(f)(xi)
        s = f(xi)
        out.append(x.shape[1] + sig2 * (torch.trace(J) + (s**2).sum()))
    return torch.stack(out).detach()


@pytest.fixture(scope="module")
def mlp_model():
    torch.manual_seed(0)
    return ScoreModel(_MLP(6).double().eval(), VPSDE(), prediction="epsilon")


def test_exact_trace_equals_dense_jacobian(mlp_model):
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _dense_flipd(mlp_model, x, 0.05)
    torch.testing.assert_close(flipd(mlp_model, x, 0.05, progress=False), ref, rtol=1e-10, atol=1e-9)
    # chunking does not change the result
    torch.testing.assert_close(flipd(mlp_model, x, 0.05, batch_size=2, progress=False), ref, rtol=1e-10, atol=1e-9)
    # reverse mode (v^T J^T v) gives the same numbers, exact and Hutchinson
    torch.testing.assert_close(flipd(mlp_model, x, 0.05, ad="reverse", progress=False), ref, rtol=1e-10, atol=1e-9)
    fw = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=3, seed=4, progress=False)
    rv = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=3, seed=4, ad="reverse", progress=False)
    torch.testing.assert_close(fw, rv, rtol=1e-10, atol=1e-9)


def test_hutchinson_converges_and_is_deterministic(mlp_model):
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _dense_flipd(mlp_model, x, 0.05)
    many = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=4000, probe="gaussian", seed=1, progress=False)
    few = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=2, seed=1, progress=False)
    # standard error of 4000 Gaussian probes of a 6x6 Jacobian, scaled by sigma^2, is well below 0.05
    torch.testing.assert_close(many, ref, atol=0.05, rtol=0)
    assert float((few - ref).abs().max()) > 1e-6  # two probes are not exact ...
    again = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=2, seed=1, progress=False)
    assert torch.equal(few, again)  # ... but reproducible under a seed
    other = flipd(mlp_model, x, 0.05, trace="hutchinson", n_probes=2, seed=2, progress=False)
    assert not torch.equal(few, other)


def test_image_shaped_input_and_curve(mlp_model):
    class ImgNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp_model.net

        def forward(self, x, t):
            return self.inner(x.reshape(len(x), -1), t).reshape(x.shape)

    img_model = ScoreModel(ImgNet(), VPSDE(), prediction="epsilon")
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    flat = flipd(mlp_model, x, 0.1, progress=False)
    torch.testing.assert_close(flipd(img_model, x.reshape(4, 1, 2, 3), 0.1, progress=False), flat)
    curve = flipd_curve(mlp_model, x, [0.1, 0.3], progress=False)
    assert curve.shape == (4, 2)
    torch.testing.assert_close(curve[:, 0], flat)
    torch.testing.assert_close(curve[:, 1], flipd(mlp_model, x, 0.3, progress=False))
    # Hutchinson probes are shared across t0 in a curve: same values as separate calls with one seed
    hc = flipd_curve(mlp_model, x, [0.1, 0.3], trace="hutchinson", seed=5, progress=False)
    torch.testing.assert_close(hc[:, 1], flipd(mlp_model, x, 0.3, trace="hutchinson", seed=5, progress=False))


def test_select_t0_knee():
    t0s = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
    # learned-model shape: falls from ~D at tiny t0 into a plateau at the LID from t0=3e-2 on
    learned = torch.tensor([[18.0, 12.0, 6.0, 3.1, 3.0, 2.7, 0.5]])
    assert select_t0(learned, t0s) == 3e-2
    # exact-score shape (plateau first, no convex knee): the smallest t0
    gm = GaussianMixtureOnSubspaces(dims=[2, 5], ambient_dim=10, seed=0)
    x, _, _ = gm.sample(50, seed=0)
    curve = flipd_curve(gm, x, t0s, progress=False)
    assert curve.shape == (50, 7)
    assert select_t0(curve, t0s) == 1e-3
    # plateau, then the large-t decay to ~0 that every curve has: its knee (at the floor) is not the
    # LID's; with the SDE, times with sigma/psi > 1 are ignored and the plateau's start is kept
    grid = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    decay = torch.tensor([6.0, 6.0, 6.0, 6.0, 5.96, 5.8, 1.5, 0.1, 0.05, 0.05])
    assert select_t0(decay, grid) == 0.6
    assert select_t0(decay, grid, sde=VPSDE()) == 1e-3
    est = FLIPD(gm, t0="knee", t0_grid=t0s, progress=False)
    out = est.estimate(x)
    assert est.t0_ == 1e-3 and torch.equal(out, curve[:, 0])
    # "auto" is the training-data rule (as in the audit): fit() first, then the same numbers as flipd
    auto = FLIPD(gm, t0="auto", progress=False)
    with pytest.raises(ValueError, match="fit"):
        auto.estimate(x)
    from lidmem.estimators.t0 import t0_from_training_data

    auto.fit(x)
    assert auto.t0_ == t0_from_training_data(gm.sde, x)
    assert torch.equal(auto.estimate(x), flipd(gm, x, auto.t0_, progress=False))


def test_negative_flipd_is_reported_as_is():
    """A score whose Jacobian is -2 I / sigma^2 (twice the point mass's) gives FLIPD = -d, unclipped."""

    class Overcontracting:
        sde = VPSDE()

        def __call__(self, x, t):
            return -2.0 * x / self.sde.sigma(t)[:, None] ** 2

    x = torch.zeros(3, 4)
    val = flipd(Overcontracting(), x, 0.5, progress=False)
    # tr grad s = -2 d / sigma^2 and s = 0 at x = 0: FLIPD = d - 2 d = -d
    torch.testing.assert_close(val, torch.full((3,), -4.0), atol=1e-5, rtol=0)


def test_bad_inputs(mixture):
    gm, x, _, _ = mixture
    with pytest.raises(ValueError, match="t0"):
        flipd(gm, x, 0.0)
    with pytest.raises(ValueError, match="t0"):
        flipd(gm, x, 1.5)
    with pytest.raises(ValueError, match="x"):
        flipd(gm, x[:0])
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        flipd(gm, bad)
    with pytest.raises(ValueError, match="x must be batch-first"):
        flipd(gm, x[0])
    with pytest.raises(ValueError, match="n_probes"):
        flipd(gm, x, trace="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="trace"):
        flipd(gm, x, trace="approx")
    with pytest.raises(ValueError, match="probe"):
        flipd(gm, x, trace="hutchinson", probe="uniform")
    with pytest.raises(ValueError, match="ad"):
        flipd(gm, x, ad="sideways")
    with pytest.raises(ValueError, match="batch_size"):
        flipd(gm, x, batch_size=0)
    with pytest.raises(TypeError, match="sde"):
        flipd(lambda a, t: a, x)
    with pytest.raises(ValueError, match="x must have shape"):
        flipd(gm, torch.zeros(4, 7))
    with pytest.raises(ValueError, match="t0s"):
        flipd_curve(gm, x, [])


def test_attention_unet_forward_mode():
    """Forward-mode AD through a diffusers UNet with attention + GroupNorm (CPU): FLIPD with the exact
    trace equals d + sigma^2 (tr J + ||s||^2) from a dense reverse-mode Jacobian."""
    pytest.importorskip("diffusers")
    from lidmem.diffusion.unet import UNetScoreNet

    torch.manual_seed(0)
    net = UNetScoreNet(4, in_channels=1, block_out_channels=(8, 16), norm_num_groups=4, attention=True).eval()
    model = ScoreModel(net, VPSDE(), prediction="epsilon")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    est = flipd(model, x, 0.1, progress=False)
    sde = model.sde
    psi, sig2 = float(sde.psi(torch.tensor(0.1))), float(sde.sigma(torch.tensor(0.1))) ** 2
    for i in range(2):
        xi = psi * x[i : i + 1]
        J = torch.autograd.functional.jacobian(lambda v: model(v, torch.tensor([0.1])), xi).reshape(16, 16)
        s = model(xi, torch.tensor([0.1])).detach()
        ref = 16 + sig2 * (torch.trace(J) + (s**2).sum())
        assert abs(float(est[i]) - float(ref)) < 1e-3 * max(1.0, abs(float(ref)))
    torch.testing.assert_close(flipd(model, x, 0.1, ad="reverse", progress=False), est, rtol=1e-4, atol=1e-3)


class _TwoOracles:
    """A conditional score model: the score of oracle ``a`` or ``b`` picked per row by ``which``."""

    def __init__(self, a, b):
        self.a, self.b, self.sde = a, b, a.sde

    def __call__(self, x, t, *, which, scale=1.0):
        pick = which.reshape(-1, *([1] * (x.ndim - 1))).bool()
        return scale * torch.where(pick, self.b(x, t), self.a(x, t))


def test_conditioning_follows_each_point_through_chunks_and_probes():
    """extra_args with a per-point tensor (first dimension n) is chunked with x and repeated per
    basis vector / probe; other values are passed unchanged."""
    from lidmem.estimators import NormalBundle, flipd_at, normal_bundle

    a = GaussianMixtureOnSubspaces(dims=[1], ambient_dim=6, seed=0, sde=VPSDE())
    b = GaussianMixtureOnSubspaces(dims=[4], ambient_dim=6, seed=0, sde=VPSDE())
    model = _TwoOracles(a, b)
    xa, _, _ = a.sample(5, seed=1)
    xb, _, _ = b.sample(5, seed=2)
    x = torch.cat([xa, xb])[torch.tensor([0, 5, 1, 6, 7, 2, 3, 8, 9, 4])]
    which = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])
    truth = torch.where(which.bool(), b.true_flipd(x, T0), a.true_flipd(x, T0))
    assert set(truth.round().long().tolist()) == {1, 4}
    for ad in ("forward", "reverse"):
        est = flipd(model, x, T0, extra_args={"which": which}, batch_size=3, ad=ad)
        torch.testing.assert_close(est.double(), truth, atol=1e-3, rtol=0)
    # Hutchinson: the same probes as each oracle alone (rows keep their order and their seed)
    hutch = flipd(model, x, 0.05, trace="hutchinson", n_probes=3, extra_args={"which": which}, batch_size=4)
    alone = torch.where(which.bool(), flipd(b, x, 0.05, trace="hutchinson", n_probes=3, batch_size=4), flipd(a, x, 0.05, trace="hutchinson", n_probes=3, batch_size=4))
    torch.testing.assert_close(hutch, alone)
    psi = float(VPSDE().psi(torch.tensor(T0)))
    torch.testing.assert_close(flipd_at(model, psi * x, T0, extra_args={"which": which}), est)
    # a shared (non per-point) value reaches every call unchanged: scale 2 doubles the score
    doubled = flipd(model, x[:1], T0, extra_args={"which": which[:1], "scale": 2.0})
    s = a(psi * x[:1], T0)
    d = 6
    tr = (truth[0] - d) / float(VPSDE().sigma(torch.tensor(T0))) ** 2 - (s.double() ** 2).sum()
    expected = d + float(VPSDE().sigma(torch.tensor(T0))) ** 2 * (2 * tr + 4 * (s.double() ** 2).sum())
    torch.testing.assert_close(doubled.double(), expected.reshape(1), atol=1e-2, rtol=1e-4)
    # the normal bundle repeats the per-point conditioning for its k noisy copies
    nb = normal_bundle(model, x, 0.01, extra_args={"which": which}, batch_size=3)
    assert nb.tolist() == [4 if w else 1 for w in which.tolist()]
    assert NormalBundle(model, extra_args={"which": which}).estimate(x).shape == (10,)
    assert FLIPD(model, t0=T0, extra_args={"which": which}).estimate(x).shape == (10,)
    with pytest.raises(TypeError, match="extra_args"):
        flipd(model, x, T0, extra_args=[which])
