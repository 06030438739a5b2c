"""Jacobian-vector products at the two-pass floor, and the choice of differentiation mode.

FLIPD needs ``v^T (grad s) v`` for a few probes ``v``: one primal pass plus one tangent pass
(forward mode) or one cotangent pass (reverse mode, ``autograd.grad``). PyTorch's stock
forward-mode rules miss that floor on the layers diffusion networks are made of (measured with
``torch.profiler`` on the shipped digits UNet, torch 2.13, CPU):

- ``convolution`` / ``addmm``: the formula takes the tangents of the input, the weight and the
  bias; the parameters' undefined tangents become ``_efficientzerotensor`` values that the kernel
  then *computes with*: three convolutions per layer instead of two.
- ``native_group_norm``: a decomposition of ~20 element-wise ops, failing on non-contiguous
  tangents (diffusers attention blocks produce them).
- binary ops, ``cat``, ``interpolate``: ~100x the op itself under ``fwAD.dual_level`` (a tensor
  without tangent gets a materialised zero tangent); the math attention kernel loops over the batch.

:func:`fast_forward_rules` swaps, for the duration of a ``with`` block, the ``forward`` of every
``nn.Conv1d/2d/3d``, ``nn.Linear``, ``nn.GroupNorm``, ``nn.LayerNorm`` and ``nn.SiLU`` inside a
model (exactly those classes, not subclasses) for a function that unpacks the dual input,
computes the primal with the layer's own kernel and the tangent with the cheapest exact one, and
returns ``fwAD.make_dual(primal, tangent)`` (no ``autograd.Function``: its per-call bookkeeping
costs 50-300 us under ``dual_level``):

- convolution / linear: ``conv(v, W)``, ``v W^T``;
- SiLU: ``silu_backward(v, x)``, one fused kernel;
- group / layer norm: the normalisation's Jacobian is *symmetric*,
  ``rstd (I - 11^T/n - xhat xhat^T/n)`` per group, so ``J v = J^T v`` is the fused backward
  kernel (``native_group_norm_backward`` / ``native_layer_norm_backward`` without the affine
  weight), then scaled by the weight per channel;

and a ``TorchFunctionMode`` routes scaled-dot-product attention to a written-out JVP formed a
block of queries at a time (:func:`_attention_plain`), and binary add/sub/mul/div, ``cat`` and
``interpolate`` on dual tensors to rules that keep an identically zero tangent absent
(``h + temb``: ``h``'s tangent; ``x / 1``: ``x``'s). Primal outputs come from the same kernels as
the layers' own forward (bit-identical, except attention, which equals the fused kernel to
rounding); the tangents agree with PyTorch's rules and with reverse mode to 1e-8 in float64
(tests/test_autodiff.py).

:func:`jvp` is the entry point FLIPD uses. It applies the fast rules only under
``torch.no_grad()`` (the rules have no backward; code that differentiates *through* the JVP,
e.g. with respect to a text embedding, gets PyTorch's rules on the math attention kernel).

:func:`resolve_ad` maps ``ad="auto"`` to ``"forward"`` or ``"reverse"``. Rule (from
``benchmarks/speed_flipd.py``): with the fast rules, one probe in forward mode costs 1.7-2.2x a
forward pass on an MLP, UNets with and without attention and a text-to-image UNet with CFG, and
holds one tangent per activation (~2x a forward's memory), while reverse mode stores every
activation (4-6.5x on UNets); so ``"auto"`` picks forward mode, except for callables that are not
``nn.Module`` (no layers to swap) *and* whose forward-mode JVP fails, where reverse mode is the
only choice. The mode is cached per model.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

__all__ = ["fast_forward_rules", "jvp", "vjp", "resolve_ad", "ADS"]

#: Accepted values of FLIPD's ``ad`` argument.
ADS: tuple[str, ...] = ("auto", "forward", "reverse")


# ---------------------------------------------------------------- minimal forward-mode rules
# Each rule takes dual tensors (or plain ones) and returns ``fwAD.make_dual(primal, tangent)``:
# the primal computed by the op's own kernel, the tangent by the cheapest exact kernel. No
# ``autograd.Function`` is involved (its per-call bookkeeping costs ~50-300 us under
# ``fwAD.dual_level``, comparable to a small layer; measured, torch 2.13 CPU).


def _split(x: Any) -> tuple[Any, torch.Tensor | None]:
    """``(primal, tangent)`` of ``x`` (tangent None for non-tensors and plain tensors)."""
    if not isinstance(x, torch.Tensor):
        return x, None
    p, t = fwAD.unpack_dual(x)
    return p, t


def _conv_rule(fn: Callable[..., torch.Tensor], m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``conv(x, W, b)`` with tangent ``conv(v, W)`` (weights are constants)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        p, t = _split(x)
        out = fn(p, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        if t is None:
            return out
        return fwAD.make_dual(out, fn(t, m.weight, None, m.stride, m.padding, m.dilation, m.groups))

    return forward


def _linear_rule(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x W^T + b`` with tangent ``v W^T``."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        p, t = _split(x)
        out = F.linear(p, m.weight, m.bias)
        return out if t is None else fwAD.make_dual(out, F.linear(t, m.weight))

    return forward


def _silu(x: torch.Tensor) -> torch.Tensor:
    """``silu(x)`` with tangent ``silu_backward(v, x)`` (one fused kernel)."""
    p, t = _split(x)
    out = F.silu(p)
    return out if t is None else fwAD.make_dual(out, torch.ops.aten.silu_backward(t, p))


def _affine_scale(tan: torch.Tensor, weight: torch.Tensor | None, view: tuple[int, ...]) -> torch.Tensor:
    return tan if weight is None else tan.mul_(weight.reshape(view))


def _norm_inputs(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous primal and tangent for the normalisation kernels, in float32 under autocast
    (autocast runs ``group_norm``/``layer_norm`` in float32; the ``native_*`` kernels called
    here are not on its lists, so the cast is done as autocast would)."""
    if torch.is_autocast_enabled(p.device.type) and p.dtype in (torch.float16, torch.bfloat16):
        p, t = p.float(), t.float()
    return p.contiguous(), t.contiguous()


def _group_norm_rule(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``group_norm`` whose tangent is the *backward* kernel of the normalisation.

    The Jacobian of ``xhat = (x - mean_g x) rstd`` is symmetric per group,
    ``rstd (I - 11^T / n - xhat xhat^T / n)``, so ``J v = J^T v`` is what
    ``native_group_norm_backward`` computes (without the affine weight, which scales the
    result per channel afterwards): one fused kernel instead of ~10 element-wise passes.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        p, t = _split(x)
        if t is None:
            return F.group_norm(p, m.num_groups, m.weight, m.bias, m.eps)
        n, c = p.shape[0], p.shape[1]
        hw = p[0, 0].numel()
        p, t = _norm_inputs(p, t)
        out, mean, rstd = torch.native_group_norm(p, m.weight, m.bias, n, c, hw, m.num_groups, m.eps)
        tan = torch.ops.aten.native_group_norm_backward(t, p, mean, rstd, None, n, c, hw, m.num_groups, [True, False, False])[0]
        return fwAD.make_dual(out, _affine_scale(tan, m.weight, (1, c, *([1] * (p.ndim - 2)))))

    return forward


def _layer_norm_rule(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``layer_norm`` with the backward kernel as tangent (symmetric Jacobian, as for group norm)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        p, t = _split(x)
        shape = tuple(m.normalized_shape)
        if t is None:
            return F.layer_norm(p, shape, m.weight, m.bias, m.eps)
        p, t = _norm_inputs(p, t)
        out, mean, rstd = torch.native_layer_norm(p, shape, m.weight, m.bias, m.eps)
        tan = torch.ops.aten.native_layer_norm_backward(t, p, shape, mean, rstd, None, None, [True, False, False])[0]
        return fwAD.make_dual(out, _affine_scale(tan, m.weight, shape))

    return forward


#: Elements of one (queries x keys) block of the attention JVP on CPU: the score, probability and
#: derivative matrices are formed a block at a time (1 MiB in float32), so that they stay in
#: cache and below glibc's mmap threshold, and memory does not grow with the number of tokens
#: squared (a Stable Diffusion 64x64 latent has 4096 tokens: 64 MiB per head and image).
#: Measured (benchmarks/speed_flipd.py): 1 MiB blocks cost the same time as 4 MiB ones and keep
#: the text-to-image row's live memory at 1.95x a forward's instead of 2.04x.
_ATTENTION_BLOCK_ELEMENTS = 1 << 18
#: The same on accelerators (256 MiB in float32): fewer, larger kernels; memory stays bounded.
_ATTENTION_BLOCK_ELEMENTS_ACCELERATOR = 1 << 26


def _attention_block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dq: torch.Tensor | None, dk: torch.Tensor | None, dv: torch.Tensor | None, mask: torch.Tensor | None, scale: float, out: torch.Tensor, tan: torch.Tensor) -> None:
    """Attention and its tangent for one block of queries, written into ``out`` and ``tan``:
    ``dS = (dq k^T + q dk^T) scale``, ``dP = P (dS - rowsum(P dS))``, ``dO = dP v + P dv``."""
    s = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)
    if mask is not None:
        s = s.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else s.add_(mask)
    p = torch.softmax(s, dim=-1)
    torch.matmul(p, v, out=out)
    ds = None
    if dq is not None:
        ds = torch.matmul(dq, k.transpose(-2, -1))
    if dk is not None:
        t = torch.matmul(q, dk.transpose(-2, -1))
        ds = t if ds is None else ds.add_(t)
    if ds is None:
        torch.matmul(p, dv, out=tan)
        return
    ds = ds.mul_(scale)
    dp = ds.sub_(torch.linalg.vecdot(p, ds).unsqueeze_(-1)).mul_(p)  # in place: one (L, L) temporary
    torch.matmul(dp, v, out=tan)
    if dv is not None:
        tan.add_(torch.matmul(p, dv))


def _attention_plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dq: torch.Tensor | None, dk: torch.Tensor | None, dv: torch.Tensor | None, mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention and its tangent with the probabilities formed explicitly, a block of
    (leading index, queries) at a time (:data:`_ATTENTION_BLOCK_ELEMENTS`); shapes ``(..., L, d)``."""
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    unbatched = not lead
    if unbatched:  # a single (L, d) attention: a leading axis of one
        lead = torch.Size([1])
    lq, lk = q.shape[-2], k.shape[-2]
    full = lambda x: None if x is None else x.expand(*lead, *x.shape[-2:])  # noqa: E731
    q, k, v, dq, dk, dv, mask = (full(x) for x in (q, k, v, dq, dk, dv, mask))
    out = q.new_empty(*lead, lq, v.shape[-1])
    tan = torch.empty_like(out)
    budget = _ATTENTION_BLOCK_ELEMENTS if q.device.type == "cpu" else _ATTENTION_BLOCK_ELEMENTS_ACCELERATOR
    per_item = math.prod(lead[1:]) * lq * lk
    step0 = max(1, budget // per_item)
    rows = lq if step0 > 1 else max(1, budget // (math.prod(lead[1:]) * lk))
    for i0 in range(0, lead[0], step0):
        bs = slice(i0, i0 + step0)
        keys = lambda x, bs=bs: None if x is None else x[bs]  # noqa: E731
        for r0 in range(0, lq, rows):
            qs = (bs, ..., slice(r0, r0 + rows), slice(None))
            queries = lambda x, qs=qs: None if x is None else x[qs]  # noqa: E731
            _attention_block(queries(q), keys(k), keys(v), queries(dq), keys(dk), keys(dv), queries(mask), scale, out[qs], tan[qs])
    return (out[0], tan[0]) if unbatched else (out, tan)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None) -> torch.Tensor:
    """Scaled-dot-product attention (no dropout, not causal) of dual tensors."""
    (q, dq), (k, dk), (v, dv) = _split(q), _split(k), _split(v)
    if mask is not None:
        mask = _split(mask)[0]
    if dq is None and dk is None and dv is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    out, tan = _attention_plain(q, k, v, dq, dk, dv, mask, scale)
    return fwAD.make_dual(out, tan)


_ADD = {torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.add, torch.add}
_SUB = {torch.Tensor.__sub__, torch.Tensor.sub, torch.sub}
_MUL = {torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul, torch.mul}
_DIV = {torch.Tensor.__truediv__, torch.Tensor.div, torch.div}
_CAT = {torch.cat, torch.concat, torch.concatenate}


def _elementwise(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Forward-mode rule of the binary op ``func`` or ``cat``, or ``NotImplemented`` where the
    stock rule applies. The stock rules of these ops cost ~100x the op itself under
    ``fwAD.dual_level`` on CPU (torch 2.13, measured); here a tangent that is identically zero
    stays absent (``h + temb``: the tangent of ``h``, not a materialised ``ta + 0``)."""
    if func in _CAT:
        if kwargs.keys() - {"dim"} or len(args) > 2:
            return NotImplemented
        tensors = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        primals, tans = zip(*(_split(t) for t in tensors)) if tensors else ((), ())
        if all(t is None for t in tans):
            return NotImplemented
        out = torch.cat(primals, dim=dim)
        tan = torch.cat([p.new_zeros(()).expand_as(p) if t is None else t for p, t in zip(primals, tans)], dim=dim)
        return fwAD.make_dual(out, tan)
    if kwargs or len(args) != 2:
        return NotImplemented
    (pa, ta), (pb, tb) = _split(args[0]), _split(args[1])
    if ta is None and tb is None:
        return NotImplemented
    out = func(pa, pb)
    if func in _ADD or func in _SUB:
        if tb is None:
            tan = ta
        elif ta is None:
            tan = tb if func in _ADD else -tb
        else:
            tan = ta + tb if func in _ADD else ta - tb
    elif func in _MUL and (ta is None or tb is None):
        tan = func(ta, pb) if tb is None else func(pa, tb)
    elif func in _DIV and tb is None:
        tan = ta if isinstance(pb, (int, float)) and pb == 1 else func(ta, pb)
    else:
        return NotImplemented
    if tan.shape != out.shape or tan.dtype != out.dtype:  # broadcast tangent: the stock rule
        return NotImplemented
    return fwAD.make_dual(out, tan)


_ELEMENTWISE = _ADD | _SUB | _MUL | _DIV | _CAT


class _FastOps(torch.overrides.TorchFunctionMode):
    """Routes ``F.scaled_dot_product_attention`` (no dropout, not causal, no GQA) to
    :func:`_attention`, binary add/sub/mul/div and ``cat`` on dual tensors to
    :func:`_elementwise` and ``F.interpolate`` of a dual tensor to itself on primal and tangent; every other call passes through unchanged."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _ELEMENTWISE:
            res = _elementwise(func, args, kwargs)
            if res is not NotImplemented:
                return res
        elif func is F.interpolate and args and _split(args[0])[1] is not None:
            # linear in its input (every mode): the tangent is resampled like the primal
            # (the stock rule also copies the output and the tangent twice each)
            (p, t), rest = _split(args[0]), args[1:]
            return fwAD.make_dual(func(p, *rest, **kwargs), func(t, *rest, **kwargs))
        elif func is F.scaled_dot_product_attention:
            q, k, v, *rest = args
            names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            opts = dict(zip(names, rest))
            opts.update(kwargs)
            if not opts.get("dropout_p") and not opts.get("is_causal") and not opts.get("enable_gqa"):
                return _attention(q, k, v, opts.get("attn_mask"), opts.get("scale"))
        return func(*args, **kwargs)


_CONV_FNS: dict[type, Callable[..., torch.Tensor]] = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def _fast_forward(module: nn.Module) -> Callable[..., torch.Tensor] | None:
    """The replacement ``forward`` of ``module``, or None when its class is not handled."""
    cls = type(module)
    if cls in _CONV_FNS and getattr(module, "padding_mode", "zeros") == "zeros" and not isinstance(module.padding, str):
        return _conv_rule(_CONV_FNS[cls], module)
    if cls is nn.Linear:
        return _linear_rule(module)
    if cls is nn.SiLU:
        return _silu
    if cls is nn.GroupNorm:
        return _group_norm_rule(module)
    if cls is nn.LayerNorm:
        return _layer_norm_rule(module)
    return None


@contextlib.contextmanager
def _contiguous_group_norm_inputs(modules: list[nn.Module]) -> Iterator[None]:
    """GroupNorm layers in ``modules`` receive a contiguous copy of their input while active
    (PyTorch's forward-mode group-norm rule fails on non-contiguous tangents)."""

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])

    handles = [m.register_forward_pre_hook(hook) for m in modules if isinstance(m, nn.GroupNorm)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def fast_forward_rules(model: Any, enabled: bool = True) -> Iterator[None]:
    """While active, the layers of ``model`` (an ``nn.Module``; anything else is left alone) that
    have a minimal forward-mode rule use it; the remaining GroupNorm layers get contiguous inputs.

    ``enabled=False`` keeps PyTorch's own rules (with the contiguity hooks): the reference the
    tests compare against. The model is restored on exit, also after an exception. Not
    thread-safe: do not call the same model from another thread inside the block.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    swapped: list[tuple[nn.Module, bool, Any]] = []
    rest: list[nn.Module] = []
    try:
        for m in model.modules():
            new = _fast_forward(m) if enabled else None
            if new is None:
                rest.append(m)
                continue
            had = "forward" in m.__dict__
            swapped.append((m, had, m.__dict__.get("forward")))
            m.forward = new  # instance attribute, shadows the class's forward
        ops = _FastOps() if enabled else contextlib.nullcontext()
        with _contiguous_group_norm_inputs(rest), ops:
            yield
    finally:
        for m, had, old in swapped:
            if had:
                m.forward = old
            else:
                del m.forward


def _math_attention() -> Any:
    """Route scaled-dot-product attention to the plain-matmul kernel, which has forward-mode AD
    on every device (the fused CPU kernels have none)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def jvp(fn: Callable[[torch.Tensor], torch.Tensor], model: Any, primals: torch.Tensor, tangents: torch.Tensor, fast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(primals), J_fn(primals) tangents)`` by forward-mode AD.

    ``model`` is the ``nn.Module`` (or any callable) whose layers ``fn`` calls; under
    ``torch.no_grad()`` and with ``fast=True`` its layers use the minimal rules of
    :func:`fast_forward_rules`, otherwise PyTorch's (on the math attention kernel, the one with
    forward-mode AD on every device). With the fast rules, ``F.scaled_dot_product_attention`` of
    dual tensors goes through the attention rule; the math kernel stays the fallback for code that
    reaches the aten op directly.
    """
    use_fast = fast and not torch.is_grad_enabled()
    with _math_attention():
        if not use_fast:
            with fast_forward_rules(model, enabled=False):
                return torch.func.jvp(fn, (primals,), (tangents,))
        # dual tensors directly: less per-op overhead than torch.func's wrappers (measured on the
        # digits UNet: 2.5x vs 3.3x a forward pass)
        with fast_forward_rules(model), fwAD.dual_level():
            out = fn(fwAD.make_dual(primals, tangents))
            primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:  # the output does not depend on the input
        tangent = torch.zeros_like(primal)
    return primal, tangent


def vjp(fn: Callable[[torch.Tensor], torch.Tensor], primals: torch.Tensor, cotangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(primals), J_fn(primals)^T cotangents)`` by one backward pass (output detached)."""
    with torch.enable_grad():
        inp = primals.detach().requires_grad_(True)
        out = fn(inp)
        (g,) = torch.autograd.grad(out, inp, grad_outputs=cotangents)
    return out.detach(), g


_AUTO_CACHE: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def resolve_ad(ad: str, model: Any, probe: Callable[[], Any] | None = None) -> str:
    """Map ``ad`` (``"auto"``, ``"forward"`` or ``"reverse"``) to a concrete mode for ``model``.

    ``"auto"`` is ``"forward"`` for ``nn.Module`` models (the fast rules bring it to the
    two-pass floor and it stores no activations). For other callables, ``probe`` (a function
    that runs one forward-mode JVP on a small input) is tried once: if it raises, the model gets
    ``"reverse"``. The answer is cached per model (weakly).
    """
    if ad != "auto":
        return ad
    try:
        cached = _AUTO_CACHE.get(model)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    mode = "forward"
    if not isinstance(model, nn.Module) and probe is not None:
        try:
            probe()
        except (RuntimeError, NotImplementedError):
            mode = "reverse"
    with contextlib.suppress(TypeError):
        _AUTO_CACHE[model] = mode
    return mode
