"""Explained-variance spectra of neighbourhoods and counts above a threshold: the pure functions
behind :class:`lidmem.estimators.local_pca.LocalPCA` (batched on one thread per part, from
gathered neighbourhoods or from the ``m x m`` centred Gram matrix).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..utils import chunk_slices
from ._rank import count_above, gap_rank

__all__ = ["neighbourhood_spectra", "gram_spectra", "pairwise_distance_percentile", "batched_eigvalsh", "count_eigenvalues_above", "gram_counts"]


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)``; restore the previous count afterwards."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batched_eigvalsh(a: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh(a)`` of a batch ``(b, m, m)``, each matrix on a single thread.

    With torch 2.13 (MKL) and 2 threads, the batched kernel takes 260-560 ms per 101 x 101
    matrix instead of about 1 ms on one thread. Here torch runs on one thread for the call and
    the batch is split into ``torch.get_num_threads()`` parts solved in parallel by Python
    threads (torch releases the GIL), so the cores are still used. Same values as eigvalsh.
    """
    return _one_thread_per_part(torch.linalg.eigvalsh, a)


def _one_thread_per_part(fn: Any, a: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    """``fn(a, *rest)`` on batches: torch on one thread, the batch split over parallel Python threads."""
    if a.device.type != "cpu" or a.ndim < 3:
        return fn(a, *rest)
    parts = min(torch.get_num_threads(), a.shape[0] // 8)
    with _torch_threads(1):
        if parts <= 1:
            return fn(a, *rest)
        pieces = [torch.tensor_split(t, parts) for t in (a, *rest)]
        with ThreadPoolExecutor(parts) as pool:
            return torch.cat(list(pool.map(fn, *pieces)))


def count_eigenvalues_above(a: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Number of eigenvalues ``> tau`` of each symmetric matrix, without computing them.

    Sylvester's law of inertia: ``A - tau I = L D L^T`` (Bunch-Kaufman, :func:`torch.linalg.ldl_factor_ex`)
    has as many positive eigenvalues as the block-diagonal ``D`` (1 x 1 pivots: their sign;
    2 x 2 pivots: the signs of their determinant and trace). About a quarter of the flops of an
    eigenvalue decomposition (LAPACK ``sytrf`` vs ``sytrd``); as exact as ``eigvalsh`` except for
    eigenvalues within rounding (~1e-16 ||A||) of ``tau``. Run on one thread per batch part, as
    :func:`batched_eigvalsh`.

    Parameters
    ----------
    a : Tensor of shape (b, m, m), symmetric
    tau : float or Tensor of shape (b,)

    Returns
    -------
    Tensor of shape (b,), int64
    """
    b, m, _ = a.shape
    t = torch.as_tensor(tau, dtype=a.dtype, device=a.device).expand(b)
    return _one_thread_per_part(_count_above_ldl, a, t)


def _count_above_ldl(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    b, m, _ = a.shape
    shifted = a - tau[:, None, None] * torch.eye(m, dtype=a.dtype, device=a.device)
    ld, piv, _ = torch.linalg.ldl_factor_ex(shifted)
    d = torch.diagonal(ld, dim1=1, dim2=2)
    two = piv < 0  # LAPACK convention: a 2 x 2 block occupies two consecutive negative pivots
    # position inside each run of negative pivots: blocks start at even offsets
    idx = torch.arange(m, device=a.device).expand(b, m)
    last_pos = torch.cummax(torch.where(two, torch.full_like(idx, -1), idx), dim=1).values
    start = two & ((idx - last_pos - 1) % 2 == 0)
    ones = ((d > 0) & ~two).sum(dim=1)
    if m < 2:
        return ones.to(torch.int64)
    s = start[:, :-1]
    a11, a22, a21 = d[:, :-1], d[:, 1:], torch.diagonal(ld, offset=-1, dim1=1, dim2=2)
    det = a11 * a22 - a21 * a21
    pos = torch.where(det < 0, 1, torch.where(det > 0, 2 * (a11 > 0).long(), (a11 + a22 > 0).long()))
    return (ones + (pos * s).sum(dim=1)).to(torch.int64)


def pairwise_distance_percentile(
    x: torch.Tensor, percentile: float = 10.0, *, max_pairs: int = 1_000_000, seed: int = 0
) -> float:
    """The ``percentile``-th percentile of the Euclidean distances between all pairs ``i < j``.

    Exact (``torch.nn.functional.pdist``) when ``n (n - 1) / 2 <= max_pairs``; otherwise estimated
    from ``max_pairs`` pairs ``(i, j), i != j`` drawn uniformly with replacement under ``seed``
    (the standard error of a percentile from 1e6 pairs is far below the spread of distances).

    Parameters
    ----------
    x : Tensor of shape (n, D)
    percentile : float in [0, 100]
    max_pairs : int
    seed : int
    """
    n = x.shape[0]
    n_pairs = n * (n - 1) // 2
    if n_pairs == 0:
        return 0.0
    if n_pairs <= max_pairs:
        # exact differences row by row (no |a|^2 + |b|^2 - 2ab cancellation: duplicates give exactly 0)
        chunks = [torch.linalg.vector_norm(x[i + 1 :] - x[i], dim=1) for i in range(n - 1)]
        d = torch.cat(chunks)
    else:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        i = torch.randint(0, n, (max_pairs,), generator=g)
        j = torch.randint(0, n - 1, (max_pairs,), generator=g)
        j = j + (j >= i).long()  # uniform over j != i
        i, j = i.to(x.device), j.to(x.device)
        d = torch.cat([torch.linalg.vector_norm(x[i[sl]] - x[j[sl]], dim=1) for sl in chunk_slices(max_pairs, 65536)])
    return float(np.percentile(d.cpu().double().numpy(), percentile))


def neighbourhood_spectra(neighbourhoods: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Explained variances of the PCA of each neighbourhood, in decreasing order.

    Parameters
    ----------
    neighbourhoods : Tensor of shape (b, m, D)
        ``b`` neighbourhoods of ``m`` points each.
    mask : bool Tensor of shape (b, m), optional
        Which points belong to each neighbourhood (all by default); masked points are ignored.

    Returns
    -------
    Tensor of shape (b, min(m - 1, D))
        Explained variances (covariance eigenvalues, ``ddof=1``) in decreasing order; entries
        beyond ``min(m_i - 1, D)`` for a neighbourhood of ``m_i`` points are NaN (zero by
        construction, not measured). A neighbourhood of one point has none.
    """
    b, m, D = neighbourhoods.shape
    if mask is None:
        mask = torch.ones(b, m, dtype=torch.bool, device=neighbourhoods.device)
    if m <= D:  # m x m Gram matrix: same non-zero eigenvalues as the D x D covariance
        return gram_spectra(neighbourhoods @ neighbourhoods.transpose(1, 2), mask, D)
    w = mask.to(neighbourhoods.dtype)
    count = w.sum(dim=1)
    mean = (neighbourhoods * w[..., None]).sum(dim=1) / count.clamp_min(1)[:, None]
    yc = (neighbourhoods - mean[:, None, :]) * w[..., None]
    ev = batched_eigvalsh(yc.transpose(1, 2) @ yc).flip(-1)  # (b, D, D) covariance, decreasing
    return _finish_spectra(ev, count, m, D)


def gram_spectra(gram: torch.Tensor, mask: torch.Tensor, n_features: int) -> torch.Tensor:
    """Explained variances of each neighbourhood from its *uncentred* Gram matrix.

    With ``G_ij = <y_i, y_j>`` over the ``m_i`` unmasked points, the centred Gram matrix is
    ``G - a 1^T - 1 a^T + c`` (``a`` the row means, ``c`` the grand mean); its non-zero eigenvalues
    divided by ``m_i - 1`` are the covariance's. Costs ``O(m^3)`` per neighbourhood whatever ``D``.

    Parameters
    ----------
    gram : Tensor of shape (b, m, m)
    mask : bool Tensor of shape (b, m)
    n_features : int
        Ambient dimension ``D`` (caps the number of non-zero eigenvalues).

    Returns
    -------
    Tensor of shape (b, min(m - 1, D)), as :func:`neighbourhood_spectra`.
    """
    m = gram.shape[1]
    g, count = _centre_gram(gram, mask)
    ev = batched_eigvalsh(g).flip(-1)
    return _finish_spectra(ev, count, m, n_features)


def gram_counts(gram: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Number of explained variances ``> threshold`` of each neighbourhood, from its uncentred Gram
    matrix, by :func:`count_eigenvalues_above` (no eigendecomposition). Same as counting the
    entries of :func:`gram_spectra` above ``threshold`` for any ``threshold > 0``.

    Parameters
    ----------
    gram : Tensor of shape (b, m, m)
    mask : bool Tensor of shape (b, m)
    threshold : float > 0

    Returns
    -------
    Tensor of shape (b,), int64
    """
    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r} must be > 0 (zero eigenvalues by construction would count)")
    g, count = _centre_gram(gram, mask)
    return count_eigenvalues_above(g, threshold * (count - 1).clamp_min(1))


def _centre_gram(gram: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred Gram matrices of the unmasked points (masked rows/columns zero) and their counts."""
    w = mask.to(gram.dtype)
    count = w.sum(dim=1)
    cnt = count.clamp_min(1)
    full = bool(mask.all())
    if full:
        g = gram.clone()
    else:
        ww = w[:, :, None] * w[:, None, :]
        g = gram * ww
    a = g.sum(dim=2) / cnt[:, None]  # (b, m): mean over the neighbourhood of <y_i, y_l>
    c = (a * w).sum(dim=1) / cnt  # (b,): <mean, mean>
    g.sub_(a[:, :, None]).sub_(a[:, None, :]).add_(c[:, None, None])
    if not full:
        g.mul_(ww)
    return g, count


def _finish_spectra(ev: torch.Tensor, count: torch.Tensor, m: int, n_features: int) -> torch.Tensor:
    ev = ev / (count - 1).clamp_min(1)[:, None]
    r = min(m - 1, n_features)
    n_valid = torch.clamp(count - 1, max=float(n_features))
    ev = ev[:, :r].clamp_min(0)
    idx = torch.arange(r, device=ev.device)[None, :]
    return torch.where(idx < n_valid[:, None], ev, torch.full_like(ev, float("nan")))


def _count_above(spectra: torch.Tensor, tau: float | str, alpha: float, floor: float) -> torch.Tensor:
    """LID = number of explained variances above the threshold (NaN entries never count)."""
    if tau == "gap":
        return gap_rank(torch.nan_to_num(spectra, nan=0.0), log=True, floor=max(float(floor), torch.finfo(spectra.dtype).tiny))
    return count_above(spectra, alpha * spectra[:, :1] if tau == "fo" else float(tau), floor)
