"""The rank cut shared by the spectral LID estimators: how many values of a spectrum are non-zero.

The normal bundle (rank of the score matrix), the Jacobian rank (rank of ``grad G(z)``) and local
PCA (number of explained variances) all count the "non-zero" entries of a descending spectrum
``s_1 >= ... >= s_r >= 0``, one row per point (shape ``(n, r)``). The cut is one of
(:data:`THRESHOLDS`, checked by :func:`check_threshold`):

- ``"gap"``: per row, the largest gap of the spectrum (:func:`gap_rank`). With
  ``log=False`` gaps are differences ``s_i - s_{i+1}``; with ``log=True`` they are ratios
  ``log s_i - log s_{i+1}``, scale-free, so a spectrum spread over orders of magnitude (singular
  values from 1 to 1e-3) is not cut after its first value.
- ``"percentile"``: the paper's global rule, one ``tau`` = the ``percentile``-th percentile of all
  values of all rows (:func:`percentile_threshold`); it always drops about ``percentile`` percent
  of all values, so it undercounts spectra that are all non-zero.
- a float ``tau``: a fixed threshold.

Values at or below a numerical floor never count (:func:`numerical_rank_floor`: the
``numpy.linalg.matrix_rank`` tolerance ``max(shape) * eps * s_max`` of the matrix each row came
from), so an exactly rank-deficient matrix gives its exact rank under every rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._validation import check_choice

__all__ = ["THRESHOLDS", "check_threshold", "numerical_rank_floor", "percentile_threshold", "count_above", "gap_rank", "cut_rank"]

THRESHOLDS: tuple[str, ...] = ("gap", "percentile")


def check_threshold(threshold: Any, name: str = "threshold") -> str | float:
    """Validate a rank-cut rule: ``"gap"``, ``"percentile"`` or a finite float ``>= 0``."""
    if isinstance(threshold, str):
        return check_choice(threshold, name, THRESHOLDS)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be 'gap', 'percentile' or a float >= 0; got {threshold!r}")
    if not (float(threshold) >= 0 and math.isfinite(float(threshold))):
        raise ValueError(f"{name}={threshold!r} must be a finite float >= 0 (or 'gap' / 'percentile')")
    return float(threshold)


def numerical_rank_floor(sv: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-matrix numerical-rank tolerance ``max(shape) * eps * s_max`` (as ``numpy.linalg.matrix_rank``).

    ``sv`` has shape ``(n, r)`` (singular values, descending); ``dtype`` is the precision the
    matrix was computed in (its machine epsilon is used). Returns shape ``(n, 1)``.
    """
    return max(shape) * torch.finfo(dtype).eps * sv[:, :1]


def percentile_threshold(sv: torch.Tensor, percentile: float = 10.0) -> float:
    """The paper's global threshold: the ``percentile``-th percentile of all values of ``sv``."""
    return float(torch.quantile(sv.flatten().double().cpu(), percentile / 100.0))


def count_above(sv: torch.Tensor, tau: float | torch.Tensor, floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Number of values per row of ``sv`` (shape ``(n, r)``) above ``tau`` and above ``floor``.

    ``tau`` and ``floor`` are floats or tensors broadcasting against ``(n, 1)`` (per-row
    thresholds). NaN entries never count. Returns int64, shape ``(n,)``.
    """
    tau_t = torch.as_tensor(tau, dtype=sv.dtype, device=sv.device)
    floor_t = torch.as_tensor(floor, dtype=sv.dtype, device=sv.device)
    return ((sv > tau_t) & (sv > floor_t)).sum(-1).to(torch.int64)


def gap_rank(
    sv: torch.Tensor,
    reference: float | torch.Tensor | None = None,
    *,
    log: bool = False,
    floor: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Rank by the largest gap of each descending row of ``sv``.

    Per row, with ``s_0 = reference`` prepended (when given) and ``s_{r+1} = floor`` appended,
    ``rank = argmax_i gap(s_i, s_{i+1})`` over ``i = 0..r`` (``i = 1..r`` without a reference),
    where ``gap(a, b) = a - b`` (``log=False``) or ``log a - log b`` (``log=True``, values below
    ``floor`` are raised to it). The prepended reference (the size of a value that is *not*
    counted) makes rank 0 reachable, the appended floor makes the full rank ``r`` reachable.
    With ``log=True`` a row whose largest value is at or below ``floor`` has rank 0.

    Parameters
    ----------
    sv : Tensor of shape (n, r)
        Singular values, descending along the last axis.
    reference : float, Tensor of shape (n,) or None
    log : bool, default=False
    floor : float or Tensor broadcasting against (n, 1), default=0.0
        Must be > 0 where the row is not all zero when ``log=True``.

    Returns
    -------
    Tensor of shape (n,), int64
    """
    n = sv.shape[0]
    parts = []
    if reference is not None:
        parts.append(torch.as_tensor(reference, dtype=sv.dtype, device=sv.device).expand(n)[:, None])
    tail = torch.as_tensor(floor, dtype=sv.dtype, device=sv.device).expand(n, 1)
    ext = torch.cat([*parts, sv, tail], dim=1)
    if log:
        tiny = torch.finfo(sv.dtype).tiny
        ext = torch.log(torch.maximum(ext, tail).clamp_min(tiny))
    gaps = ext[:, :-1] - ext[:, 1:]
    rank = gaps.argmax(dim=1).to(torch.int64) + (0 if reference is not None else 1)
    if log:
        rank = torch.where(sv[:, 0] <= tail[:, 0], torch.zeros_like(rank), rank)
    return rank


def cut_rank(
    sv: torch.Tensor,
    threshold: str | float,
    *,
    shape: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    percentile: float = 10.0,
    reference: float | torch.Tensor | None = None,
    log_gap: bool = False,
) -> torch.Tensor:
    """Rank of each row of singular values ``sv`` (shape ``(n, r)``, descending) under a rank-cut rule.

    Parameters
    ----------
    sv : Tensor of shape (n, r)
        Singular values of ``n`` matrices of shape ``shape`` computed in ``dtype``.
    threshold : {"gap", "percentile"} or float
        The rule (module docstring). Values at or below the numerical floor
        (:func:`numerical_rank_floor`) never count; with ``"gap"`` and ``log_gap=False`` the floor
        is 0 (the normal bundle's rule, kept as it was).
    shape : (int, int)
        Shape of each matrix (sets the numerical floor).
    dtype : torch.dtype
        Precision the matrices were computed in.
    percentile : float, default=10.0
        For ``threshold="percentile"``.
    reference, log_gap
        For ``threshold="gap"``, as in :func:`gap_rank`.

    Returns
    -------
    Tensor of shape (n,), int64
    """
    threshold = check_threshold(threshold)
    floor = numerical_rank_floor(sv, shape, dtype)
    if threshold == "gap":
        return gap_rank(sv, reference, log=log_gap, floor=floor if log_gap else 0.0)
    tau = percentile_threshold(sv, percentile) if threshold == "percentile" else float(threshold)
    return count_above(sv, tau, floor)
