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

:class:`_FastOps`, a ``TorchFunctionMode`` active during :func:`jvp`, replaces PyTorch's rules
*at the function level*: every call of ``F.conv1d/2d/3d``, ``F.linear``, ``F.silu``,
``F.group_norm``, ``F.layer_norm`` with a dual input (and constant weights) computes the primal
with the op's own kernel and the tangent with the cheapest exact one, and returns
``fwAD.make_dual(primal, tangent)`` (no ``autograd.Function``: its per-call bookkeeping costs
50-300 us under ``dual_level``). So a module of any class, a subclass of a layer (LoRA-style,
diffusers' own), a closure, a plain function, a ``functools.partial``, a bound method or a bare
diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` all get the same rules; no module is modified.
(In a ``UNet2DConditionModel``'s cross-attention the keys and values come from
``encoder_hidden_states``, which carry no tangent: the attention rule then propagates the
queries' tangent only.)

- convolution / linear: ``conv(v, W)``, ``v W^T``;
- SiLU: ``silu_backward(v, x)``, one fused kernel;
- group / layer norm: the normalisation's Jacobian is *symmetric*,
  ``rstd (I - 11^T/n - xhat xhat^T/n)`` per group, so ``J v = J^T v`` is the fused backward
  kernel (``native_group_norm_backward`` / ``native_layer_norm_backward`` without the affine
  weight), then scaled by the weight per channel; inputs are made contiguous (PyTorch's
  group-norm rule fails on the non-contiguous tangents of diffusers attention blocks);
- scaled-dot-product attention (no dropout, not causal, no GQA): a written-out JVP formed a
  block of queries at a time (:func:`_attention_plain`);
- binary add/sub/mul/div, ``cat`` and ``interpolate`` of dual tensors: rules that keep an
  identically zero tangent absent (``h + temb``: ``h``'s tangent; ``x / 1``: ``x``'s).

What falls back to PyTorch's own forward-mode rules (correct, slower): every other op (e.g.
``F.gelu``, as in the GEGLU feed-forward of diffusers' transformer blocks, ``softmax`` outside
attention, ``einsum``), calls with differentiable weights,
unknown keyword arguments, in-place SiLU, broadcast tangents, causal/dropout attention, code that
calls the aten ops directly. ``torch.compile``'d modules and functions anywhere inside the
callable run as their original Python code during a JVP (``torch.compiler.set_stance
("force_eager")``): compiled graphs lose dual tensors' tangents without an error (measured with
inductor on an MLP, and with the eager backend on diffusers UNets). Primal outputs
come from the same kernels as the layers' own forward (bit-identical, except attention, which
equals the fused kernel to rounding); the tangents agree with PyTorch's rules and with reverse
mode to 1e-8 in float64 (tests/test_autodiff.py), and FLIPD to reverse mode's to 1e-6 for every
model x wrapper style of tests/test_wrapper_matrix.py.

:func:`jvp` is the entry point FLIPD uses. It applies the fast rules only under
``torch.no_grad()`` (the rules have no backward; code that differentiates *through* the JVP,
e.g. with respect to a text embedding, gets PyTorch's rules on the math attention kernel).

:func:`resolve_ad` maps ``ad="auto"`` to ``"forward"`` or ``"reverse"``: forward mode (one
probe about two forward passes, holding one tangent per activation where reverse mode stores
every activation), *verified once per model* by :func:`check_forward_mode` (one point, one probe,
forward-mode ``v^T J v`` against reverse mode, dtype-dependent tolerance); if forward mode raises
or disagrees, reverse mode with a ``RuntimeWarning``; if reverse mode fails too (the model cannot
be called so, e.g. a bare ``UNet2DConditionModel`` without ``encoder_hidden_states``), the
model's own error, with no warning. With Hutchinson probes FLIPD checks its first batch's own
forward-mode row instead (:func:`agrees_with_reverse`: one reverse pass at one point, no extra
forward-mode pass; :func:`decide_ad` warns and caches). Measured with
``benchmarks/speed_wrapper_styles.py`` (table in ``benchmarks/results/speed_wrapper_styles.md``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from .._validation import ArgumentError

__all__ = ["fast_forward_rules", "jvp", "vjp", "resolve_ad", "decide_ad", "cached_ad", "check_forward_mode", "agrees_with_reverse", "ModelCallError", "UnverifiedForwardMode", "ADS"]

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


def _conv(func: Callable[..., torch.Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``conv(x, W, b, ...)`` with tangent ``conv(v, W, None, ...)`` (weights are constants)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args))
    a.update(kwargs)
    if a.keys() - set(names) or "input" not in a or "weight" not in a:
        return NotImplemented
    p, t = _split(a.pop("input"))
    if t is None or _split(a["weight"])[1] is not None or _split(a.get("bias"))[1] is not None:
        return NotImplemented
    out = func(p, **a)
    a["bias"] = None
    return fwAD.make_dual(out, func(t, **a))


def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x W^T + b`` with tangent ``v W^T``."""
    a = dict(zip(("input", "weight", "bias"), args))
    a.update(kwargs)
    if a.keys() - {"input", "weight", "bias"} or "input" not in a or "weight" not in a:
        return NotImplemented
    p, t = _split(a["input"])
    if t is None or _split(a["weight"])[1] is not None or _split(a.get("bias"))[1] is not None:
        return NotImplemented
    return fwAD.make_dual(F.linear(p, a["weight"], a.get("bias")), F.linear(t, a["weight"]))


def _silu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``silu(x)`` with tangent ``silu_backward(v, x)`` (one fused kernel); not in place."""
    a = dict(zip(("input", "inplace"), args))
    a.update(kwargs)
    if a.keys() - {"input", "inplace"} or "input" not in a or a.get("inplace"):
        return NotImplemented
    p, t = _split(a["input"])
    if t is None:
        return NotImplemented
    return fwAD.make_dual(F.silu(p), torch.ops.aten.silu_backward(t, p))


def _affine_scale(tan: torch.Tensor, weight: torch.Tensor | None, view: tuple[int, ...]) -> torch.Tensor:
    return tan if weight is None else tan.mul_(weight.reshape(view))


def _norm_inputs(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous primal and tangent for the normalisation kernels, in float32 under autocast
    (autocast runs ``group_norm``/``layer_norm`` in float32; the ``native_*`` kernels called
    here are not on its lists, so the cast is done as autocast would)."""
    if torch.is_autocast_enabled(p.device.type) and p.dtype in (torch.float16, torch.bfloat16):
        p, t = p.float(), t.float()
    return p.contiguous(), t.contiguous()


def _norm_args(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    a = dict(zip(names, args))
    a.update(kwargs)
    if a.keys() - set(names) or not {"input", names[1]} <= a.keys():
        return None
    if _split(a.get("weight"))[1] is not None or _split(a.get("bias"))[1] is not None:
        return None
    return a


def _group_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``group_norm`` whose tangent is the *backward* kernel of the normalisation.

    The Jacobian of ``xhat = (x - mean_g x) rstd`` is symmetric per group,
    ``rstd (I - 11^T / n - xhat xhat^T / n)``, so ``J v = J^T v`` is what
    ``native_group_norm_backward`` computes (without the affine weight, which scales the
    result per channel afterwards): one fused kernel instead of ~10 element-wise passes, and
    correct for non-contiguous tangents (PyTorch's rule fails on them: "view size is not
    compatible", diffusers attention blocks produce them).
    """
    a = _norm_args(("input", "num_groups", "weight", "bias", "eps"), args, kwargs)
    if a is None:
        return NotImplemented
    p, t = _split(a["input"])
    if t is None or p.ndim < 2:
        return NotImplemented
    g, w, b, eps = int(a["num_groups"]), a.get("weight"), a.get("bias"), float(a.get("eps", 1e-5))
    n, c = p.shape[0], p.shape[1]
    hw = p[0, 0].numel()
    p, t = _norm_inputs(p, t)
    out, mean, rstd = torch.native_group_norm(p, w, b, n, c, hw, g, eps)
    tan = torch.ops.aten.native_group_norm_backward(t, p, mean, rstd, None, n, c, hw, g, [True, False, False])[0]
    return fwAD.make_dual(out, _affine_scale(tan, w, (1, c, *([1] * (p.ndim - 2)))))


def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``layer_norm`` with the backward kernel as tangent (symmetric Jacobian, as for group norm)."""
    a = _norm_args(("input", "normalized_shape", "weight", "bias", "eps"), args, kwargs)
    if a is None:
        return NotImplemented
    p, t = _split(a["input"])
    if t is None:
        return NotImplemented
    shape = tuple(a["normalized_shape"]) if not isinstance(a["normalized_shape"], int) else (a["normalized_shape"],)
    w, b, eps = a.get("weight"), a.get("bias"), float(a.get("eps", 1e-5))
    p, t = _norm_inputs(p, t)
    out, mean, rstd = torch.native_layer_norm(p, shape, w, b, eps)
    tan = torch.ops.aten.native_layer_norm_backward(t, p, shape, mean, rstd, None, None, [True, False, False])[0]
    return fwAD.make_dual(out, _affine_scale(tan, w, shape))


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
    if len(lead) > 1 and mask is None:
        # (batch, heads, L, d) operands, often head-transposed views (diffusers): one copy each to
        # (batch * heads, L, d) here, instead of a copy inside every blocked 4-d matmul
        # (measured: copies were ~7% of FLIPD's time on a 16x16 attention UNet)
        flat = lambda x: None if x is None else x.reshape(-1, *x.shape[-2:])  # noqa: E731
        out, tan = _attention_plain(*(flat(x) for x in (q, k, v, dq, dk, dv)), None, scale)
        return out.view(*lead, lq, out.shape[-1]), tan.view(*lead, lq, tan.shape[-1])
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


_CONV = {F.conv1d, F.conv2d, F.conv3d}


class _FastOps(torch.overrides.TorchFunctionMode):
    """The forward-mode rules at the function level: whatever calls the functional ops (a
    module of any class, a closure, a function, a subclass of a layer) gets them.

    With ``fast=True``: ``F.conv1d/2d/3d``, ``F.linear``, ``F.silu``, ``F.group_norm``,
    ``F.layer_norm``, ``F.interpolate``, ``F.scaled_dot_product_attention`` (no dropout, not
    causal, no GQA), binary add/sub/mul/div and ``cat`` of dual tensors go to the rules above;
    any call a rule does not cover (differentiable weights, unknown keywords, broadcast
    tangents) and every other op passes through unchanged to PyTorch's own rule. With
    ``fast=False`` only ``group_norm`` is touched: its input is made contiguous (primal and
    tangent), because PyTorch's rule fails on non-contiguous tangents."""

    def __init__(self, fast: bool = True) -> None:
        super().__init__()
        self.fast = fast

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if not self.fast:
            if func is F.group_norm and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
            return func(*args, **kwargs)
        res: Any = NotImplemented
        if func in _ELEMENTWISE:
            res = _elementwise(func, args, kwargs)
        elif func in _CONV:
            res = _conv(func, args, kwargs)
        elif func is F.linear:
            res = _linear(args, kwargs)
        elif func is F.silu:
            res = _silu(args, kwargs)
        elif func is F.group_norm:
            res = _group_norm(args, kwargs)
            if res is NotImplemented and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
        elif func is F.layer_norm:
            res = _layer_norm(args, kwargs)
        elif func is F.interpolate and args and _split(args[0])[1] is not None:
            # linear in its input (every mode): the tangent is resampled like the primal
            # (the stock rule also copies the output and the tangent twice each)
            (p, t), rest = _split(args[0]), args[1:]
            res = fwAD.make_dual(func(p, *rest, **kwargs), func(t, *rest, **kwargs))
        elif func is F.scaled_dot_product_attention and len(args) >= 3:
            q, k, v, *rest = args
            names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            opts = dict(zip(names, rest))
            opts.update(kwargs)
            if not opts.keys() - set(names) and not opts.get("dropout_p") and not opts.get("is_causal") and not opts.get("enable_gqa"):
                res = _attention(q, k, v, opts.get("attn_mask"), opts.get("scale"))
        if res is not NotImplemented:
            return res
        return func(*args, **kwargs)


def unwrap_compiled(fn: Any) -> Any:
    """The Python callable under ``torch.compile``: ``_orig_mod`` of an ``OptimizedModule``,
    ``_torchdynamo_orig_callable`` of a compiled function (repeatedly). Compiled graphs do not
    run forward-mode AD through ``fwAD`` dual tensors nor a ``TorchFunctionMode`` correctly (the
    tangent is lost without an error), so JVPs run on the original code."""
    for _ in range(16):
        if isinstance(fn, nn.Module) and type(fn).__name__ == "OptimizedModule" and hasattr(fn, "_orig_mod"):
            fn = fn._orig_mod
        elif getattr(fn, "_torchdynamo_orig_callable", None) is not None:
            fn = fn._torchdynamo_orig_callable
        else:
            return fn
    return fn


def is_compiled(fn: Any) -> bool:
    """Whether ``fn`` is a ``torch.compile`` result (module or function)."""
    return unwrap_compiled(fn) is not fn


@contextlib.contextmanager
def fast_forward_rules(model: Any = None, enabled: bool = True) -> Iterator[None]:
    """While active, functional ops called with dual tensors use the minimal rules
    (:class:`_FastOps`); ``enabled=False`` keeps PyTorch's own rules (with contiguous
    group-norm inputs): the reference the tests compare against. ``model`` is unused (kept for
    callers); the rules apply to whatever is called inside the block, modules and functions
    alike. Nothing is modified on any module."""
    del model
    with _FastOps(fast=enabled):
        yield


def _eager() -> Any:
    """Run ``torch.compile``'d modules and functions as their original Python code while active
    (nothing to do, and no import of dynamo, ~1 s, when nothing was ever compiled)."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    stance = getattr(torch.compiler, "set_stance", None)
    return contextlib.nullcontext() if stance is None else stance("force_eager")


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
    # compiled graphs drop dual tensors' tangents without an error: anything torch.compile'd that
    # ``fn`` reaches (a module, a function, nested in a wrapper or a closure) runs eagerly here
    with _math_attention(), _eager():
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

#: Relative tolerance of the forward-vs-reverse check of ``ad="auto"``, per dtype of the point.
_CHECK_RTOL: dict[torch.dtype, float] = {torch.float64: 1e-7, torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 1e-1}


class UnverifiedForwardMode(RuntimeError):
    """``ad="auto"`` refuses a model on which forward mode runs but reverse mode, the check's
    reference, fails: forward mode cannot prove itself there (``ad="forward"`` skips the check)."""


class ModelCallError(Exception):
    """Raised by :func:`check_forward_mode` when the model fails in both modes: not a
    forward-mode problem, so :func:`resolve_ad` re-raises ``error`` (the model's own exception)
    instead of falling back to reverse mode with a warning."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def check_forward_mode(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor) -> tuple[bool, float, float]:
    """Compare ``v^T J v`` at ``x`` (one point, shape ``(1, ...)``) by forward mode (fast rules)
    and by reverse mode (:func:`agrees_with_reverse`). Returns ``(agree, forward, reverse)``.
    Raises what forward mode raises; where reverse mode fails as well (the model cannot be
    called this way, e.g. a missing argument), raises :class:`ModelCallError` holding reverse
    mode's error: the model's own problem, not forward mode's."""
    try:
        with torch.no_grad():
            _, jv = jvp(fn, None, x, v)
    except Exception:
        try:
            vjp(fn, x, v)
        except Exception as err:
            raise ModelCallError(err) from err
        raise
    return agrees_with_reverse(fn, x, v, jv)


def agrees_with_reverse(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor, jv: torch.Tensor) -> tuple[bool, float, float]:
    """Compare a forward-mode ``J v`` (``jv``, computed elsewhere, e.g. row 0 of FLIPD's first
    batch) at the point ``x`` (shape ``(1, ...)``) with one reverse-mode pass ``J^T v``: returns
    ``(agree, v^T J v, v^T J^T v)``, agreement within :data:`_CHECK_RTOL` of
    ``|v| (|J v| + |J^T v|)`` for ``x``'s dtype. Where reverse mode fails, raises
    :class:`ModelCallError` holding an :class:`UnverifiedForwardMode` (forward mode is not used
    unchecked); where the model's output at ``x`` is not finite,
    a :class:`ModelCallError` holding an :class:`~lidmem._validation.ArgumentError` naming
    ``model``."""
    try:
        out, jtv = vjp(fn, x, v)
    except Exception as err:  # forward mode ran: only the reference fails, nothing to verify against
        first = str(err).splitlines()[0] if str(err) else ""
        refused = UnverifiedForwardMode(
            f"ad='auto' cannot verify forward mode on this model: reverse mode, its reference, fails ({type(err).__name__}: {first}); "
            "pass ad='forward' to use forward mode without the check, or make the model differentiable in reverse mode "
            "(e.g. no torch.no_grad() inside it, no in-place ops on tensors autograd saves)")
        raise ModelCallError(refused) from err
    if not bool(torch.isfinite(out).all()):
        raise ModelCallError(ArgumentError("model returned NaN or infinite scores at the first point; FLIPD needs a finite score model", argument="model"))
    fwd = float((v.double() * jv.double()).sum())
    rev = float((v.double() * jtv.double()).sum())
    scale = float(v.double().norm()) * (float(jv.double().norm()) + float(jtv.double().norm()))
    rtol = _CHECK_RTOL.get(x.dtype, 1e-3)
    agree = math.isfinite(fwd) and abs(fwd - rev) <= rtol * scale + 1e-12
    return agree, fwd, rev


def cached_ad(model: Any) -> str | None:
    """The mode ``ad="auto"`` settled on for ``model`` (``None``: not checked yet, or ``model``
    cannot be weakly referenced)."""
    try:
        return _AUTO_CACHE.get(model)
    except TypeError:  # not weak-referenceable
        return None


def resolve_ad(ad: str, model: Any, check: Callable[[], tuple[bool, float, float]] | None = None) -> str:
    """Map ``ad`` (``"auto"``, ``"forward"`` or ``"reverse"``) to a concrete mode for ``model``.

    ``"auto"`` is ``"forward"`` (with the fast rules one probe costs about two forward passes and
    holds one tangent per activation, where reverse mode stores every activation), *verified*
    once per model: ``check`` (e.g. :func:`check_forward_mode` at the first point of the first
    batch with one probe) compares forward mode with reverse mode; if forward mode raises or
    disagrees, ``"auto"`` becomes ``"reverse"`` with a ``RuntimeWarning`` saying why; if reverse
    mode fails too, or the model's output is not finite, the model's own error is raised (no
    warning, nothing cached). The answer is cached per model (weakly; models that cannot be
    weakly referenced are checked every call).
    """
    if ad != "auto":
        return ad
    cached = cached_ad(model)
    if cached is not None:
        return cached
    return decide_ad(model, check)


def decide_ad(model: Any, check: Callable[[], tuple[bool, float, float]] | None) -> str:
    """Run ``check`` (see :func:`resolve_ad`) for ``model``, warn where forward mode fails or
    disagrees, cache and return the mode (``"forward"`` or ``"reverse"``); re-raise the model's
    own error (:class:`ModelCallError`)."""
    mode = "forward"
    if check is not None:
        try:
            agree, fwd, rev = check()
        except ModelCallError as failed:  # the model's own error (both modes fail): no fallback
            raise failed.error from failed.error.__cause__
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            warnings.warn(f"ad='auto': forward-mode AD fails on {type(model).__name__} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); using reverse mode (pass ad='reverse' to skip this check)", RuntimeWarning, stacklevel=4)
            mode = "reverse"
        else:
            if not agree:
                warnings.warn(f"ad='auto': forward-mode AD disagrees with reverse mode on {type(model).__name__} (v^T J v = {fwd:.6g} vs {rev:.6g} at one point; e.g. code whose ops forward mode cannot see); using reverse mode (pass ad='reverse' to skip this check)", RuntimeWarning, stacklevel=4)
                mode = "reverse"
    with contextlib.suppress(TypeError):
        _AUTO_CACHE[model] = mode
    return mode
