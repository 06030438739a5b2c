"""The wrapper matrix (issue 20): FLIPD under ``ad="auto"`` and ``ad="forward"`` equals reverse
mode (float64, ``atol=1e-6``), with the exact trace and with Hutchinson's estimator, for every way
a user hands each model to lidmem.

Models (rows): a 784-d MLP (``x`` and ``t`` concatenated, LayerNorm inside); diffusers
``UNet2DModel`` without and with attention; a ``UNet2DConditionModel`` with classifier-free
guidance (lidmem's :class:`~lidmem.text2image.TextToImageModel` and ``image_flipd``, or the user's
own guidance in a :class:`~lidmem.ScoreModel`); an EDM denoiser ``D(x, sigma)`` loaded from an
entry point (:class:`lidmem.models.EDMDenoiser`, or an NVlabs-style module with ``sigma_min`` ...).

Styles (columns): a module holding the network as an attribute, a closure, a ``def``, a
``functools.partial``, a bound method, the bare model, ``torch.compile`` of a module and of a
function (eager backend: dynamo's capture, cheap), and ``torch.compile`` with its default
backend (inductor; slow) for the MLP and for the text-to-image adapter on a compiled UNet. Not applicable: the bare-model column of the MLP (it is no
diffusers model; the MLP as a module is the module-attribute column). Refused, asserted in the cells: ``TextToImageModel``
given a closure, a function, a partial, a bound method, a compiled function or a module without
the UNet's ``.config`` (a ``TypeError`` naming ``ScoreModel``); a bare ``UNet2DConditionModel``
without ``encoder_hidden_states`` (a ``TypeError`` naming the argument).

Why the matrix cannot pass by accident:
- every reference is reverse mode on a plain ``nn.Module`` holding the network, and is itself
  checked against eq. 6 computed from the full Jacobian (``torch.autograd.functional.jacobian``);
- every cell asserts that forward mode was used: ``auto``'s check passed without a warning and
  cached ``"forward"``, and exactly one reverse-mode call (the check) happened, the rest JVPs;
- the exact trace and one-probe Hutchinson differ by more than 1e-3 at every point (a lost trace
  term, the compiled-graph bug, makes them equal), and Hutchinson is compared probe for probe.
"""

from __future__ import annotations

import collections
import functools
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from torch import nn

from lidmem import VPSDE, DDPMSchedule, ScoreModel
from lidmem.estimators import _autodiff, flipd

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

ATOL = 1e-6
HUTCH = {"trace": "hutchinson", "n_probes": 2, "seed": 3}
MODELS = ("mlp784", "unet", "unet+attention", "unet2dcondition+cfg", "edm")
STYLES = ("module attribute", "closure", "def", "partial", "bound method", "bare model", "torch.compile module", "torch.compile function")
NOT_APPLICABLE = {("mlp784", "bare model")}
#: torch.compile's default backend (inductor): the one whose graphs lost the trace term of an MLP
#: without a warning (the eager backend keeps its tangents; it loses a UNet's). About 10 s for the
#: MLP and 100 s for a UNet on 2 cores (compiling), so: the MLP, and the text-to-image adapter on
#: a compiled UNet2DConditionModel, both marked slow.
INDUCTOR = ("torch.compile module (inductor)", "torch.compile function (inductor)")


def _id(model: str, style: str) -> str:
    return f"{model}-{style}".replace(" (", "-").replace(")", "").replace(" ", "_")


CELLS = [pytest.param(m, s, id=_id(m, s)) for m in MODELS for s in STYLES if (m, s) not in NOT_APPLICABLE]
CELLS += [pytest.param("mlp784", s, id=_id("mlp784", s), marks=pytest.mark.slow) for s in INDUCTOR]
CELLS += [pytest.param("unet2dcondition+cfg", INDUCTOR[0], id=_id("unet2dcondition+cfg", INDUCTOR[0]), marks=pytest.mark.slow)]


# ------------------------------------------------------------------ how users hold a network
class _Holder(nn.Module):
    """A user's module with the network as an attribute: ``core(self.net, x, t, **kw)``."""

    def __init__(self, net: nn.Module, core: Callable[..., torch.Tensor], **attrs: Any) -> None:
        super().__init__()
        self.net = net
        self._core = core
        for k, v in attrs.items():
            setattr(self, k, v)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self._core(self.net, x, t, **kw)


class _Caller:
    def __init__(self, net: nn.Module, core: Callable[..., torch.Tensor]) -> None:
        self.net, self._core = net, core

    def predict(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self._core(self.net, x, t, **kw)


def _style(style: str, net: nn.Module, core: Callable[..., torch.Tensor], closure: Callable[..., torch.Tensor]) -> Any:
    """The network as ``style`` hands it over; ``core(net, x, t, **kw)`` is the user's function,
    ``closure`` the same computation written as a closure over ``net`` (other code, same math)."""
    if style == "module attribute":
        return _Holder(net, core)
    if style == "closure":
        return closure
    if style == "def":
        def predict(x, t, **kw):
            return core(net, x, t, **kw)
        return predict
    if style == "partial":
        return functools.partial(core, net)
    if style == "bound method":
        return _Caller(net, core).predict
    if style == "bare model":
        return net
    if style == "torch.compile module":
        return torch.compile(_Holder(net, core), backend="eager")
    if style == "torch.compile function":
        return torch.compile(closure, backend="eager")
    if style == "torch.compile module (inductor)":
        return torch.compile(_Holder(net, core))
    if style == "torch.compile function (inductor)":
        return torch.compile(closure)
    raise AssertionError(style)


def _unet2d(attention: bool) -> nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=down, up_block_types=up).double().eval()


def _ddpm() -> DDPMSchedule:
    from diffusers import DDPMScheduler

    return DDPMSchedule.from_scheduler(DDPMScheduler(num_train_timesteps=1000))


def _points(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the rows
class _Case:
    """One row: ``models(style)`` are the models to hand to ``flipd`` (compared with the
    reference ``refkey(style)``), ``refused(style)`` the calls that must raise."""

    x: torch.Tensor
    t0: float = 0.05
    extra_args: Mapping[str, Any] = types.MappingProxyType({})

    def models(self, style: str) -> list[nn.Module]:
        raise NotImplementedError

    def reference(self, key: str) -> nn.Module:
        raise NotImplementedError

    def refkey(self, style: str) -> str:
        return "default"

    def refused(self, style: str) -> list[tuple[Callable[[], Any], str]]:
        return []


def _mlp_core(net, x, t):
    return net(torch.cat([x, t[:, None].to(x.dtype)], 1))


class _MLP(_Case):
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(785, 32), nn.SiLU(), nn.LayerNorm(32), nn.Linear(32, 784)).double()
        self.x = _points((784,))
        self.sde = VPSDE()

    def closure(self):
        net = self.net
        return lambda x, t: net(torch.cat([x, t.reshape(-1, 1)], dim=1))

    def models(self, style):
        return [ScoreModel(_style(style, self.net, _mlp_core, self.closure()), self.sde, prediction="epsilon")]

    def reference(self, key):
        return ScoreModel(_Holder(self.net, _mlp_core), self.sde, prediction="epsilon")


def _unet_core(net, x, t):
    return net(x, t, return_dict=False)[0]


class _UNet(_Case):
    def __init__(self, attention: bool) -> None:
        self.net = _unet2d(attention)
        self.x = _points((1, 8, 8))
        self.sde = _ddpm()

    def closure(self):
        unet = self.net
        return lambda x, t: unet(x, t).sample

    def models(self, style):
        models = [ScoreModel(_style(style, self.net, _unet_core, self.closure()), self.sde, prediction="epsilon")]
        if style == "bare model":  # also as an entry point's ScoreNetwork
            from lidmem.models import ScoreNetwork

            models.append(_entry_point(ScoreNetwork(self.net, self.sde, "epsilon", (1, 8, 8))))
        return models

    def reference(self, key):
        return ScoreModel(_Holder(self.net, _unet_core), self.sde, prediction="epsilon")


def _cfg_core(net, x, t, cond, uncond, guidance_scale):
    """The user's classifier-free guidance: one UNet batch ``[uncond, cond]``."""
    n = x.shape[0]
    emb = torch.cat([uncond.expand(n, -1, -1), cond])
    out_u, out_c = net(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=emb).sample.chunk(2)
    return out_u + guidance_scale * (out_c - out_u)


def _cond_core(net, x, t, encoder_hidden_states):
    """A plain conditional call, as TextToImageModel makes it."""
    return net(x, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class _CFG(_Case):
    """A tiny ``UNet2DConditionModel`` (cross-attention dim 8) with a tiny CLIP text encoder;
    guidance scale 3 on a prompt embedding and the empty prompt's."""

    def __init__(self) -> None:
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from lidmem.text2image import TextToImageModel
        from lidmem.text2image.testing import tiny_tokenizer

        torch.manual_seed(0)
        self.net = UNet2DConditionModel(
            sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=8, attention_head_dim=2,
        ).double().eval()
        self.tokenizer = tiny_tokenizer(model_max_length=6)
        torch.manual_seed(1)
        self.text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=16, num_attention_heads=2,
            num_hidden_layers=1, vocab_size=len(self.tokenizer), max_position_embeddings=6,
        )).double().eval()
        self.scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                       set_alpha_to_one=False, steps_offset=1)
        self.t2i = TextToImageModel
        base = self.adapter(self.net)
        cond, _ = base.encode_prompt(["a photo of the cat", "red dog"])
        self.extra_args = {"cond": cond, "uncond": base.unconditional_embeds(1), "guidance_scale": 3.0}
        self.sde = base.sde
        self.x = _points((1, 8, 8))

    def adapter(self, unet):
        return self.t2i(unet, self.text_encoder, self.tokenizer, self.scheduler)

    def closure(self):
        unet = self.net

        def eps(x, t, cond, uncond, guidance_scale):  # two UNet calls instead of one batch
            e_u = unet(x, t, encoder_hidden_states=uncond.expand(x.shape[0], -1, -1)).sample
            e_c = unet(x, t, encoder_hidden_states=cond).sample
            return e_u + guidance_scale * (e_c - e_u)

        return eps

    def user_guidance(self, style):
        return ScoreModel(_style(style, self.net, _cfg_core, self.closure()), self.sde, prediction="epsilon")

    def models(self, style):
        if style == "bare model":  # lidmem's guidance on the bare UNet
            return [self.adapter(self.net)]
        if style == "module attribute":  # the user's guidance; a module with the UNet's config in the adapter
            return [self.user_guidance(style), self.adapter(_Holder(self.net, _cond_core, config=self.net.config))]
        if style == "torch.compile module":
            return [self.user_guidance(style), self.adapter(torch.compile(self.net, backend="eager"))]
        if style == "torch.compile module (inductor)":  # the adapter on a UNet compiled as users compile it
            return [self.adapter(torch.compile(self.net))]
        return [self.user_guidance(style)]

    def refused(self, style):
        msg = "UNet2DConditionModel.*ScoreModel"
        if style == "module attribute":
            return [(lambda: self.adapter(_Holder(self.net, _cond_core)), msg)]
        if style in ("closure", "def", "partial", "bound method", "torch.compile function"):
            fn = _style(style, self.net, _cond_core, lambda x, t, encoder_hidden_states: _cond_core(self.net, x, t, encoder_hidden_states))
            return [(lambda: self.adapter(fn), msg)]
        if style == "bare model":  # the bare UNet in a ScoreModel needs its conditioning named
            bare = ScoreModel(self.net, self.sde, prediction="epsilon")
            return [(lambda: flipd(bare, self.x, self.t0), "encoder_hidden_states")]
        return []

    def reference(self, key):
        return ScoreModel(_Holder(self.net, _cfg_core), self.sde, prediction="epsilon")


def _edm_core(net, x, sigma):
    """EDM preconditioning (Karras et al. 2022) around a UNet ``F``: ``c_skip x + c_out F(c_in x, c_noise)``."""
    sd = 0.5
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
    return c_skip * x + c_out * net(c_in * x, sigma.log() / 4).sample


def _bare_core(net, x, sigma):
    return net(x, sigma).sample


class _EDM(_Case):
    """Loaded from an entry point (``load_model("module:factory")``), as the CLI loads it; VE SDE
    with sigma in [0.002, 80], t0 = 0.5 (sigma 0.4)."""

    t0 = 0.5

    def __init__(self) -> None:
        self.net = _unet2d(attention=True)
        self.x = _points((1, 8, 8))

    def closure(self):
        unet = self.net
        return lambda x, sigma: _edm_core(unet, x, sigma)

    def models(self, style):
        from lidmem.models import EDMDenoiser

        if style == "module attribute":  # an NVlabs-EDM-like module, returned by the factory as is
            attrs = {"sigma_min": 0.002, "sigma_max": 80.0, "img_channels": 1, "img_resolution": 8}
            return [_entry_point(_Holder(self.net, _edm_core, **attrs))]
        return [_entry_point(EDMDenoiser(_style(style, self.net, _edm_core, self.closure()), 0.002, 80.0, (1, 8, 8)))]

    def refkey(self, style):
        return "bare" if style == "bare model" else "default"  # the bare UNet as D: another function

    def reference(self, key):
        from lidmem.models import EDMDenoiser

        core = _bare_core if key == "bare" else _edm_core
        return _entry_point(EDMDenoiser(_Holder(self.net, core), 0.002, 80.0, (1, 8, 8)))


_ENTRY_MODULE = "lidmem_test_wrapper_matrix_factory"


def _entry_point(spec: Any) -> nn.Module:
    """``load_model("module:factory")`` of a factory returning ``spec`` (a module registered in
    ``sys.modules`` for the call, so nothing is written to disk)."""
    from lidmem.models import load_model

    mod = types.ModuleType(_ENTRY_MODULE)
    mod.factory = lambda: spec
    sys.modules[_ENTRY_MODULE] = mod
    try:
        return load_model(f"{_ENTRY_MODULE}:factory")
    finally:
        del sys.modules[_ENTRY_MODULE]


@functools.cache
def _case(name: str) -> _Case:
    return {"mlp784": _MLP, "unet": lambda: _UNet(False), "unet+attention": lambda: _UNet(True), "unet2dcondition+cfg": _CFG, "edm": _EDM}[name]()


# ------------------------------------------------------------------ references
def _eq6_by_jacobian(model: nn.Module, x: torch.Tensor, t0: float, extra_args: dict[str, Any]) -> torch.Tensor:
    """Eq. 6 from the full Jacobian of the score at each point, independent of lidmem's estimator:
    ``d + sigma(t0)^2 (tr J + |s|^2)`` at ``psi(t0) x``."""
    tt = torch.tensor(t0, dtype=torch.float64)
    psi, sig2 = float(model.sde.psi(tt)), float(model.sde.sigma(tt)) ** 2
    n, d = x.shape[0], x[0].numel()
    out = []
    for i in range(n):
        kw = {k: v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[0] == n else v for k, v in extra_args.items()}
        xt = psi * x[i:i + 1]
        t = torch.full((1,), t0, dtype=x.dtype)

        def score(z, kw=kw, xt=xt, t=t):
            return model(z.reshape(xt.shape), t, **kw).reshape(-1)

        jac = torch.autograd.functional.jacobian(score, xt.reshape(-1))
        with torch.no_grad():
            s = score(xt.reshape(-1))
        out.append(d + sig2 * (torch.trace(jac) + s.pow(2).sum()))
    return torch.stack(out)


@functools.cache
def _references(name: str, key: str) -> dict[str, torch.Tensor]:
    case = _case(name)
    ref = case.reference(key)
    kw = {"extra_args": case.extra_args}
    out = {
        "exact": flipd(ref, case.x, case.t0, ad="reverse", trace="exact", **kw),
        "hutchinson": flipd(ref, case.x, case.t0, ad="reverse", **HUTCH, **kw),
        "one probe": flipd(ref, case.x, case.t0, ad="reverse", trace="hutchinson", n_probes=1, seed=0, **kw),
    }
    torch.testing.assert_close(out["exact"], _eq6_by_jacobian(ref, case.x, case.t0, case.extra_args), rtol=0, atol=1e-8)
    return out


def _count_ad_calls(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """Count the JVPs (forward mode) and VJPs (reverse mode) FLIPD makes from now on."""
    calls: collections.Counter = collections.Counter()
    for name in ("jvp", "vjp"):
        real = getattr(_autodiff, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(_autodiff, name, counted)
    return calls


# ------------------------------------------------------------------ the matrix
@pytest.mark.parametrize(("name", "style"), CELLS)
def test_flipd_matches_reverse_mode(name, style, monkeypatch):
    case = _case(name)
    ref = _references(name, case.refkey(style))
    # the exact trace and one-probe Hutchinson differ at every point: equal values would mean a lost trace term
    assert float((ref["exact"] - ref["one probe"]).abs().min()) > 1e-3
    assert float((ref["exact"] - ref["hutchinson"]).abs().min()) > 1e-3
    if "compile" in style:
        torch.compiler.reset()  # a fresh compilation per cell (dynamo's recompile limit would run later cells eagerly)
    models = case.models(style)
    calls = _count_ad_calls(monkeypatch)
    kw = {"extra_args": case.extra_args}
    for model in models:
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # auto must keep forward mode: its check passes
            got = {"auto exact": flipd(model, case.x, case.t0, ad="auto", trace="exact", **kw)}
        assert _autodiff._AUTO_CACHE[model] == "forward"
        got["auto hutchinson"] = flipd(model, case.x, case.t0, ad="auto", **HUTCH, **kw)
        got["forward exact"] = flipd(model, case.x, case.t0, ad="forward", trace="exact", **kw)
        got["forward hutchinson"] = flipd(model, case.x, case.t0, ad="forward", **HUTCH, **kw)
        assert calls["vjp"] == 1 and calls["jvp"] >= 5, f"{type(model).__name__}: {dict(calls)} (one reverse-mode check, the rest JVPs)"
        if name == "unet2dcondition+cfg" and style == "bare model":  # the text-to-image entry point (ad="auto")
            from lidmem.text2image import image_flipd

            cond = case.extra_args["cond"]
            common = {"captions": cond, "t0": case.t0, "guidance_scale": 3.0, "inputs": "latents"}
            got["image_flipd exact"] = image_flipd(model, case.x, trace="exact", **common)
            got["image_flipd hutchinson"] = image_flipd(model, case.x, **HUTCH, **common)
        label = type(model).__name__
        for what, value in got.items():
            expected = ref["exact" if "exact" in what else "hutchinson"]
            torch.testing.assert_close(value, expected, rtol=0, atol=ATOL, msg=lambda m, w=what, c=label: f"{c}, {w}: {m}")
    for call, match in case.refused(style):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a refusal, not a fallback
            with pytest.raises(TypeError, match=match):
                call()


def test_bare_conditional_unet_in_score_model_and_entry_points():
    """A bare ``UNet2DConditionModel`` in a ``ScoreModel``, an entry point's ``ScoreNetwork`` and an
    ``EDMDenoiser``: with ``extra_args={"encoder_hidden_states": ...}`` FLIPD equals the adapter's
    conditional FLIPD (guidance 1) by reverse mode; without it, a TypeError naming the argument."""
    from lidmem.models import EDMDenoiser, ScoreNetwork

    case = _case("unet2dcondition+cfg")
    cond = case.extra_args["cond"]
    ref_model = case.adapter(case.net)
    ref = {tr: flipd(ref_model, case.x, case.t0, ad="reverse", extra_args={"cond": cond, "guidance_scale": 1.0}, **kw)
           for tr, kw in (("exact", {"trace": "exact"}), ("hutchinson", HUTCH))}
    assert float((ref["exact"] - ref["hutchinson"]).abs().min()) > 1e-3
    ehs = {"encoder_hidden_states": cond}
    for model in (ScoreModel(case.net, case.sde, prediction="epsilon"), _entry_point(ScoreNetwork(case.net, case.sde, "epsilon", (1, 8, 8)))):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            for tr, kw in (("exact", {"trace": "exact"}), ("hutchinson", HUTCH)):
                for ad in ("auto", "forward"):
                    got = flipd(model, case.x, case.t0, ad=ad, extra_args=ehs, **kw)
                    torch.testing.assert_close(got, ref[tr], rtol=0, atol=ATOL)
            assert _autodiff._AUTO_CACHE[model] == "forward"
            with pytest.raises(TypeError, match=r"extra_args=\{'encoder_hidden_states': embeds\} \(shape \(n, L, 8\)\)"):
                flipd(model, case.x, case.t0)  # as the CLI calls it: no conditioning

    edm = _entry_point(EDMDenoiser(case.net, 0.002, 80.0, (1, 8, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TypeError, match="encoder_hidden_states"):
            flipd(edm, case.x, 0.5)
        rev = flipd(edm, case.x, 0.5, ad="reverse", extra_args=ehs, **HUTCH)
        torch.testing.assert_close(flipd(edm, case.x, 0.5, ad="auto", extra_args=ehs, **HUTCH), rev, rtol=0, atol=ATOL)
    assert _autodiff._AUTO_CACHE[edm] == "forward"
