"""Jacobian-rank LID_theta of a decoder or GAN generator (App. B.3, C.1).

For a generator ``G: R^{d'} -> R^d`` pushing a latent ``z`` to ``x = G(z)``, the model's manifold
near ``x`` is the image of ``G``; its dimension is ``rank grad G(z)``. Numerically the Jacobian
has full rank, so the rank is a cut of its singular values (:mod:`lidmem.estimators._rank`, shared
with the normal bundle and local PCA):

- ``"gap"`` (default): per latent, the largest ratio ``s_i / s_{i+1}`` of consecutive singular
  values, with the numerical-rank floor ``max(d, d') * eps * s_max`` appended so that the full
  rank is reachable. Exact on decoders of known rank, full-rank spectra spread over orders of
  magnitude included (``tests/test_jacobian_rank.py``).
- ``"percentile"``: the paper's rule, ``tau`` = the 10th percentile of all singular values over
  the generated set. It drops about a tenth of all singular values whatever the true rank
  (on an injective R^5 -> R^16 decoder, mean rank 4.5 instead of 5), but its ``tau`` is global,
  so latents where ``G`` is nearly constant (a generator collapsed onto a memorized image) get
  a low rank: it is the rule that detects memorization (the digits demo's GAN).
- a float ``tau``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._validation import ArgumentError, as_model_dtype, check_choice, check_points, check_positive_int, check_probability
from ..utils import chunk_slices, progress as _progress
from ._rank import check_threshold, cut_rank, percentile_threshold
from .base import Estimator

__all__ = ["jacobian_rank", "jacobian_singular_values", "JacobianRank"]

MODES: tuple[str, ...] = ("auto", "forward", "reverse")

#: Jacobian entries (latents x output size x latent size) per chunk when ``batch_size`` is None.
_DEFAULT_ELEMENTS = 2**24


def _singular_values(
    generator: Callable[[torch.Tensor], torch.Tensor],
    z: Any,
    *,
    mode: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, int, torch.dtype]:
    """Singular values (float64, ``(n, min(d, d'))``), output size ``d`` and output dtype."""
    if not callable(generator):
        raise TypeError(f"generator must be callable as generator(z) -> x; got {type(generator).__name__}")
    z = check_points(as_model_dtype(z, generator), "z")
    check_choice(mode, "mode", MODES)
    zshape = tuple(z.shape[1:])
    dz = math.prod(zshape)
    latent_dim = getattr(generator, "latent_dim", None)
    if isinstance(latent_dim, int) and not isinstance(latent_dim, bool) and zshape != (latent_dim,):
        raise ArgumentError(f"z has shape {tuple(z.shape)} but the generator takes latents of shape (n, {latent_dim}) (its latent_dim)", argument="z")
    try:
        with torch.no_grad():
            probe = generator(z[:1])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ArgumentError(
            f"generator(z[:1]) failed for z of shape {tuple(z.shape)}: {' '.join(str(exc).split())}; "
            "z must be latents of the shape the generator takes", argument="z") from exc
    if not isinstance(probe, torch.Tensor) or probe.ndim < 1 or probe.shape[0] != 1:
        raise ValueError(f"generator(z[:1]) must return a tensor of shape (1, ...); got {getattr(probe, 'shape', type(probe))}")
    if not bool(torch.isfinite(probe).all()):
        raise ArgumentError("generator(z[:1]) returned NaN or infinite values; the generator's output must be finite "
                            "(check its weights and z)", argument="generator")
    dx = math.prod(probe.shape[1:])
    if batch_size is None:
        batch_size = max(1, _DEFAULT_ELEMENTS // max(1, dx * dz))
    else:
        batch_size = check_positive_int(batch_size, "batch_size")
    if mode == "auto":
        mode = "forward" if dz <= dx else "reverse"

    def single(zi: torch.Tensor) -> torch.Tensor:
        return generator(zi[None])[0].reshape(-1)

    jac = torch.func.jacfwd(single) if mode == "forward" else torch.func.jacrev(single)
    batched = torch.func.vmap(jac)
    n = z.shape[0]
    out = torch.empty(n, min(dx, dz), dtype=torch.float64, device=z.device)
    slices = list(chunk_slices(n, batch_size))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for sl in _progress(slices, total=len(slices), desc="Jacobian rank", disable=None if progress is None else not progress):
        with sdpa_kernel(SDPBackend.MATH):
            J = batched(z[sl]).reshape(sl.stop - sl.start, dx, dz)
        bad = ~torch.isfinite(J).reshape(len(J), -1).all(dim=1)
        if bool(bad.any()):
            raise ArgumentError(
                f"the generator's Jacobian holds NaN or infinite values at {int(bad.sum())} of {len(J)} latents "
                f"(first: z[{sl.start + int(bad.int().argmax())}]); the generator must be differentiable with finite outputs",
                argument="generator")
        out[sl] = torch.linalg.svdvals(J.detach().double())
    return out, dx, probe.dtype


def jacobian_singular_values(
    generator: Callable[[torch.Tensor], torch.Tensor],
    z: Any,
    *,
    mode: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Singular values of ``grad G(z)`` for each latent, descending, shape ``(n, min(d, d'))`` (float64).

    Parameters
    ----------
    generator : callable
        ``generator(z) -> x`` mapping a batch ``(m, d')`` (or ``(m, ...)``) of latents to outputs
        ``(m, ...)``; each output must depend only on its own latent (no batch statistics:
        put BatchNorm modules in ``eval()`` mode).
    z : Tensor of shape (n, d') or (n, ...)
        Latents, on the generator's device.
    mode : {"auto", "forward", "reverse"}, default="auto"
        ``torch.func.jacfwd`` (``d'`` JVPs) or ``jacrev`` (``d`` VJPs) under ``vmap``; "auto" picks
        forward mode when the latent is not larger than the output.
    batch_size : int or None, default=None
        Latents per chunk; None bounds each chunk's Jacobians to about 16M numbers.
    progress : bool or None, default=None
        Progress bar over chunks.
    """
    return _singular_values(generator, z, mode=mode, batch_size=batch_size, progress=progress)[0]


def jacobian_rank(
    generator: Callable[[torch.Tensor], torch.Tensor],
    z: Any,
    threshold: str | float = "gap",
    *,
    percentile: float = 10.0,
    mode: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
    return_singular_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LID of a generator's manifold at ``G(z)``: the rank of ``grad G(z)`` under a rank-cut rule.

    Parameters
    ----------
    generator : callable
        ``generator(z) -> x`` with ``z`` of shape ``(m, d')`` and ``x`` of shape ``(m, ...)``
        (see :func:`jacobian_singular_values`).
    z : Tensor of shape (n, d')
        Latents of the points to score.
    threshold : {"gap", "percentile"} or float, default="gap"
        - ``"gap"``: per latent, the largest gap of ``log s_1 >= ... >= log s_r`` with the
          numerical-rank floor appended (the largest ratio of consecutive singular values). An
          estimate of the rank of each Jacobian on its own; exact on decoders of known rank.
        - ``"percentile"``: the paper's rule, ``tau`` = the ``percentile``-th percentile of all
          singular values of all latents in ``z`` (so the result depends on the whole set
          passed). It drops about ``percentile`` percent of all singular values, so it
          undercounts full-rank Jacobians; its global scale is what makes nearly constant
          regions of ``G`` (memorization) come out with low rank.
        - float ``tau``: singular values above ``tau`` count.

        Singular values at or below the numerical-rank floor ``max(d, d') * eps * s_max`` (eps
        of the generator's output dtype) never count, so exactly rank-deficient Jacobians give
        their exact rank under every rule.
    percentile : float, default=10.0
        Percentile in [0, 100] used when ``threshold="percentile"``.
    mode, batch_size, progress
        As in :func:`jacobian_singular_values`.
    return_singular_values : bool, default=False
        Also return the singular values (float64, shape ``(n, min(d, d'))``, descending).

    Returns
    -------
    lid : Tensor of shape (n,), int64
    singular_values : Tensor of shape (n, min(d, d'))
        Only when ``return_singular_values=True``.

    Examples
    --------
    >>> import torch
    >>> from lidmem.estimators import jacobian_rank
    >>> W = torch.randn(10, 2) @ torch.randn(2, 5)          # rank-2 linear decoder R^5 -> R^10
    >>> jacobian_rank(lambda z: z @ W.T, torch.randn(3, 5)).tolist()
    [2, 2, 2]
    """
    threshold = check_threshold(threshold)
    percentile = check_probability(percentile, "percentile", low=0.0, high=100.0)
    sv, dx, dtype = _singular_values(generator, z, mode=mode, batch_size=batch_size, progress=progress)
    dz = math.prod(check_points(z, "z").shape[1:])
    lid = cut_rank(sv, threshold, shape=(dx, dz), dtype=dtype, percentile=percentile, log_gap=True)
    return (lid, sv) if return_singular_values else lid


class JacobianRank(Estimator):
    """Jacobian-rank estimator with the scikit-learn constructor contract.

    Parameters
    ----------
    generator : callable
        ``generator(z) -> x``.
    threshold, percentile, mode, batch_size, progress
        As in :func:`jacobian_rank`.

    Attributes
    ----------
    singular_values_ : Tensor of shape (n, min(d, d'))
        Singular values from the last :meth:`estimate` call.
    threshold_ : float or None
        The global ``tau`` used by the last call (None for ``threshold="gap"``, which cuts each
        latent's spectrum at its own largest gap).
    """

    def __init__(
        self,
        generator: Callable[[torch.Tensor], torch.Tensor],
        *,
        threshold: str | float = "gap",
        percentile: float = 10.0,
        mode: str = "auto",
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.generator = generator
        self.threshold = threshold
        self.percentile = percentile
        self.mode = mode
        self.batch_size = batch_size
        self.progress = progress

    def estimate(self, z: Any) -> torch.Tensor:
        """Jacobian-rank LID at ``G(z)`` for each latent (int64, shape ``(n,)``)."""
        lid, sv = jacobian_rank(
            self.generator, z, self.threshold, percentile=self.percentile, mode=self.mode,
            batch_size=self.batch_size, progress=self.progress, return_singular_values=True,
        )
        self.singular_values_ = sv
        if self.threshold == "gap":
            self.threshold_ = None
        else:
            self.threshold_ = percentile_threshold(sv, self.percentile) if self.threshold == "percentile" else float(self.threshold)
        return lid

