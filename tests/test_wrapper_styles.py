"""FLIPD under ``ad="auto"`` and ``ad="forward"`` equals reverse mode (PyTorch's autograd, float64,
1e-6) however a user hands the network over: a module attribute, a closure over a bare diffusers
UNet (``.sample``), a plain ``def``, ``functools.partial``, a bound method, the bare diffusers
model, LoRA-style subclasses of ``nn.Conv2d`` / ``nn.Linear``, ``torch.compile``'d modules and
functions, an MLP closure with ``torch.cat``. For the supported styles ``auto`` must *keep*
forward mode (its check passes), so the fast rules themselves are what is compared."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from lidmem import DDPMSchedule, ScoreModel, VPSDE
from lidmem.estimators import _autodiff, flipd

diffusers = pytest.importorskip("diffusers")


def _unet(attention: bool):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=down, up_block_types=up).double().eval()


class _Holder(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        return self.unet(x, t).sample


class _Caller:
    def __init__(self, unet):
        self.unet = unet

    def eps(self, x, t):
        return self.unet(x, t).sample


def _def_style(unet, x, t):
    return unet(x, t, return_dict=False)[0]


def _styles(unet):
    return {
        "module attribute": lambda: _Holder(unet),
        "closure .sample": lambda: (lambda x, t: unet(x, t).sample),
        "def": lambda: (lambda x, t: _def_style(unet, x, t)),
        "partial": lambda: functools.partial(_def_style, unet),
        "bound method": lambda: _Caller(unet).eps,
        "bare diffusers model": lambda: unet,
        "torch.compile module": lambda: torch.compile(_Holder(unet), backend="eager"),
        "torch.compile function": lambda: torch.compile(lambda x, t: unet(x, t).sample, backend="eager"),
    }


def _schedule():
    from diffusers import DDPMScheduler

    return DDPMSchedule.from_scheduler(DDPMScheduler(num_train_timesteps=1000))


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


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("style", list(_styles(None)))
def test_unet_styles_match_reverse_mode(style, attention):
    unet = _unet(attention)
    sch = _schedule()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = ScoreModel(_Holder(unet), sch, prediction="epsilon")
    net = _styles(unet)[style]()
    make = lambda: ScoreModel(net, sch, prediction="epsilon")  # noqa: E731
    ex = _compare(make, x, reference, t0=0.05, trace="exact")
    hu = _compare(make, x, reference, t0=0.05, trace="hutchinson", n_probes=2, seed=3)
    # the exact trace and Hutchinson's estimate differ: a lost trace term would make them equal
    assert float((ex - hu).abs().max()) > 1e-3


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


def test_auto_falls_back_with_a_warning_when_forward_mode_is_wrong(monkeypatch):
    """A forward mode that loses the tangent (as compiled graphs did) is caught by auto's check."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(9, 32), nn.SiLU(), nn.Linear(32, 9)).double()
    model = ScoreModel(lambda x, t: mlp(x) * (1 + t[:, None]), VPSDE(), prediction="epsilon")
    z = torch.randn(4, 9, dtype=torch.float64)
    ref = flipd(model, z, ad="reverse")
    real_jvp = _autodiff.jvp

    def lossy(fn, m, p, t, fast=True):
        out, jv = real_jvp(fn, m, p, t, fast)
        return out, torch.zeros_like(jv)

    monkeypatch.setattr(_autodiff, "jvp", lossy)
    with pytest.warns(RuntimeWarning, match="disagrees with reverse mode"):
        got = flipd(model, z, ad="auto")
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    assert float((flipd(model, z, ad="forward") - ref).abs().max()) > 1e-3  # forced forward: the loss is real


def test_bare_model_returning_a_non_tensor_is_refused():
    model = ScoreModel(lambda x, t: {"eps": x}, VPSDE())
    with pytest.raises(TypeError, match="not a tensor"):
        model(torch.zeros(2, 3), 0.5)
