"""Normal-bundle (NB) estimate of LID_theta (eq. 7-8; Stanczuk et al., 2024).

For a point ``x``, draw ``k`` noisy copies with the forward SDE,

    x_t0^(i) = psi(t0) x + sigma(t0) eps_i,     eps_i ~ N(0, I),   i = 1..k,

and stack their scores as the columns of ``S = [s(x_t0^(1), t0), ..., s(x_t0^(k), t0)]`` (``d x k``).
For small ``t0`` the scores point back to the model's manifold, so they span its normal space:
``LID(x) = d - rank S``, the rank being the number of singular values above a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .._validation import ArgumentError, check_points, check_positive_int, check_probability, check_t0, make_generator
from .._validation import as_model_dtype
from ..defaults import NB_T0
from ..diffusion.score import check_extra_args, conditioning_rows, model_call_errors, time_tensor
from ..utils import chunk_slices, progress as _progress
from ._rank import THRESHOLDS, count_above, cut_rank, gap_rank, numerical_rank_floor, percentile_threshold  # noqa: F401 (re-exported)
from ._rank import check_threshold as _check_threshold
from .base import Estimator
from .flipd import _get_sde

__all__ = ["normal_bundle", "NormalBundle", "count_above", "gap_rank", "percentile_threshold"]

#: Rows (points x noisy copies) per model call when ``batch_size`` is None.
_DEFAULT_ROWS = 4096


def normal_bundle_singular_values(
    model: Any,
    x: Any,
    t0: float = NB_T0,
    *,
    n_scores: int | None = None,
    seed: int | torch.Generator | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Singular values of the score matrix ``S`` of each point, descending, shape ``(n, min(d, k))``
    (float64). Arguments as in :func:`normal_bundle`."""
    x = as_model_dtype(x, model)  # boundary rule: float64 NumPy input meets a float32 network
    sde = _get_sde(model)
    x = check_points(x, "x")
    t0 = check_t0(t0, "t0")
    n, shape = x.shape[0], tuple(x.shape[1:])
    d = math.prod(shape)
    k = 4 * d if n_scores is None else check_positive_int(n_scores, "n_scores")
    if batch_size is None:
        batch_size = max(1, _DEFAULT_ROWS // k)
    else:
        batch_size = check_positive_int(batch_size, "batch_size")
    args = check_extra_args(extra_args)
    gen = make_generator(seed, device=x.device)
    tt = torch.tensor(t0, dtype=torch.float64)
    psi, sigma = float(sde.psi(tt)), float(sde.sigma(tt))
    out = torch.empty(n, min(d, k), dtype=torch.float64, device=x.device)
    slices = list(chunk_slices(n, batch_size))
    with torch.no_grad(), model_call_errors(args, x):
        for sl in _progress(slices, total=len(slices), desc="normal bundle", disable=None if progress is None else not progress):
            xc = x[sl]
            b = xc.shape[0]
            eps = torch.randn((b, k, *shape), generator=gen, dtype=x.dtype, device=x.device)
            # forward SDE from x itself: x_t0 = psi(t0) x + sigma(t0) eps (never from the origin)
            xt = psi * xc[:, None] + sigma * eps
            rows = xt.reshape(b * k, *shape)
            s = model(rows, time_tensor(t0, rows), **conditioning_rows(args, n, sl, k))
            if s.shape != (b * k, *shape):
                raise ValueError(f"model returned shape {tuple(s.shape)} for input shape {(b * k, *shape)}; it must return the score")
            S = s.reshape(b, k, d).double()  # rows are the score vectors (S^T of the paper)
            bad = ~torch.isfinite(S).reshape(b, -1).all(dim=1)
            if bool(bad.any()):
                raise ArgumentError(
                    f"model returned NaN or infinite scores at {int(bad.sum())} of {b} points (first: x[{sl.start + int(bad.int().argmax())}]) "
                    f"at t0={t0}; the score model has to be finite there", argument="model")
            out[sl] = torch.linalg.svdvals(S)
    return out


def normal_bundle(
    model: Any,
    x: Any,
    t0: float = NB_T0,
    *,
    n_scores: int | None = None,
    seed: int | torch.Generator | None = 0,
    threshold: str | float = "gap",
    percentile: float = 10.0,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_singular_values: bool = False,
    extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Normal-bundle LID estimate ``d - rank S`` at each point (eq. 7-8).

    Parameters
    ----------
    model : callable
        Score model ``model(x, t) -> s(x, t)`` with an ``.sde`` attribute (see
        :func:`lidmem.estimators.flipd`); ``t`` is continuous time in [0, 1] of shape ``(m,)``.
    x : Tensor of shape (n, d) or (n, c, h, w)
        Clean points (time 0); ``d = prod(x.shape[1:])``. Floating input is cast to the dtype of
        ``model``'s parameters first (e.g. a float64 NumPy array for a float32 network).
    t0 : float, default=0.05 (:data:`lidmem.defaults.NB_T0`)
        Diffusion time in (0, 1] of the noisy copies (the paper used 0.1 on CIFAR-10).
    n_scores : int or None, default=None
        Number ``k`` of noisy copies per point; None means ``4 d`` (the paper's recommendation).
        With ``k < d`` the rank is at most ``k`` and the estimate at least ``d - k``.
    seed : int, torch.Generator or None, default=0
        Seed of the noise. Deterministic for a given ``seed`` and ``batch_size``.
    threshold : {"gap", "percentile"} or float, default="gap"
        How singular values are counted as non-zero:

        - ``"gap"``: per point, the largest gap of the descending singular values with the
          reference ``sqrt(k) / sigma(t0)`` (the expected singular value of a normal direction,
          where the score is ``-eps / sigma``) prepended and 0 appended, so any rank 0..min(d, k)
          is reachable (:func:`gap_rank`).
        - ``"percentile"``: the paper's rule: one global ``tau`` = ``percentile``-th percentile of
          all singular values of all points in ``x``. It assumes that fewer than ``percentile``
          percent of all singular values are tangent directions; on data of mixed dimension it
          can count tangent directions as normal.
        - float ``tau``: a fixed threshold.

        Singular values below the numerical-rank floor ``max(d, k) * eps * s_max`` never count.
    percentile : float, default=10.0
        Percentile for ``threshold="percentile"``, in [0, 100].
    batch_size : int or None, default=None
        Points per chunk (None: ``max(1, 4096 // k)``).
    progress : bool or None, default=None
        Progress bar over chunks.
    return_singular_values : bool, default=False
        Also return the singular values, shape ``(n, min(d, k))``, descending.
    extra_args : mapping or None, default=None
        Conditioning passed as ``model(x, t, **extra_args)``; tensors whose first dimension is
        ``n`` are per point and repeated for the ``k`` noisy copies (as in
        :func:`lidmem.estimators.flipd`).

    Returns
    -------
    lid : Tensor of shape (n,), int64
        ``d - rank S``, on ``x``'s device.
    singular_values : Tensor of shape (n, min(d, k)), float64
        Only when ``return_singular_values=True``.
    """
    x = as_model_dtype(x, model)  # boundary rule: float64 NumPy input meets a float32 network
    threshold = _check_threshold(threshold)
    percentile = check_probability(percentile, "percentile", low=0.0, high=100.0)
    sv = normal_bundle_singular_values(model, x, t0, n_scores=n_scores, seed=seed, batch_size=batch_size, progress=progress, extra_args=extra_args)
    xv = check_points(x, "x")
    d = math.prod(xv.shape[1:])
    k = 4 * d if n_scores is None else int(n_scores)
    sigma = float(_get_sde(model).sigma(torch.tensor(float(t0), dtype=torch.float64)))
    rank = cut_rank(sv, threshold, shape=(d, k), dtype=xv.dtype, percentile=percentile, reference=math.sqrt(k) / sigma)
    lid = d - rank
    return (lid, sv) if return_singular_values else lid


class NormalBundle(Estimator):
    """Normal-bundle estimator with the scikit-learn constructor contract.

    Parameters
    ----------
    model : callable
        Score model with an ``.sde`` attribute.
    t0, n_scores, seed, threshold, percentile, batch_size, progress, extra_args
        As in :func:`normal_bundle`.

    Attributes
    ----------
    singular_values_ : Tensor of shape (n, min(d, k))
        Singular values from the last :meth:`estimate` call.
    """

    def __init__(
        self,
        model: Any,
        *,
        t0: float = NB_T0,
        n_scores: int | None = None,
        seed: int | None = 0,
        threshold: str | float = "gap",
        percentile: float = 10.0,
        batch_size: int | None = None,
        progress: bool | None = None,
        extra_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.t0 = t0
        self.n_scores = n_scores
        self.seed = seed
        self.threshold = threshold
        self.percentile = percentile
        self.batch_size = batch_size
        self.progress = progress
        self.extra_args = extra_args

    def estimate(self, x: Any) -> torch.Tensor:
        """Normal-bundle LID of each point of ``x`` (int64, shape ``(n,)``)."""
        lid, sv = normal_bundle(
            self.model, x, self.t0, n_scores=self.n_scores, seed=self.seed, threshold=self.threshold, percentile=self.percentile,
            batch_size=self.batch_size, progress=self.progress, return_singular_values=True, extra_args=self.extra_args,
        )
        self.singular_values_ = sv
        return lid

