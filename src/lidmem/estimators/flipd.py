"""FLIPD: LID of a diffusion model from the Fokker-Planck equation (eq. 6; Kamkari et al., 2024).

    FLIPD(x, t0) = d + sigma(t0)^2 * ( tr grad s(psi(t0) x, t0) + || s(psi(t0) x, t0) ||^2 )

with ``d = prod(x.shape[1:])``, ``s`` the score (not epsilon) and ``psi``, ``sigma`` from the
model's forward SDE (``N(psi(t) x_0, sigma(t)^2 I)``). The trace of the score's Jacobian is
computed with forward-mode Jacobian-vector products (``torch.func.jvp``), either exactly
(``d`` products with basis vectors) or with Hutchinson's estimator (``E[v^T J v] = tr J`` for
probes with ``E[v v^T] = I``). Points and probes are stacked into one batch per model call.

FLIPD is a real number, not an integer; for UNets it can be negative (the paper's footnote 4).
It ranks points correctly and is reported as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from .._validation import ArgumentError, check_choice, check_points, check_positive_int, check_seed, check_t0, make_generator
from .._validation import as_model_dtype
from ..defaults import FLIPD_T0
from ..diffusion.score import check_extra_args, conditioning_rows, model_call_errors, time_tensor
from ..diffusion.sde import SDE
from ..utils import chunk_slices, progress as _progress
from .._allocator import retain_freed_memory
from . import _autodiff
from .base import Estimator

__all__ = ["flipd", "flipd_curve", "flipd_at", "select_t0", "FLIPD", "default_t0_grid"]

TRACES: tuple[str, ...] = ("exact", "hutchinson")
PROBES: tuple[str, ...] = ("rademacher", "gaussian")
ADS: tuple[str, ...] = _autodiff.ADS

#: Rows (points x tangent vectors) per model call when ``batch_size`` is None.
_DEFAULT_ROWS = 2048

#: Numbers per float64 product buffer in :func:`_trace_and_norm`.
_PRODUCT_ELEMENTS = 1 << 18


def default_t0_grid(n: int = 16, low: float = 1e-3, high: float = 1.0) -> list[float]:
    """Log-spaced grid of ``n`` diffusion times in ``[low, high]`` used by ``t0="knee"``."""
    return [float(v) for v in np.geomspace(low, high, n)]


def _get_sde(model: Any) -> SDE:
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t) -> score; got {type(model).__name__}")
    sde = getattr(model, "sde", None)
    if not isinstance(sde, SDE):
        raise TypeError(
            "model must have an `.sde` attribute holding a lidmem SDE (VPSDE, VESDE, DDPMSchedule); "
            f"got {type(sde).__name__}. Wrap a network with lidmem.ScoreModel(net, sde, prediction=...)."
        )
    return sde


def _check_batch_size(batch_size: Any) -> int | None:
    if batch_size is None:
        return None
    return check_positive_int(batch_size, "batch_size")


def _draw_probes(shape: tuple[int, ...], probe: str, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    # Rademacher: +-1 with equal probability. The bits are those of torch.randint(0, 2, shape):
    # on CPU both take the lowest bit of one 32-bit Mersenne-twister draw per element, and a
    # boolean random_ skips randint's modulo and float conversion (0.9 vs 1.9 ms per 512 x 784
    # batch, 2 threads; tests/test_flipd.py checks the two agree bit for bit)
    if torch.device(device).type == "cpu":
        bits = torch.empty(shape, dtype=torch.bool, device=device).random_(generator=generator)
        return torch.full(shape, -1.0, dtype=dtype, device=device).add_(bits, alpha=2)
    return torch.randint(0, 2, shape, generator=generator, dtype=dtype, device=device).mul_(2).sub_(1)


def _trace_and_norm(
    model: Callable[..., torch.Tensor],
    xt: torch.Tensor,
    t0: float,
    tangents: torch.Tensor | None,
    rows: int,
    ad: str = "forward",
    cond: Callable[[int], dict[str, Any]] = lambda m: {},
    create_graph: bool = False,
    per_coordinate: bool = False,
    first_jv: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(tr grad s, ||s||^2)`` (float64, shape ``(b,)``) at the points ``xt`` (shape ``(b, ...)``).

    ``per_coordinate=True`` returns the summands instead, each of shape ``(b, d)``: the diagonal
    of ``grad s`` (exact, or Hutchinson's diagonal estimator ``mean_v v * (J v)``) and ``s_i^2``.

    ``tangents`` of shape ``(b, P, ...)`` are Hutchinson probes (trace = mean of ``v^T J v``);
    ``None`` means the exact trace with the ``d`` basis vectors. Either way at most
    ``max(rows, b)`` rows go through the model per call. ``cond(m)`` is the conditioning of the
    ``b`` points each repeated ``m`` times; ``create_graph`` keeps both results differentiable.
    An empty list ``first_jv`` receives row 0 of the first ``J v`` (point 0, tangent 0), shape
    ``(1, ...)``: what ``ad="auto"``'s check compares with reverse mode.
    """
    b = xt.shape[0]
    shape = xt.shape[1:]
    d = math.prod(shape)

    def call(primals: torch.Tensor, tang: torch.Tensor, kw: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and J v (forward mode) or J^T v (reverse mode); v^T J v = v^T J^T v either way."""
        tvec = time_tensor(t0, primals)
        if ad == "forward":
            out, jv = _autodiff.jvp(lambda inp: model(inp, tvec, **kw), model, primals, tang)
        elif create_graph:
            # double backward through attention needs the plain-matmul kernel
            with _autodiff._math_attention():
                inp = primals if primals.requires_grad else primals.detach().requires_grad_(True)
                out = model(inp, tvec, **kw)
                (jv,) = torch.autograd.grad(out, inp, grad_outputs=tang, create_graph=True)
        else:
            out, jv = _autodiff.vjp(lambda inp: model(inp, tvec, **kw), primals, tang)
        if out.shape != primals.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)} for input shape {tuple(primals.shape)}; it must return the score")
        return out, jv

    # tangent vectors per point: the d basis vectors (exact trace) or the P probes (Hutchinson),
    # pushed through the model in blocks of at most ``rows`` rows (points x tangents)
    n_tan = d if tangents is None else tangents.shape[1]
    tb = max(1, min(n_tan, rows // b))
    eye = torch.eye(d, dtype=xt.dtype, device=xt.device) if tangents is None else None
    # the products v * J v and s^2 are formed a few points at a time (about _PRODUCT_ELEMENTS
    # numbers), so that no input-sized buffer is added to the model's own memory
    pts = max(1, _PRODUCT_ELEMENTS // (tb * d))
    out_shape = (b, d) if per_coordinate else (b,)
    tr = torch.zeros(out_shape, dtype=torch.float64, device=xt.device)  # per coordinate: diag of grad s
    sq = torch.empty(out_shape, dtype=torch.float64, device=xt.device)
    for blk in chunk_slices(n_tan, tb):
        m = blk.stop - blk.start
        # one tangent per point: the points themselves; else a materialised copy, not an expanded view
        primals = xt if m == 1 else xt.repeat_interleave(m, dim=0)
        if eye is not None:
            tang = eye[blk].repeat(b, 1).reshape(b * m, *shape)
        else:
            tang = tangents[:, blk].reshape(b * m, *shape)
        out, jv = call(primals, tang, cond(m))
        if first_jv is not None and not first_jv:
            first_jv.append(jv[:1].detach().clone())
        tv, jvv = tang.reshape(b, m, d), jv.reshape(b, m, d)
        o = out.reshape(b, m, d)[:, 0]
        for sl in chunk_slices(b, pts):
            if per_coordinate:
                prod = tv[sl].to(torch.float64, copy=True).mul_(jvv[sl])  # float64 (jv promoted exactly)
                tr[sl] = tr[sl] + (prod[:, 0] if m == 1 else prod.sum(1))
                if blk.start == 0:
                    sq[sl] = o[sl].double() ** 2
                continue
            # sums accumulated in float64 without float64 copies: v * J v is exact for Rademacher
            # probes (+-1) and rounded once (2^-24 relative) for Gaussian ones in float32
            tr[sl] = tr[sl] + torch.mul(tv[sl], jvv[sl]).sum((1, 2), dtype=torch.float64)
            if blk.start == 0:
                if create_graph:  # differentiable everywhere (the norm's gradient is not at s = 0)
                    sq[sl] = o[sl].double().square().sum(-1)
                else:  # float64 accumulation of the model-dtype scores (no overflow in half precision)
                    sq[sl] = torch.linalg.vector_norm(o[sl], dim=-1, dtype=torch.float64).square()
    if tangents is not None:
        tr = tr.div_(n_tan)  # Hutchinson: mean of v * J v over the probes (its sum: mean of v^T J v)
    return tr, sq


def _eq6_terms(model: Any, xt: torch.Tensor, t0: float, sigma2: float, tangents: torch.Tensor | None, rows: int, ad: str, cond: Callable[[int], dict[str, Any]], create_graph: bool,
               first_jv: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The per-coordinate summands of eq. 6 at the noisy points ``xt`` (shape ``(b, ...)``) of time
    ``t0``, float64 ``(b, d)``: ``1 + sigma(t0)^2 (d s_i / d x_i + s_i^2)``. The one place the
    formula lives; FLIPD is their sum (:func:`_eq6`), a memorization map their reshape."""
    diag, sq = _trace_and_norm(model, xt, t0, tangents, rows, ad, cond, create_graph, per_coordinate=True, first_jv=first_jv)
    return diag.add_(sq).mul_(sigma2).add_(1.0)  # 1 + sigma2 (diag + sq), in place: no (b, d) temporaries


def _eq6(model: Any, xt: torch.Tensor, t0: float, sigma2: float, tangents: torch.Tensor | None, rows: int, ad: str, cond: Callable[[int], dict[str, Any]], create_graph: bool,
         first_jv: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Eq. 6 at the noisy points ``xt`` (shape ``(b, ...)``) of time ``t0``, float64 ``(b,)``:
    ``d + sigma(t0)^2 (tr grad s(xt, t0) + ||s(xt, t0)||^2)``, the sum of :func:`_eq6_terms`
    (summed before the formula is applied, so that no ``(b, d)`` float64 buffer is formed)."""
    tr, sq = _trace_and_norm(model, xt, t0, tangents, rows, ad, cond, create_graph, first_jv=first_jv)
    return tr.add_(sq).mul_(sigma2).add_(math.prod(xt.shape[1:]))


def _probe_forward_mode(model: Any, x: torch.Tensor, extra_args: Mapping[str, Any]) -> tuple[bool, float, float]:
    """Forward vs reverse mode at the first point of ``x``, one Rademacher probe, t = 0.5
    (:func:`_autodiff.check_forward_mode`; raises where forward mode is unsupported)."""
    xt = x[:1]
    tvec = torch.full((1,), 0.5, dtype=x.dtype, device=x.device)
    kw = conditioning_rows(extra_args, x.shape[0], slice(0, 1), 1)
    gen = torch.Generator(device=x.device).manual_seed(0)
    v = torch.randint(0, 2, xt.shape, generator=gen, device=x.device).to(x.dtype).mul_(2).sub_(1)
    return _autodiff.check_forward_mode(lambda inp: model(inp, tvec, **kw), xt, v)


def _verified_first_batch(
    model: Any, eq6: Callable[..., torch.Tensor], xt: torch.Tensor, t0: float, sigma2: float, tangents: torch.Tensor,
    rows: int, cond: Callable[[int], dict[str, Any]], x: torch.Tensor, args: dict[str, Any], n: int,
) -> tuple[torch.Tensor, str]:
    """Eq. 6 (``eq6``: :func:`_eq6` or :func:`_eq6_terms`) on the first batch ``xt`` (time ``t0``,
    Hutchinson ``tangents`` of shape ``(b, P, ...)``) for ``ad="auto"`` on a model not yet
    checked: forward mode, verified against one reverse pass at point 0 with probe 0
    (:func:`_autodiff.agrees_with_reverse` on the batch's own ``J v`` row), then recomputed in
    reverse mode where forward mode fails or disagrees (:func:`_autodiff.decide_ad` warns,
    caches the mode, or re-raises the model's own error). Returns ``(values, mode)``."""
    first: list[torch.Tensor] = []
    try:
        values = eq6(model, xt, t0, sigma2, tangents, rows, "forward", cond, False, first)
    except Exception:
        # the standalone check tells forward mode's failures (-> reverse mode, warned) from the
        # model's own (re-raised); where forward mode works at one point, the batch's error stands
        if _autodiff.decide_ad(model, lambda: _probe_forward_mode(model, x, args)) == "forward":
            raise
    else:
        kw = conditioning_rows(args, n, slice(0, 1), 1)
        xt0 = xt[:1]
        tvec = time_tensor(t0, xt0)
        probe0 = tangents[:1, 0]
        if _autodiff.decide_ad(model, lambda: _autodiff.agrees_with_reverse(lambda inp: model(inp, tvec, **kw), xt0, probe0, first[0])) == "forward":
            return values, "forward"
    return eq6(model, xt, t0, sigma2, tangents, rows, "reverse", cond, False), "reverse"


def _flipd_curve_impl(
    model: Any,
    x: Any,
    t0s: Sequence[float],
    trace: str,
    n_probes: int,
    probe: str,
    seed: int | torch.Generator | None,
    batch_size: int | None,
    progress: bool | None,
    ad: str = "auto",
    extra_args: Mapping[str, Any] | None = None,
    create_graph: bool = False,
    noisy: bool = False,
    per_coordinate: bool = False,
) -> torch.Tensor:
    """FLIPD at every point and time, shape ``(n, len(t0s))``. ``noisy=True``: ``x`` are already
    points of time ``t0s[0]`` (no ``psi`` scaling; one time only). ``per_coordinate=True``: the
    summands of eq. 6 instead, shape ``(n, len(t0s), d)`` (memorization maps)."""
    sde = _get_sde(model)
    x = check_points(x, "x")
    check_choice(trace, "trace", TRACES)
    check_choice(probe, "probe", PROBES)
    check_choice(ad, "ad", ADS)
    n_probes = check_positive_int(n_probes, "n_probes")
    batch_size = _check_batch_size(batch_size)
    args = check_extra_args(extra_args)
    if seed is not None and not isinstance(seed, torch.Generator):
        check_seed(seed)
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True or False; got {create_graph!r}")
    retain_freed_memory()  # batch after batch without page faults (see lidmem._allocator)
    with model_call_errors(args, x):
        return _flipd_run(model, sde, x, t0s, trace, n_probes, probe, seed, batch_size, progress, ad, args, create_graph, noisy, per_coordinate)


def _flipd_run(
    model: Any, sde: SDE, x: torch.Tensor, t0s: Sequence[float], trace: str, n_probes: int, probe: str,
    seed: int | torch.Generator | None, batch_size: int | None, progress: bool | None, ad: str, args: dict[str, Any],
    create_graph: bool, noisy: bool, per_coordinate: bool,
) -> torch.Tensor:
    """The body of :func:`_flipd_curve_impl` after its argument checks."""
    # ad="auto" on a new model: with Hutchinson probes the check reuses the first batch's own
    # forward-mode J v at point 0, probe 0 (one reverse pass extra, not a forward and a reverse
    # pass); with the exact trace (basis vectors, whose first row checks one diagonal entry only)
    # it probes one Rademacher vector up front, negligible next to d JVPs per point
    verify_first = ad == "auto" and trace == "hutchinson" and not create_graph and _autodiff.cached_ad(model) is None
    ad = "forward" if verify_first else _autodiff.resolve_ad(ad, model, lambda: _probe_forward_mode(model, x, args))
    if create_graph:
        # reverse-mode derivatives of forward-mode (jvp) outputs are wrong through layer_norm in
        # torch 2.13 (tests/test_t2i_adapters.py measures 1% on a diffusers UNet; reverse-over-
        # reverse matches finite differences), so a differentiable FLIPD uses the reverse path
        ad = "reverse"
    t0_list = [check_t0(t, "t0") for t in t0s]
    if len(t0_list) == 0:
        raise ValueError("t0s is empty; give at least one diffusion time, e.g. t0s=[0.01, 0.05]")

    n = x.shape[0]
    d = math.prod(x.shape[1:])
    per_point = d if trace == "exact" else n_probes
    if batch_size is None:
        batch_size = max(1, _DEFAULT_ROWS // per_point)
    rows = max(_DEFAULT_ROWS, batch_size)
    gen = make_generator(seed, device=x.device) if trace == "hutchinson" else None

    psis = [float(sde.psi(torch.tensor(t, dtype=torch.float64))) for t in t0_list]
    sig2s = [float(sde.sigma(torch.tensor(t, dtype=torch.float64))) ** 2 for t in t0_list]
    result = torch.empty(n, len(t0_list), *((d,) if per_coordinate else ()), dtype=torch.float64, device=x.device)
    slices = list(chunk_slices(n, batch_size))
    # create_graph: autograd stays on, so the result is differentiable w.r.t. tensors in
    # extra_args (e.g. prompt embeddings), x and the model's parameters
    with torch.enable_grad() if create_graph else torch.no_grad():
        for sl in _progress(slices, total=len(slices), desc="FLIPD", disable=None if progress is None else not progress):
            xc = x[sl]
            tangents = None
            if trace == "hutchinson":
                tangents = _draw_probes((xc.shape[0], n_probes, *xc.shape[1:]), probe, gen, xc.dtype, xc.device)

            def cond(m: int, sl: slice = sl) -> dict[str, Any]:
                return conditioning_rows(args, n, sl, m)

            for j, t0 in enumerate(t0_list):
                xt = xc if noisy else psis[j] * xc
                eq6 = _eq6_terms if per_coordinate else _eq6
                if verify_first:
                    verify_first = False
                    result[sl, j], ad = _verified_first_batch(model, eq6, xt, t0, sig2s[j], tangents, rows, cond, x, args, n)
                    continue
                result[sl, j] = eq6(model, xt, t0, sig2s[j], tangents, rows, ad, cond, create_graph)
    bad = ~torch.isfinite(result).reshape(n, -1).all(dim=1)
    if bool(bad.any()):  # never a silent NaN: the model's score or its derivative is not finite there
        raise ArgumentError(
            f"model returned NaN or infinite scores (or derivatives) at {int(bad.sum())} of {n} points (first: x[{int(bad.int().argmax())}]); "
            "FLIPD needs a finite score model at these points and times", argument="model")
    return result.to(torch.promote_types(x.dtype, torch.float32))


def flipd(
    model: Any,
    x: Any,
    t0: float = FLIPD_T0,
    *,
    trace: Literal["exact", "hutchinson"] = "exact",
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | torch.Generator | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    ad: Literal["auto", "forward", "reverse"] = "auto",
    extra_args: Mapping[str, Any] | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """FLIPD estimate of LID_theta at each point (eq. 6).

    Parameters
    ----------
    model : callable
        Score model ``model(x, t, **extra_args) -> s(x, t)`` taking a batch ``x`` of shape
        ``(m, ...)`` and continuous times ``t`` of shape ``(m,)`` in [0, 1], returning the *score* (use
        :class:`lidmem.ScoreModel` to wrap epsilon/x0/v networks), with an ``.sde`` attribute
        (:class:`~lidmem.VPSDE`, :class:`~lidmem.VESDE` or :class:`~lidmem.DDPMSchedule`).
        Put modules in ``eval()`` mode yourself; FLIPD never changes the model.
    x : Tensor of shape (n, d) or (n, c, h, w)
        Points (clean data, time 0) on the model's device. ``d = prod(x.shape[1:])``.
    t0 : float, default=0.05 (:data:`lidmem.defaults.FLIPD_T0`)
        Diffusion time in (0, 1]. Small ``t0`` approximates LID; see :func:`select_t0`.
    trace : {"exact", "hutchinson"}, default="exact"
        ``"exact"`` uses ``d`` JVPs per point (fine for small ``d``); ``"hutchinson"`` uses
        ``n_probes`` random probes per point (one JVP each).
    n_probes : int, default=1
        Hutchinson probes per point (ignored for ``trace="exact"``).
    probe : {"rademacher", "gaussian"}, default="rademacher"
        Distribution of the Hutchinson probes.
    seed : int, torch.Generator or None, default=0
        Seed of the probes. Results are deterministic for a given ``seed`` and ``batch_size``.
    batch_size : int or None, default=None
        Points per chunk. None picks ``max(1, 2048 // r)`` with ``r`` = JVPs per point (``d`` or
        ``n_probes``), so that about 2048 rows go through the model per call. Each chunk's
        tangent vectors (basis vectors or probes) are further split so that at most
        ``max(2048, batch_size)`` rows go through the model per call.
    progress : bool or None, default=None
        Progress bar over chunks (None: only on a terminal).
    ad : {"auto", "forward", "reverse"}, default="auto"
        How ``v^T (grad s) v`` is computed: forward mode (``torch.func.jvp``, no stored
        activations) or reverse mode (one backward pass with ``v`` as output gradient, giving
        ``v^T (grad s)^T v``, the same number). Forward mode runs with minimal derivative rules
        for convolution, linear, group/layer norm, SiLU and attention layers
        (:mod:`lidmem.estimators._autodiff`), which put one probe at about two to three forward
        passes; ``"auto"`` uses forward mode, verified once per model against one reverse pass
        (with Hutchinson probes: the first batch's own row at point 0, probe 0; with the exact
        trace: one Rademacher probe at point 0), and falls back to reverse mode with a
        ``RuntimeWarning`` where forward mode fails or disagrees (``benchmarks/speed_flipd.py``,
        ``benchmarks/speed_wrapper_styles.py``).
    extra_args : mapping or None, default=None
        Conditioning, passed unchanged as ``model(x, t, **extra_args)`` (k-diffusion's
        convention), e.g. ``{"cond": prompt_embeds, "uncond": empty_embeds, "guidance_scale": 7.5}``
        for a :class:`lidmem.text2image.TextToImageModel`. A tensor whose first dimension is ``n``
        holds one entry per point: it is chunked with ``x`` and repeated per probe / basis vector
        (:func:`lidmem.diffusion.score.conditioning_rows`); everything else is passed as is.
    create_graph : bool, default=False
        Keep autograd on (instead of ``torch.no_grad()``) so that the result is differentiable
        with respect to tensors in ``extra_args`` (prompt embeddings: attribution, embedding
        optimisation), ``x`` and the model's parameters. Costs the memory of the graph. Always
        uses ``ad="reverse"`` (double backward): PyTorch's reverse-mode derivative of a
        forward-mode JVP through ``layer_norm`` is wrong (torch 2.13).

    Returns
    -------
    Tensor of shape (n,)
        FLIPD values in ``x``'s floating dtype (at least float32), on ``x``'s device (can be
        negative). Floating input is first cast to the dtype of ``model``'s parameters (an
        ``nn.Module``; e.g. a float64 NumPy array for a float32 network), so the result then has
        the model's dtype.

    Raises
    ------
    ValueError
        On an empty/NaN ``x``, ``t0`` outside (0, 1], ``n_probes < 1`` or unknown ``trace``/``probe``.
    TypeError
        If ``model`` is not callable or has no lidmem ``.sde``.

    Notes
    -----
    Forward-mode AD runs under ``sdpa_kernel(SDPBackend.MATH)`` so that attention layers work on
    CPU, and under ``torch.no_grad()``; the layers of an ``nn.Module`` model get minimal
    forward-mode rules for the duration of the call (temporary instance attributes; the model is
    left as it was). With ``sigma^2`` small, the two terms inside the bracket
    nearly cancel; both are accumulated in float64.

    Examples
    --------
    >>> from lidmem.data.analytic import GaussianMixtureOnSubspaces
    >>> from lidmem.estimators import flipd
    >>> gm = GaussianMixtureOnSubspaces(dims=[0, 3], ambient_dim=6)
    >>> x, lid, _ = gm.sample(4, seed=0)
    >>> flipd(gm, x, t0=0.001).round().long().tolist() == lid.tolist()
    True
    """
    x = as_model_dtype(x, model)  # boundary rule: float64 NumPy input meets a float32 network
    t0 = check_t0(t0, "t0")
    return _flipd_curve_impl(model, x, [t0], trace, n_probes, probe, seed, batch_size, progress, ad, extra_args, create_graph)[:, 0]


def flipd_at(
    model: Any,
    x_t: Any,
    t: float,
    *,
    trace: Literal["exact", "hutchinson"] = "exact",
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | torch.Generator | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    ad: Literal["auto", "forward", "reverse"] = "auto",
    extra_args: Mapping[str, Any] | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """FLIPD of the score at points ``x_t`` that are already at diffusion time ``t`` (eq. 6 / 14 / 26):
    ``d + sigma(t)^2 (tr grad s(x_t, t) + ||s(x_t, t)||^2)``, without the ``psi(t)`` scaling of
    :func:`flipd`: ``flipd(model, x, t0) == flipd_at(model, psi(t0) * x, t0)``.

    Used on the states of a sampler (A^FLIPD, eq. 28). Arguments as in :func:`flipd`; ``x_t``
    has shape ``(n, ...)``. Returns a tensor of shape ``(n,)`` in ``x_t``'s dtype.
    """
    x_t = as_model_dtype(x_t, model)  # boundary rule: float64 NumPy input meets a float32 network
    t = check_t0(t, "t")
    return _flipd_curve_impl(model, x_t, [t], trace, n_probes, probe, seed, batch_size, progress, ad, extra_args, create_graph, noisy=True)[:, 0]


def flipd_curve(
    model: Any,
    x: Any,
    t0s: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    *,
    trace: Literal["exact", "hutchinson"] = "exact",
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | torch.Generator | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    ad: Literal["auto", "forward", "reverse"] = "auto",
    extra_args: Mapping[str, Any] | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """FLIPD at several diffusion times in one call; Hutchinson probes are shared across ``t0s``.

    Parameters
    ----------
    model, x, trace, n_probes, probe, seed, batch_size, progress, ad, extra_args, create_graph
        As in :func:`flipd`.
    t0s : sequence of float or None, default=None
        Diffusion times in (0, 1]; None uses :func:`default_t0_grid` (16 log-spaced values in
        [1e-3, 1]).

    Returns
    -------
    Tensor of shape (n, len(t0s))
        ``curve[i, j] = FLIPD(x_i, t0s[j])``.
    """
    x = as_model_dtype(x, model)  # boundary rule: float64 NumPy input meets a float32 network
    if t0s is None:
        t0s = default_t0_grid()
    if isinstance(t0s, (torch.Tensor, np.ndarray)):
        t0s = [float(v) for v in np.asarray(t0s.cpu() if isinstance(t0s, torch.Tensor) else t0s).ravel()]
    if isinstance(t0s, (int, float)):
        raise TypeError(f"t0s must be a sequence of floats; got {t0s!r}. For one time use flipd(model, x, t0=...)")
    return _flipd_curve_impl(model, x, list(t0s), trace, n_probes, probe, seed, batch_size, progress, ad, extra_args, create_graph)


def select_t0(
    curve: Any,
    t0s: Sequence[float] | torch.Tensor | np.ndarray,
    *,
    sde: SDE | None = None,
    max_noise_ratio: float = 1.0,
    log_scale: bool = True,
    min_depth: float = 0.05,
    flat_tol: float = 0.5,
) -> float:
    """Pick ``t0`` at the knee of the (median) FLIPD curve (kneedle, Satopaa et al. 2011).

    The FLIPD paper (Kamkari et al., 2024) observes that FLIPD as a function of ``t0`` drops
    quickly from large values at tiny ``t0`` (where a learned score is unreliable) and then
    flattens into a plateau near the LID before decaying towards 0 at ``t0 -> 1``, and proposes
    reading the estimate at the knee of that curve. Rule used here:

    1. Aggregate the curve over points with the median (a 1-D ``curve`` is used as is).
       When ``sde`` is given, keep only the times with ``sigma(t0) / psi(t0) <= max_noise_ratio``
       (noise at most as large as unit-scale data; beyond it every curve decays towards 0 and
       that decay has a knee of its own that says nothing about the LID). If fewer than 3 times
       remain, all are kept.
    2. Put ``t0`` on a log scale (``log_scale=True``) and normalise both axes to [0, 1].
    3. Kneedle for a decreasing convex knee: the knee is the grid point where the normalised curve
       lies furthest *below* the chord joining its first and last points.
    4. If the curve never lies more than ``min_depth`` below its chord (no knee: e.g. an exact
       score, whose curve is flat at small ``t0`` and only falls later), return the smallest
       ``t0`` on the grid, where the plateau starts. The same holds when the curve has not
       descended by at least ``flat_tol`` (LID units) from its first value to the knee, or varies
       by less than ``flat_tol`` overall (flat: any ``t0`` gives the same estimate).

    Parameters
    ----------
    curve : array-like of shape (n, m) or (m,)
        FLIPD values, e.g. from :func:`flipd_curve`.
    t0s : sequence of float of length m
        Diffusion times of the columns (any order).
    sde : SDE or None, default=None
        The model's forward process (``model.sde``); enables the noise-ratio cut of step 1.
    max_noise_ratio : float, default=1.0
        Largest ``sigma(t0) / psi(t0)`` considered when ``sde`` is given (data assumed scaled to
        unit variance, as diffusion models expect).
    log_scale : bool, default=True
        Measure ``t0`` on a log axis.
    min_depth : float, default=0.05
        Minimal depth below the chord (in normalised units) to accept a knee.
    flat_tol : float, default=0.5
        Curves whose median varies by less than this over the grid have no knee.

    Returns
    -------
    float
        The selected ``t0``.

    See Also
    --------
    lidmem.estimators.t0.t0_from_training_data : the rule the audit's ``flipd_t0="auto"`` uses;
        on memorization audits the knee picked 0.001 on the digits UNet (AUROC 0.58) while the
        training-set rule reached 0.99 (``benchmarks/detection_scores.py``, docs/t0.md).
    """
    c = torch.as_tensor(np.asarray(curve.cpu() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64))
    t = np.asarray(t0s.cpu() if isinstance(t0s, torch.Tensor) else t0s, dtype=np.float64).ravel()
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] != t.size:
        raise ValueError(f"curve must have shape (n, {t.size}) or ({t.size},) to match t0s; got {tuple(c.shape)}")
    if t.size < 3:
        raise ValueError(f"t0s has {t.size} values; select_t0 needs at least 3 to find a knee")
    if not np.all(np.isfinite(t)) or np.any(t <= 0) or np.any(t > 1):
        raise ValueError("t0s must lie in (0, 1]")
    if not bool(torch.isfinite(c).all()):
        raise ValueError("curve contains NaN or infinite values")
    y = c.median(dim=0).values.numpy()
    order = np.argsort(t)
    t, y = t[order], y[order]
    if sde is not None:
        tt = torch.as_tensor(t, dtype=torch.float64)
        ratio = (sde.sigma(tt) / sde.psi(tt)).numpy()
        keep = ratio <= max_noise_ratio
        if keep.sum() >= 3:
            t, y = t[keep], y[keep]
    u = np.log(t) if log_scale else t
    if u[-1] == u[0]:
        raise ValueError("t0s must contain distinct values")
    un = (u - u[0]) / (u[-1] - u[0])
    span = y.max() - y.min()
    if span <= flat_tol:
        return float(t[0])
    yn = (y - y.min()) / span
    chord = yn[0] + (yn[-1] - yn[0]) * un
    depth = chord - yn
    k = int(np.argmax(depth))
    if depth[k] < min_depth or y[0] - y[k] < flat_tol:
        return float(t[0])
    return float(t[k])


class FLIPD(Estimator):
    """FLIPD estimator with the scikit-learn constructor contract.

    Parameters
    ----------
    model : callable
        Score model with an ``.sde`` attribute (see :func:`flipd`).
    t0 : float, "auto" or "knee", default=0.05 (:data:`lidmem.defaults.FLIPD_T0`)
        Diffusion time. ``"auto"`` is lidmem's one meaning of the word (as in ``lidmem audit`` and
        ``lidmem mmh``): the label-free rule of
        :func:`lidmem.estimators.t0.t0_from_training_data`, fitted with :meth:`fit` on the training
        data. ``"knee"`` computes the FLIPD curve on ``t0_grid`` for the points passed to
        :meth:`estimate` and picks its knee with :func:`select_t0` (a LID rule, not a
        memorization rule: see docs/t0.md).
    trace, n_probes, probe, seed, batch_size, progress, ad, extra_args
        As in :func:`flipd`.
    t0_grid : sequence of float or None, default=None
        Grid for ``t0="knee"`` (None: :func:`default_t0_grid`).

    Attributes
    ----------
    t0_ : float
        The diffusion time used by the last call to :meth:`estimate`.
    curve_ : Tensor of shape (n, m) or None
        The FLIPD curve computed by the last ``t0="knee"`` call.
    """

    def fit(self, train: Any) -> "FLIPD":
        """Resolve ``t0="auto"`` from the training data ``train`` (shape ``(n, ...)``, the model's
        input space); sets ``t0_``. A numeric ``t0`` is only checked. Returns ``self``."""
        from .t0 import resolve_t0

        if isinstance(self.t0, str) and self.t0 == "knee":
            raise ValueError("t0='knee' is chosen per call of estimate(); fit() resolves only t0='auto'")
        self.t0_ = resolve_t0(self.t0, _get_sde(self.model), train)
        return self

    def __init__(
        self,
        model: Any,
        *,
        t0: float | str = FLIPD_T0,
        trace: str = "exact",
        n_probes: int = 1,
        probe: str = "rademacher",
        seed: int | None = 0,
        batch_size: int | None = None,
        progress: bool | None = None,
        t0_grid: Sequence[float] | None = None,
        ad: str = "auto",
        extra_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.t0 = t0
        self.trace = trace
        self.n_probes = n_probes
        self.probe = probe
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress
        self.t0_grid = t0_grid
        self.ad = ad
        self.extra_args = extra_args

    def estimate(self, x: Any) -> torch.Tensor:
        """FLIPD of each point of ``x`` (shape ``(n,)``)."""
        kw = dict(trace=self.trace, n_probes=self.n_probes, probe=self.probe, seed=self.seed, batch_size=self.batch_size, progress=self.progress, ad=self.ad, extra_args=self.extra_args)
        if isinstance(self.t0, str):
            if self.t0 == "auto":
                if getattr(self, "t0_", None) is None:
                    raise ValueError("t0='auto' sets the noise scale from the training data: call .fit(train) first "
                                     "(or use t0='knee' for the knee of the FLIPD curve, or a number)")
                self.curve_ = None
                return flipd(self.model, x, self.t0_, **kw)
            if self.t0 != "knee":
                raise ValueError(f"t0={self.t0!r} must be a float in (0, 1], 'auto' (after fit) or 'knee'")
            grid = list(self.t0_grid) if self.t0_grid is not None else default_t0_grid()
            curve = flipd_curve(self.model, x, grid, **kw)
            self.curve_ = curve
            self.t0_ = select_t0(curve, grid, sde=_get_sde(self.model))
            return curve[:, grid.index(self.t0_)]
        self.curve_ = None
        self.t0_ = check_t0(self.t0, "t0")
        return flipd(self.model, x, self.t0_, **kw)

