"""FLIPD's differentiation modes agree: fast forward-mode rules, PyTorch's forward-mode rules and
reverse mode give the same v^T J v (float64, 1e-8) through diffusers UNets with GroupNorm,
self- and cross-attention, LayerNorm and GEGLU; the exact trace equals a dense Jacobian's."""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from lidmem import ScoreModel, VPSDE
from lidmem.estimators import _autodiff, flipd
from lidmem.estimators._autodiff import fast_forward_rules, jvp, resolve_ad, vjp

pytest.importorskip("diffusers")


def _vjv_three_ways(fn, model, x, v):
    """Per-row v^T J v by fast forward mode, stock forward mode and reverse mode."""
    with torch.no_grad():
        out_f, jv_f = jvp(fn, model, x, v)
        out_s, jv_s = jvp(fn, model, x, v, fast=False)
    out_r, vj = vjp(fn, x, v)
    dot = lambda a: (v * a).flatten(1).sum(1)  # noqa: E731
    return (out_f, out_s, out_r), (dot(jv_f), dot(jv_s), dot(vj)), (jv_f, jv_s)


@pytest.fixture(scope="module")
def attention_unet():
    from lidmem.diffusion.unet import UNetScoreNet

    torch.manual_seed(0)
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    net = UNetScoreNet(8, in_channels=2, block_out_channels=(8, 16), norm_num_groups=4, attention=True).double().eval()
    # scaled-dot-product attention in float64 (diffusers' plain AttnProcessor upcasts the softmax
    # of these blocks to float32, which alone makes the modes differ by ~1e-8 relative)
    for m in net.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor2_0())
    return ScoreModel(net, VPSDE(), prediction="epsilon")


def test_modes_agree_per_probe_unet_with_attention(attention_unet):
    model = attention_unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64, generator=g)
    v = torch.randint(0, 2, x.shape, generator=g).double() * 2 - 1
    t = torch.full((6,), 0.05, dtype=torch.float64)
    outs, vjvs, (jf, js) = _vjv_three_ways(lambda a: model(a, t), model, x, v)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-10)  # same primal kernels
    # each probe (row), not only their mean; the values are O(100), so 1e-8 is ~1e-10 relative
    torch.testing.assert_close(vjvs[0], vjvs[2], rtol=0, atol=1e-8)
    torch.testing.assert_close(vjvs[1], vjvs[2], rtol=0, atol=1e-8)
    torch.testing.assert_close(jf, js, rtol=0, atol=1e-8)  # whole tangents too
    assert float(vjvs[2].abs().min()) > 1.0  # a non-trivial Jacobian


def test_flipd_modes_agree_exact_and_hutchinson(attention_unet):
    model = attention_unet
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ex = {ad: flipd(model, x, 0.05, trace="exact", ad=ad, progress=False) for ad in ("auto", "forward", "reverse")}
    torch.testing.assert_close(ex["forward"], ex["reverse"], rtol=0, atol=1e-8)
    torch.testing.assert_close(ex["auto"], ex["reverse"], rtol=0, atol=1e-8)
    # the exact trace equals a dense reverse-mode Jacobian's
    sde = model.sde
    t64 = torch.tensor(0.05, dtype=torch.float64)
    psi, sig2 = float(sde.psi(t64)), float(sde.sigma(t64)) ** 2
    xi = psi * x[:1]
    tt = torch.tensor([0.05], dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda a: model(a, tt), xi).reshape(128, 128)
    s = model(xi, tt).detach()
    torch.testing.assert_close(ex["forward"][0], 128 + sig2 * (torch.trace(J) + (s**2).sum()), rtol=0, atol=1e-8)
    for seed in range(3):  # one probe per call: each probe compared
        h = {ad: flipd(model, x, 0.05, trace="hutchinson", n_probes=1, seed=seed, ad=ad, progress=False) for ad in ("forward", "reverse")}
        torch.testing.assert_close(h["forward"], h["reverse"], rtol=0, atol=1e-8)


def test_modes_agree_text_to_image_unet_with_cfg():
    from lidmem.text2image.testing import tiny_components

    unet = tiny_components(latent=True)["unet"].double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 4, 8, 8, dtype=torch.float64, generator=g)
    v = torch.randint(0, 2, x.shape, generator=g).double() * 2 - 1
    cond = torch.randn(1, 5, 32, dtype=torch.float64, generator=g)
    uncond = torch.randn(1, 5, 32, dtype=torch.float64, generator=g)
    lam = 7.5

    def eps_cfg(a):  # both CFG branches in one batch, both differentiated
        n = a.shape[0]
        emb = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        out_u, out_c = unet(torch.cat([a, a]), torch.full((2 * n,), 500.0, dtype=torch.float64), encoder_hidden_states=emb).sample.chunk(2)
        return out_u + lam * (out_c - out_u)

    _, vjvs, (jf, js) = _vjv_three_ways(eps_cfg, unet, x, v)
    torch.testing.assert_close(vjvs[0], vjvs[2], rtol=0, atol=1e-8)
    torch.testing.assert_close(vjvs[1], vjvs[2], rtol=0, atol=1e-8)
    torch.testing.assert_close(jf, js, rtol=0, atol=1e-8)
    assert float(vjvs[2].abs().max()) > 10.0 and float(jf.abs().max()) > 1.0  # a non-trivial Jacobian


def test_fast_rules_leave_the_model_as_it_was():
    lin = nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.GroupNorm(2, 4), nn.Linear(4, 3))
    x = torch.randn(5, 3)
    before = lin(x)
    with pytest.raises(RuntimeError, match="boom"):
        with fast_forward_rules(lin):
            assert not any("forward" in m.__dict__ for m in lin)  # function-level: nothing swapped
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in lin)
    torch.testing.assert_close(lin(x), before, rtol=0, atol=0)


def test_auto_mode_rule():
    model = ScoreModel(nn.Linear(3, 3), VPSDE(), prediction="epsilon")
    assert resolve_ad("auto", model) == "forward"
    assert resolve_ad("reverse", model) == "reverse"

    class NoForwardMode:  # a callable (not a Module) whose forward-mode JVP fails
        def __call__(self, x, t):
            return x

    def failing():
        raise NotImplementedError("no forward AD")

    with pytest.warns(RuntimeWarning, match="forward-mode AD fails"):
        assert resolve_ad("auto", NoForwardMode(), failing) == "reverse"
    with pytest.warns(RuntimeWarning, match="disagrees with reverse mode"):
        assert resolve_ad("auto", NoForwardMode(), lambda: (False, 1.0, 2.0)) == "reverse"
    ok = NoForwardMode()
    assert resolve_ad("auto", ok, lambda: (True, 1.0, 1.0)) == "forward"
    assert _autodiff._AUTO_CACHE[ok] == "forward"  # cached per model


def test_auto_mode_raises_the_models_own_error_when_both_modes_fail():
    """A model that cannot be called (both modes fail) gets its own error, not a fallback warning;
    one that fails in forward mode only falls back to reverse mode with the warning."""
    x, v = torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)

    class Broken:
        def __call__(self, inp):
            raise TypeError("missing 1 required argument: 'cond'")

    broken = Broken()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TypeError, match="required argument: 'cond'"):
            resolve_ad("auto", broken, lambda: _autodiff.check_forward_mode(broken, x, v))
    assert broken not in _autodiff._AUTO_CACHE

    class ForwardOnlyFails:
        def __call__(self, inp):
            if fwAD.unpack_dual(inp).tangent is not None:
                raise RuntimeError("no forward-mode rule")
            return 2 * inp

    fwd_fails = ForwardOnlyFails()
    with pytest.warns(RuntimeWarning, match="forward-mode AD fails"):
        assert resolve_ad("auto", fwd_fails, lambda: _autodiff.check_forward_mode(fwd_fails, x, v)) == "reverse"


class _ElementwiseNet(nn.Module):
    """Binary ops and ``cat`` with and without tangents on either side, broadcast operands."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.register_buffer("c", torch.linspace(0.5, 2.0, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.c * 3.0  # no tangent
        h = self.lin(x) + emb  # tangent + nothing (broadcast constant)
        h = emb - h  # nothing - tangent
        h = (h * x) / 2.0 + torch.tanh(h) / 1  # both tangents; division by a scalar, by one
        h = 2 * h - x * self.c  # scalar * tangent, tangent * constant
        h = torch.cat([h, emb.expand_as(h)], dim=1)  # tangent and zero tangent
        return torch.add(h[:, :6], h[:, 6:]) / emb.sum()


def test_elementwise_rules_match_stock_rules():
    net = _ElementwiseNet().double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    v = torch.randn(5, 6, dtype=torch.float64, generator=g)
    outs, vjvs, (jf, js) = _vjv_three_ways(net, net, x, v)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(jf, js, rtol=0, atol=1e-12)
    torch.testing.assert_close(vjvs[0], vjvs[2], rtol=0, atol=1e-10)
    # the Jacobian by finite differences (central, float64)
    eps = 1e-6
    fd = (net(x + eps * v) - net(x - eps * v)) / (2 * eps)
    torch.testing.assert_close(jf, fd, rtol=0, atol=1e-6)
    assert float(jf.abs().max()) > 0.1


def test_interpolate_rule_matches_stock_rule():
    import torch.nn.functional as F

    conv = nn.Conv2d(2, 2, 3, padding=1).double().eval()

    def net(x):
        h = F.interpolate(conv(x), scale_factor=2.0, mode="nearest")
        return F.interpolate(h * h, size=(4, 4), mode="bilinear", align_corners=False)  # back to x.shape

    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=g)
    v = torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=g)
    outs, vjvs, (jf, js) = _vjv_three_ways(net, conv, x, v)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(jf, js, rtol=0, atol=1e-12)
    torch.testing.assert_close(vjvs[0], vjvs[2], rtol=0, atol=1e-10)
    assert float(jf.abs().max()) > 0.1


@pytest.mark.parametrize("case", ["self", "cross", "bool_mask", "float_mask", "values_only", "no_batch"])
def test_attention_rule_matches_stock_rule_in_blocks(case, monkeypatch):
    """The attention JVP, formed a block of queries at a time, equals PyTorch's rule (float64)
    with and without masks, for cross-attention (no key/value tangents) and unbatched inputs."""
    import torch.autograd.forward_ad as fwAD
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    shape = (5, 8, 3) if case == "no_batch" else (3, 2, 8, 3)  # (..., L, d)
    q, k, v = (torch.randn(shape, dtype=torch.float64, generator=g) for _ in range(3))
    mask = None
    if case == "bool_mask":
        mask = torch.rand(shape[:-1] + (8,), generator=g) > 0.3
        mask[..., 0] = True  # every query sees one key
    elif case == "float_mask":
        mask = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)  # broadcast over batch and heads
    tangent = {
        "q": case != "values_only",
        "k": case not in ("cross", "values_only"),
        "v": case != "cross",
    }
    tans = {n: torch.randn(shape, dtype=torch.float64, generator=g) if on else torch.zeros(shape, dtype=torch.float64) for n, on in tangent.items()}

    def attn(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask, scale=0.7)

    with _autodiff._math_attention():
        ref_out, ref_tan = torch.func.jvp(attn, (q, k, v), (tans["q"], tans["k"], tans["v"]))
    # blocks of a few query rows and batch items (the default block holds all of these)
    monkeypatch.setattr(_autodiff, "_ATTENTION_BLOCK_ELEMENTS", 50)
    with torch.no_grad(), fwAD.dual_level():
        duals = [fwAD.make_dual(x, tans[n]) if tangent[n] else x for n, x in zip("qkv", (q, k, v))]
        res = _autodiff._attention(*duals, mask, 0.7)
        out, tan = fwAD.unpack_dual(res)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(tan, ref_tan, rtol=0, atol=1e-12)
    assert float(ref_tan.abs().max()) > 0.1
