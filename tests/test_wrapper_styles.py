"""FLIPD under ``ad="auto"`` and ``ad="forward"`` equals reverse mode (PyTorch's autograd, float64,
1e-6) for LoRA-style subclasses of ``nn.Conv2d`` / ``nn.Linear``, an MLP closure with
``torch.cat`` and ``torch.compile``'d MLPs; auto's fallback when forward mode is wrong; a network
returning a non-tensor. The wrapper matrix (every model x every way of handing it over: module
attribute, closure, def, partial, bound method, bare diffusers model, torch.compile) is
tests/test_wrapper_matrix.py. For the supported styles ``auto`` must *keep* forward mode (its
check passes), so the fast rules themselves are what is compared."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from lidmem import ScoreModel, VPSDE
from lidmem.estimators import _autodiff, flipd


def _compare(make_model, x, reference_model, **kw):
    ref = flipd(reference_model, x, ad="reverse", **kw)
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # auto must not fall back on these styles
        auto = flipd(model, x, ad="auto", **kw)
    assert _autodiff._AUTO_CACHE[model] == "forward"
    fwd = flipd(model, x, ad="forward", **kw)
    torch.testing.assert_close(auto, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(fwd, ref, rtol=0, atol=1e-6)
    return ref


class _LoRAConv(nn.Conv2d):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.down = nn.Parameter(torch.randn(2, self.in_channels * 9, dtype=torch.float64) * 0.1)

    def forward(self, x):
        extra = nn.functional.conv2d(x, (self.weight.new_ones(()) * 0.1) * self.weight, None, self.stride, self.padding)
        return super().forward(x) + extra


class _LoRALinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) + 0.5 * nn.functional.linear(x, self.weight.flip(0))


def test_subclassed_layers_and_mlp_closure_with_cat():
    torch.manual_seed(0)
    conv = nn.Sequential(_LoRAConv(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv2d(4, 1, 3, padding=1)).double()
    model = ScoreModel(lambda x, t: conv(x) * (1 + t[:, None, None, None]), VPSDE(), prediction="epsilon")
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    _compare(lambda: model, x, model, t0=0.05, trace="exact")

    mlp = nn.Sequential(_LoRALinear(10, 32), nn.SiLU(), nn.LayerNorm(32), nn.Linear(32, 9)).double()
    mlp_model = ScoreModel(lambda x, t: mlp(torch.cat([x, t[:, None]], 1)), VPSDE(), prediction="epsilon")
    z = torch.randn(5, 9, dtype=torch.float64)
    _compare(lambda: mlp_model, z, mlp_model, t0=0.05, trace="exact")
    _compare(lambda: mlp_model, z, mlp_model, t0=0.05, trace="hutchinson", n_probes=3)


def test_compiled_mlp_keeps_the_trace_term():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 64), nn.SiLU(), nn.Linear(64, 9)).double()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, x, t):
            return self.mlp(torch.cat([x, t[:, None]], 1))

    z = torch.randn(5, 9, dtype=torch.float64)
    ref = ScoreModel(Net(), VPSDE(), prediction="epsilon")
    _compare(lambda: ScoreModel(torch.compile(Net(), backend="eager"), VPSDE(), prediction="epsilon"), z, ref, t0=0.05)
    _compare(lambda: torch.compile(ref, backend="eager"), z, ref, t0=0.05)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_auto_falls_back_with_a_warning_when_forward_mode_is_wrong(monkeypatch, trace):
    """A forward mode that loses the tangent (as compiled graphs did) is caught by auto's check,
    the standalone one (exact trace) and the one on the first batch's own row (Hutchinson)."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(9, 32), nn.SiLU(), nn.Linear(32, 9)).double()
    model = ScoreModel(lambda x, t: mlp(x) * (1 + t[:, None]), VPSDE(), prediction="epsilon")
    z = torch.randn(4, 9, dtype=torch.float64)
    kw = {"trace": trace, "n_probes": 3, "batch_size": 2}
    ref = flipd(model, z, ad="reverse", **kw)
    real_jvp = _autodiff.jvp

    def lossy(fn, m, p, t, fast=True):
        out, jv = real_jvp(fn, m, p, t, fast)
        return out, torch.zeros_like(jv)

    monkeypatch.setattr(_autodiff, "jvp", lossy)
    with pytest.warns(RuntimeWarning, match="disagrees with reverse mode"):
        got = flipd(model, z, ad="auto", **kw)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    assert _autodiff._AUTO_CACHE[model] == "reverse"
    assert float((flipd(model, z, ad="forward", **kw) - ref).abs().max()) > 1e-3  # forced forward: the loss is real


def test_auto_check_on_the_first_batch_costs_one_reverse_pass(monkeypatch):
    """With Hutchinson probes, ad='auto' checks the first batch's own J v row: the run makes the
    forward-mode calls of ad='forward' plus exactly one reverse pass on one point, and gives
    ad='forward''s numbers."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(9, 32), nn.SiLU(), nn.Linear(32, 9)).double()
    rows: list[tuple[bool, int]] = []

    def net(x, t):
        rows.append((torch.is_grad_enabled(), x.shape[0]))
        return mlp(x) * (1 + t[:, None])

    model = ScoreModel(net, VPSDE(), prediction="epsilon")
    z = torch.randn(6, 9, dtype=torch.float64)
    kw = {"trace": "hutchinson", "n_probes": 2, "batch_size": 4}
    ref = flipd(ScoreModel(net, VPSDE(), prediction="epsilon"), z, ad="reverse", **kw)
    rows.clear()
    forward = flipd(model, z, ad="forward", **kw)
    forward_rows = list(rows)
    rows.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = flipd(ScoreModel(net, VPSDE(), prediction="epsilon"), z, ad="auto", **kw)
    reverse_rows = [r for r in rows if r[0]]
    assert reverse_rows == [(True, 1)]  # one reverse pass, one point
    assert [r for r in rows if not r[0]] == forward_rows  # no extra forward-mode call
    torch.testing.assert_close(got, forward, rtol=0, atol=0)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_auto_check_on_the_first_batch_tells_forward_failures_from_the_models_own():
    """Hutchinson, ad='auto': forward mode failing on the first batch falls back to reverse mode
    with a warning (same numbers as ad='reverse'); a model failing in both modes raises its own
    error, with no warning."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 5).double()

    def fwd_fails(x, t):
        if fwAD.unpack_dual(x).tangent is not None:
            raise RuntimeError("no forward-mode rule")
        return lin(x)

    z = torch.randn(4, 5, dtype=torch.float64)
    kw = {"trace": "hutchinson", "n_probes": 2}
    ref = flipd(ScoreModel(fwd_fails, VPSDE(), prediction="epsilon"), z, ad="reverse", **kw)
    with pytest.warns(RuntimeWarning, match="forward-mode AD fails"):
        got = flipd(ScoreModel(fwd_fails, VPSDE(), prediction="epsilon"), z, ad="auto", **kw)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)

    def broken(x, t):
        raise KeyError("the model's own bug")

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(Exception, match="the model's own bug"):
            flipd(ScoreModel(broken, VPSDE(), prediction="epsilon"), z, ad="auto", **kw)


def test_bare_model_returning_a_non_tensor_is_refused():
    model = ScoreModel(lambda x, t: {"eps": x}, VPSDE())
    with pytest.raises(TypeError, match="not a tensor"):
        model(torch.zeros(2, 3), 0.5)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_auto_refuses_what_it_cannot_verify(trace):
    """Forward mode runs but reverse mode, the check's reference, fails (a closure under
    torch.no_grad(), in-place ops on tensors autograd saves): ad='auto' refuses, naming
    ad='forward', which gives the numbers of the same network written differentiably."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 5)).double()

    @torch.no_grad()
    def no_grad_eps(x, t):
        return mlp(torch.cat([x, t[:, None]], 1))

    class InPlace(nn.Module):
        def forward(self, x, t):
            h = mlp[0](torch.cat([x, t[:, None]], 1))
            h = torch.tanh(h)
            h.mul_(2.0)  # tanh's output, which its backward needs, modified in place
            return mlp[2](h)

    def plain(x, t):
        return mlp[2](2.0 * torch.tanh(mlp[0](torch.cat([x, t[:, None]], 1))))

    z = torch.randn(4, 5, dtype=torch.float64)
    kw = {"trace": trace, "n_probes": 2}
    for net, same in ((no_grad_eps, lambda x, t: mlp(torch.cat([x, t[:, None]], 1))), (InPlace(), plain)):
        with pytest.raises(_autodiff.UnverifiedForwardMode, match="ad='forward'"):
            flipd(ScoreModel(net, VPSDE(), prediction="epsilon"), z, ad="auto", **kw)
        got = flipd(ScoreModel(net, VPSDE(), prediction="epsilon"), z, ad="forward", **kw)
        ref = flipd(ScoreModel(same, VPSDE(), prediction="epsilon"), z, ad="reverse", **kw)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
