"""LID_* by local PCA (Fukunaga & Olsen, 1971) with the paper's two modifications (App. B.2, C.1).

For a point x, take its k nearest points of a reference data set, run PCA on that neighbourhood
and count the explained variances above a threshold tau. The paper's variant for DD-Mem:

(i)  tau is global: the ``tau_percentile``-th (10th) percentile of all explained variances of all
     neighbourhoods of the reference data set;
(ii) if x has neighbours within the ``radius_percentile``-th (10th) percentile r of all pairwise
     distances of the reference data set, its neighbourhood is restricted to those neighbours
     (among its k nearest). Exact duplicates that are far from the rest of the data (a point
     mass, a training image copied many times) then form their own neighbourhood of identical
     points and come out as LID 0.

Conventions
-----------
* Data are batch-first ``(n, D)``; anything of rank > 2 is flattened to ``(n, prod(shape[1:]))``.
* The PCA neighbourhood of a point is its k nearest reference points (Fukunaga-Olsen, and
  scikit-dimension's ``fit_pw``). With ``query=None`` the queries are the reference points, each
  excluded from its own neighbourhood (scikit-learn's ``kneighbors(X=None)``); an exact duplicate
  of a point is a different point and is a neighbour at distance 0. A neighbourhood restricted by
  rule (ii) is the ball of radius r around the point, so it contains the point itself: a point
  with one neighbour within r gets a 2-point neighbourhood (LID <= 1), and a point whose
  neighbours within r are all its exact copies gets LID 0.
* Explained variances are those of :class:`sklearn.decomposition.PCA` (eigenvalues of the
  neighbourhood covariance with ``ddof=1``); only the ``min(m - 1, D)`` that are not zero by
  construction (m = neighbourhood size) are counted and pooled. They are computed from the
  ``m x m`` centred Gram matrix when ``m < D`` (same non-zero eigenvalues as the ``D x D``
  covariance, far cheaper for images), batched through :func:`torch.linalg.eigvalsh` run on one
  thread per batch (:func:`batched_eigvalsh`: MKL's multi-threaded kernel is 200-400x slower on
  these small matrices).
* Explained variances below ``1e-10`` times the largest one in the reference set are numerical
  zeros: they never count and are left out of the pool behind tau, so that heavy duplication
  cannot drive tau to 0.

The threshold rule is a choice (``tau``):

* ``"percentile"`` (the paper's rule (i)). Note that it counts a fixed share of the
  pooled spectrum as signal; it ranks points well (duplicates -> 0, complex points high) but is not
  an unbiased dimension estimate when most of each spectrum is noise (e.g. a 2-plane in R^20 with
  noise comes out far above 2). Use it to score memorization, as the paper does.
* ``"fo"`` (default): the classical Fukunaga-Olsen rule per neighbourhood, explained variance > ``alpha``
  times the neighbourhood's largest one (scikit-dimension's lPCA ``ver="FO"``, ``alphaFO=0.05``).
  Accurate on manifolds of known dimension; combined with the numerical-zero floor it still gives
  0 for duplicates.
* a float: a fixed global tau.
* ``"gap"``: per neighbourhood, the largest ratio gap of the spectrum (the shared rank cut of
  :mod:`lidmem.estimators._rank`, as the normal bundle and the Jacobian rank).

``threshold`` (``"gap" | "percentile" | float``, the spelling shared with :func:`normal_bundle`
and :func:`jacobian_rank`) maps onto ``tau`` when given: ``threshold="percentile"`` is
``tau="percentile"`` (with ``tau_percentile``), a float is a fixed ``tau``, ``"gap"`` is
``tau="gap"``. ``tau="fo"`` has no ``threshold`` spelling.

Defaults: ``tau="fo"`` with ``radius=0.0``. This is a dimension estimate on the same scale as
LID_theta (needed to compare the two for OD-Mem, LID_theta < LID_*), with rule (ii) applied to
exact duplicates only, so duplicated points come out as LID 0 (Prop. 3.1) while every other
neighbourhood is the plain k-NN one (same MAE as scikit-dimension's lPCA). The paper's exact
variant for ranking points by DD-Mem is ``tau="percentile", radius="percentile"``; it also
catches near-duplicates, at the cost of biased dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._validation import check_choice, check_points, check_positive_int, check_probability, check_seed, renamed_argument
from ..utils import chunk_slices, progress_bar
from ._rank import check_threshold
from ._ivf import _IVFNeighbours
from .base import Estimator
from .pca_spectra import _count_above, batched_eigvalsh, count_eigenvalues_above, gram_counts, gram_spectra, neighbourhood_spectra, pairwise_distance_percentile

__all__ = [
    "LocalPCA",
    "local_pca",
    "neighbourhood_spectra",
    "gram_spectra",
    "pairwise_distance_percentile",
    "batched_eigvalsh",
    "count_eigenvalues_above",
    "gram_counts",
]

_ZERO_RTOL = 1e-10
_MEMORY_BUDGET = 2**26  # bytes per chunk of gathered neighbourhoods (64 MiB)
_GRAM_BUDGET = 2**28  # cache the n x n Gram matrix of the reference data up to 256 MiB (n <= 5792)


def _check_float_points(x: Any, name: str, *, min_samples: int) -> torch.Tensor:
    """check_points keeping float32/float64 input as it is (no copy); anything else -> float64."""
    floating = (isinstance(x, torch.Tensor) and x.dtype in (torch.float32, torch.float64)) or (
        isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)
    )
    return check_points(x, name, min_samples=min_samples, dtype=None if floating else torch.float64)


# --------------------------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------------------------
class LocalPCA(Estimator):
    """Local PCA LID_* estimator with the paper's global tau and radius restriction.

    Parameters
    ----------
    k : int, default=100
        Number of nearest reference points in each neighbourhood (the paper: 100), at least 2.
        With ``query=None`` it must be ``<= n - 1``, otherwise ``<= n``.
    tau : {"percentile", "fo", "gap"} or float, default="fo"
        Threshold rule (see the module docstring): the paper's global percentile of all explained
        variances, per-neighbourhood Fukunaga-Olsen ``alpha * largest``, the per-neighbourhood
        largest (log) gap, or a fixed value.
    threshold : {"gap", "percentile"} or float, optional
        The library-wide rank-cut spelling; when given it replaces ``tau`` (see the module
        docstring). Giving both ``threshold`` and a non-default ``tau`` is an error.
    tau_percentile : float, default=10.0
        Percentile of the pooled explained variances used when ``tau="percentile"``.
    alpha : float, default=0.05
        Fukunaga-Olsen ratio used when ``tau="fo"``.
    radius : {"percentile"} or float or None, default=0.0
        Neighbourhood restriction (paper's rule (ii)): ``"percentile"`` uses the
        ``radius_percentile``-th percentile of all pairwise distances; a float is a fixed radius
        (``0.0`` restricts only to exact duplicates); ``None`` disables the restriction.
    radius_percentile : float, default=10.0
    max_pairs : int, default=1_000_000
        Up to this many pairs the pairwise-distance percentile is exact, above it it is estimated
        from this many random pairs drawn under ``seed``.
    seed : int, default=0
    batch_size : int, optional
        Query points per batch; by default chosen so a batch of gathered neighbourhoods stays under
        64 MiB.
    chunk_size : int, optional
        Deprecated alias of ``batch_size``.
    progress : bool, optional
        Show a progress bar (None: only on a terminal).
    search : {"exact", "faiss", "auto"}, default="exact"
        Neighbour search. ``"exact"``: all distances (float64), the reference Gram matrix cached
        up to n = 5792. ``"faiss"``: approximate neighbours from the coarse quantizer of the audit's
        faiss IVF index, searched in blocks (:class:`_IVFNeighbours`: each query's ``nprobe``
        nearest lists), for 10^5-10^6 points: the data are not copied (float32 input stays float32,
        neighbourhoods are gathered in float64), no n x n matrix is formed, and exact duplicates
        are found by exact distances within the neighbourhoods. ``"auto"``: faiss when ``n * q``
        exceeds 5e7 pairs and faiss is installed (as ``lidmem audit``).
    nprobe : int, default=4
        ``search="faiss"``: nearest inverted lists (of ``sqrt(n)``) searched for each query; the
        lists of all queries that share a nearest list are searched together. More: higher
        recall, slower (``benchmarks/scale_local_pca.py``).

    Attributes
    ----------
    data_ : Tensor of shape (n, D)
        Reference points (flattened), float64 (float32 input kept as float32 with faiss search).
    n_samples_fit_, n_features_in_ : int
    radius_ : float or None
        Restriction radius in use (None when disabled).
    spectra_ : Tensor of shape (n, min(k, D))
        Explained variances of each reference point's neighbourhood (itself excluded from its
        search), decreasing, NaN-padded.
    zero_floor_ : float
        Explained variances at or below this are numerical zeros.
    tau_ : float or None
        Global threshold in use (None for ``tau="fo"`` and ``"gap"``).

    Examples
    --------
    >>> from lidmem.data.manifolds import affine_subspace
    >>> from lidmem.estimators import LocalPCA
    >>> s = affine_subspace(400, dim=3, ambient_dim=12, seed=0)
    >>> lid = LocalPCA(k=50, tau="fo").fit(s.points).estimate()
    >>> int(lid.float().median())
    3
    """

    def __init__(
        self,
        k: int = 100,
        *,
        tau: str | float = "fo",
        tau_percentile: float = 10.0,
        alpha: float = 0.05,
        radius: str | float | None = 0.0,
        radius_percentile: float = 10.0,
        max_pairs: int = 1_000_000,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool | None = None,
        search: str = "exact",
        nprobe: int = 4,
        threshold: str | float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.k = k
        self.tau = tau
        self.threshold = threshold
        self.tau_percentile = tau_percentile
        self.alpha = alpha
        self.radius = radius
        self.radius_percentile = radius_percentile
        self.max_pairs = max_pairs
        self.seed = seed
        self.batch_size = renamed_argument(batch_size, chunk_size, new="batch_size", old="chunk_size", func="LocalPCA")
        self.chunk_size = None
        self.progress = progress
        self.search = search
        self.nprobe = nprobe

    def _check_params(self) -> None:
        check_positive_int(self.k, "k", minimum=2)
        if self.threshold is not None:
            if not (isinstance(self.tau, str) and self.tau == "fo"):
                raise TypeError(f"got both threshold={self.threshold!r} and tau={self.tau!r}; pass one of them")
        rule = self.tau if self.threshold is None else check_threshold(self.threshold)
        if isinstance(rule, str):
            if rule not in ("percentile", "fo", "gap"):
                raise ValueError(f"tau={rule!r} is not supported; choose 'percentile', 'fo', 'gap' or a float >= 0")
        else:
            v = check_probability(rule, "tau", low=0.0, high=math.inf)
            if math.isinf(v):
                raise ValueError(f"tau={rule!r} must be finite")
        self.rule_: str | float = rule
        check_probability(self.tau_percentile, "tau_percentile", low=0.0, high=100.0)
        check_probability(self.alpha, "alpha", low=0.0, high=1.0, closed=False)
        if isinstance(self.radius, str):
            if self.radius != "percentile":
                raise ValueError(f"radius={self.radius!r} is not supported; choose 'percentile', a float >= 0 or None")
        elif self.radius is not None:
            check_probability(self.radius, "radius", low=0.0, high=math.inf)
        check_probability(self.radius_percentile, "radius_percentile", low=0.0, high=100.0)
        check_positive_int(self.max_pairs, "max_pairs")
        check_seed(self.seed)
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        from ..neighbors import SEARCHES

        check_choice(self.search, "search", SEARCHES)
        check_positive_int(self.nprobe, "nprobe")

    # -- fit / estimate --------------------------------------------------------------------------
    def fit(self, data: Any) -> LocalPCA:
        """Store the reference data, the restriction radius and the global tau.

        Parameters
        ----------
        data : array-like of shape (n, D) or (n, ...)
            Reference points (numpy or torch); images are flattened. Needs ``n >= k + 1``.

        Returns
        -------
        self
        """
        self._check_params()
        x = _check_float_points(data, "data", min_samples=2)
        x = x.reshape(len(x), -1)
        n = x.shape[0]
        if self.k > n - 1:
            raise ValueError(
                f"k={self.k} neighbours requested but data has n_samples={n}, so each point has only n_samples - 1 = {n - 1} "
                f"other points; use k <= {n - 1}"
            )
        self.search_ = self._resolve_search(n, n)
        if self.search_ == "faiss":
            return self._fit_ivf(x)
        x = x.to(torch.float64)
        self.data_ = x
        # PCA is translation invariant: work on globally centred data (smaller norms, less cancellation)
        self._centre = x.mean(dim=0)
        self._ref = x - self._centre
        self._gram = self._ref @ self._ref.T if n * n * 8 <= _GRAM_BUDGET else None
        # duplicate groups: equal rows share an id (exact zero distance without recomputing it)
        self._unique, self._groups = torch.unique(x, dim=0, return_inverse=True)
        self.n_samples_fit_ = n
        self.n_features_in_ = x.shape[1]
        if self.radius == "percentile":
            if self._gram is not None and n * (n - 1) // 2 <= self.max_pairs:
                # all pairs from the cached Gram matrix; exact duplicates exactly 0
                sq = torch.diagonal(self._gram)
                iu = torch.triu_indices(n, n, offset=1, device=x.device)
                d2 = (sq[iu[0]] + sq[iu[1]] - 2.0 * self._gram[iu[0], iu[1]]).clamp_min(0.0)
                d2 = torch.where(self._groups[iu[0]] == self._groups[iu[1]], torch.zeros_like(d2), d2)
                self.radius_ = float(np.percentile(d2.sqrt().cpu().numpy(), self.radius_percentile))
            else:
                self.radius_ = pairwise_distance_percentile(x, self.radius_percentile, max_pairs=self.max_pairs, seed=self.seed)
        else:
            self.radius_ = None if self.radius is None else float(self.radius)
        self.spectra_ = self._spectra(x, exclude_self=True, desc="local PCA (reference)")
        return self._fit_threshold()

    def _fit_threshold(self) -> LocalPCA:
        """zero_floor_ and tau_ from the reference spectra."""
        n = self.spectra_.shape[0]
        top = self.spectra_[:, 0] if self.spectra_.shape[1] else torch.zeros(n, dtype=torch.float64)
        top = top[~torch.isnan(top)]
        self.zero_floor_ = _ZERO_RTOL * float(top.max()) if top.numel() else 0.0
        if self.rule_ == "percentile":
            pool = self.spectra_[~torch.isnan(self.spectra_)]
            pool = pool[pool > self.zero_floor_]
            self.tau_ = float(np.percentile(pool.cpu().numpy(), self.tau_percentile)) if pool.numel() else 0.0
        elif self.rule_ in ("fo", "gap"):
            self.tau_ = None
        else:
            self.tau_ = float(self.rule_)
        return self

    def estimate(self, query: Any = None) -> torch.Tensor:
        """LID_* of each query point.

        Parameters
        ----------
        query : array-like of shape (q, D) or (q, ...), optional
            New points, scored against their k nearest reference points with the fitted radius
            and tau. ``None`` (default) scores the reference points, each excluded from its own
            neighbour search.

        Returns
        -------
        Tensor of shape (q,) or (n,), int64
        """
        if not hasattr(self, "spectra_"):
            raise NotFittedError("this LocalPCA instance is not fitted yet; call fit(data) first")
        if query is None:
            spectra = self.spectra_
        else:
            q = _check_float_points(query, "query", min_samples=1).to(self.data_.device)
            q = q.reshape(len(q), -1)
            if q.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"query has {q.shape[1]} features per point but LocalPCA was fitted on data with {self.n_features_in_}; "
                    "pass points of the same dimension"
                )
            if self.k > self.n_samples_fit_:
                raise ValueError(f"k={self.k} must be <= n_samples_fit={self.n_samples_fit_} to query new points")
            # a global threshold (tau="percentile" or a float): count by inertia, no eigenvalues
            thr = self._fixed_threshold()
            if self.search_ == "faiss":
                spectra = self._spectra_ivf(q, self_query=False, desc="local PCA (query)", threshold=thr)
            else:
                spectra = self._spectra(q.to(torch.float64), exclude_self=False, desc="local PCA (query)", threshold=thr)
            if thr is not None:
                return spectra
        tau: float | str = str(self.rule_) if self.tau_ is None else self.tau_
        return _count_above(spectra, tau, float(self.alpha), self.zero_floor_)

    def _fixed_threshold(self) -> float | None:
        """max(tau_, zero_floor_) when the threshold is global and positive, else None."""
        if self.tau_ is None:
            return None
        thr = max(float(self.tau_), float(self.zero_floor_))
        return thr if thr > 0 else None

    def fit_estimate(self, data: Any) -> torch.Tensor:
        """``fit(data).estimate()``: LID_* of every data point, each excluded from its own search."""
        return self.fit(data).estimate()

    # -- internals -----------------------------------------------------------------------------
    def _resolve_search(self, n_ref: int, n_query: int) -> str:
        from ..neighbors import _resolve_search

        return _resolve_search(self.search, n_ref, n_query, 50_000_000)

    def _fit_ivf(self, x: torch.Tensor) -> LocalPCA:
        """fit() with approximate neighbours: no copy of the data, no n x n matrix."""
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float64)
        self.data_ = x
        n = x.shape[0]
        self._centre = torch.zeros(x.shape[1], dtype=torch.float64)
        for sl in chunk_slices(n, 65536):
            self._centre += x[sl].to(torch.float64).sum(dim=0)
        self._centre /= n
        self._gram = None
        self.n_samples_fit_ = n
        self.n_features_in_ = x.shape[1]
        if self.radius == "percentile":
            self.radius_ = pairwise_distance_percentile(x, self.radius_percentile, max_pairs=self.max_pairs, seed=self.seed)
        else:
            self.radius_ = None if self.radius is None else float(self.radius)
        self._ivf = _IVFNeighbours(x.numpy(), nprobe=int(self.nprobe))
        self.spectra_ = self._spectra_ivf(x, self_query=True, desc="local PCA (reference)")
        return self._fit_threshold()

    def estimate_from_neighbours(self, query: Any, neighbours: Any) -> torch.Tensor:
        """LID_* of query points whose k nearest reference points are given.

        For a k-nearest-neighbour graph from elsewhere (another index, an exact search of a
        subset): uses the fitted radius, tau and numerical-zero floor, and, as :meth:`estimate`,
        finds exact duplicates by exact distance (a query equal to a listed neighbour is at
        distance 0). A reference point scored this way must not list itself.

        Parameters
        ----------
        query : array-like of shape (q, D)
        neighbours : int array of shape (q, k)
            Rows of the reference data (``k`` = the estimator's ``k``).

        Returns
        -------
        Tensor of shape (q,), int64
        """
        if not hasattr(self, "spectra_"):
            raise NotFittedError("this LocalPCA instance is not fitted yet; call fit(data) first")
        q = _check_float_points(query, "query", min_samples=1).reshape(len(query), -1)
        idx = np.asarray(neighbours)
        if idx.shape != (q.shape[0], self.k) or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"neighbours must be an integer array of shape (q, k) = ({q.shape[0]}, {self.k}); got {idx.dtype} {idx.shape}")
        if idx.min() < 0 or idx.max() >= self.n_samples_fit_:
            raise ValueError(f"neighbours must index the {self.n_samples_fit_} reference rows (0..{self.n_samples_fit_ - 1})")
        blocks = iter([(np.arange(q.shape[0]), idx.astype(np.int64))])
        thr = self._fixed_threshold()
        spectra = self._spectra_blocks(q, blocks, desc="local PCA (given neighbours)", threshold=thr)
        if thr is not None:
            return spectra
        tau: float | str = str(self.rule_) if self.tau_ is None else self.tau_
        return _count_above(spectra, tau, float(self.alpha), self.zero_floor_)

    def _spectra_ivf(self, q: torch.Tensor, *, self_query: bool, desc: str, threshold: float | None = None) -> torch.Tensor:
        blocks = self._ivf.blocks(q.numpy(), int(self.k), self_query=self_query)
        return self._spectra_blocks(q, blocks, desc=desc, threshold=threshold)

    def _spectra_blocks(
        self, q: torch.Tensor, blocks: Iterator[tuple[np.ndarray, np.ndarray]], *, desc: str, threshold: float | None = None
    ) -> torch.Tensor:
        """Spectra of the neighbourhoods ``[q_i, ref[idx_i]]`` for the ``(rows, idx)`` blocks;
        with ``threshold``, the number of explained variances above it instead (shape (q,))."""
        ref = self.data_
        n, D = ref.shape
        k = int(self.k)
        r = min(k, D)
        if threshold is None:
            out = torch.full((q.shape[0], r), math.nan, dtype=torch.float64)
        else:
            out = torch.zeros(q.shape[0], dtype=torch.int64)
        chunk = self.batch_size or max(1, min(1024, _MEMORY_BUDGET // (8 * (k + 1) * max(D, k + 1))))
        with self._bar(q.shape[0], desc) as bar:
            for rows, idx in blocks:
                for sl in chunk_slices(len(rows), chunk):
                    rr = torch.from_numpy(rows[sl])
                    ii = torch.from_numpy(idx[sl])
                    c = len(rr)
                    y = torch.empty(c, k + 1, D, dtype=torch.float64)  # [query, its k neighbours]
                    y[:, 0] = q[rr]
                    y[:, 1:] = ref[ii.reshape(-1)].view(c, k, D)
                    same = (y[:, 1:] == y[:, :1]).all(dim=2)  # exact duplicates of the query
                    y.sub_(self._centre)
                    gram = y @ y.transpose(1, 2) if k + 1 <= D else None
                    keep = torch.ones(c, k, dtype=torch.bool)
                    restrict = torch.zeros(c, 1, dtype=torch.bool)
                    if self.radius_ is not None:
                        if self.radius_ == 0.0:
                            within = same
                        else:
                            if gram is None:
                                d2 = ((y[:, 1:] - y[:, :1]) ** 2).sum(dim=2)
                            else:
                                diag = torch.diagonal(gram, dim1=1, dim2=2)
                                d2 = diag[:, :1] + diag[:, 1:] - 2.0 * gram[:, 0, 1:]
                            # as the exact search: duplicates at exactly 0, distinct points never at 0
                            d2 = torch.where(same, torch.zeros_like(d2), d2.clamp_min(torch.finfo(d2.dtype).tiny))
                            within = d2.sqrt() <= self.radius_
                        restrict = within.any(dim=1, keepdim=True)
                        keep = torch.where(restrict, within, keep)
                    mask = torch.cat([restrict, keep], dim=1)
                    out[rr] = self._finish(gram, y, mask, D, threshold)
                bar.update(len(rows))
        return out

    def _query_groups(self, q: torch.Tensor) -> torch.Tensor:
        """Duplicate-group id of each query row among the reference rows (-1: equal to none)."""
        u = self._unique
        _, inv = torch.unique(torch.cat([u, q]), dim=0, return_inverse=True)
        table = torch.full((int(inv.max()) + 1,), -1, dtype=torch.long, device=q.device)
        table[inv[: len(u)]] = torch.arange(len(u), device=q.device)
        return table[inv[len(u) :]]

    def _finish(self, gram: torch.Tensor | None, y: torch.Tensor | None, mask: torch.Tensor, D: int, threshold: float | None) -> torch.Tensor:
        """Spectra (threshold None) or counts above ``threshold`` from a Gram batch or the points."""
        if gram is None:
            spectra = neighbourhood_spectra(y, mask)
            return spectra if threshold is None else _count_above(spectra, threshold, float(self.alpha), 0.0)
        return gram_spectra(gram, mask, D) if threshold is None else gram_counts(gram, mask, threshold)

    def _spectra(self, q: torch.Tensor, *, exclude_self: bool, desc: str, threshold: float | None = None) -> torch.Tensor:
        ref = self._ref
        # duplicate groups from the raw rows ((q - c) + c may differ from q in the last bit)
        groups = self._groups if exclude_self else self._query_groups(q)
        q = q - self._centre
        n, D = ref.shape
        k = int(self.k)
        chunk = self.batch_size or max(1, min(1024, _MEMORY_BUDGET // (8 * k * max(D, k))))
        ref_sq = (ref * ref).sum(dim=1)
        out = []
        bar = self._bar(q.shape[0], desc)
        for sl in chunk_slices(q.shape[0], chunk):
            bar.update(sl.stop - sl.start)
            qc = q[sl]
            c = len(qc)
            cross = self._gram[sl] if (exclude_self and self._gram is not None) else qc @ ref.T  # (c, n)
            q_sq = (qc * qc).sum(dim=1)
            # candidate neighbours by |a|^2 + |b|^2 - 2ab (fast); exact distances recomputed below
            d2 = q_sq[:, None] + ref_sq[None, :] - 2.0 * cross
            if exclude_self:
                d2[torch.arange(c), torch.arange(sl.start, sl.stop)] = math.inf
            idx = torch.topk(d2, k, dim=1, largest=False).indices  # (c, k)
            # distances from the Gram matrix; exact duplicates (same row of unique data) at exactly 0,
            # distinct points never at 0, so that radius=0 selects exact duplicates only
            same = groups[sl][:, None] == self._groups[idx]
            nd2 = d2.gather(1, idx).clamp_min(torch.finfo(d2.dtype).tiny)
            dist = torch.where(same, torch.zeros_like(nd2), nd2).sqrt()
            keep = torch.ones_like(dist, dtype=torch.bool)
            restrict = torch.zeros(c, 1, dtype=torch.bool, device=ref.device)
            if self.radius_ is not None:
                within = dist <= self.radius_
                restrict = within.any(dim=1, keepdim=True)
                keep = torch.where(restrict, within, keep)
            # a restricted neighbourhood is the ball B(x, radius): the point itself is in it
            mask = torch.cat([restrict, keep], dim=1)
            if D < k + 1 and (self._gram is None or 2 * D <= k + 1):  # D x D covariance: the smaller eigenproblem
                nb = ref.index_select(0, idx.reshape(-1)).view(c, k, D)
                out.append(self._finish(None, torch.cat([qc[:, None, :], nb], dim=1), mask, D, threshold))
                continue
            gram = torch.empty(c, k + 1, k + 1, dtype=ref.dtype, device=ref.device)
            gram[:, 0, 0] = q_sq
            qn = cross.gather(1, idx)
            gram[:, 0, 1:] = qn
            gram[:, 1:, 0] = qn
            if self._gram is not None:
                flat = (idx[:, :, None] * n + idx[:, None, :]).reshape(-1)
                gram[:, 1:, 1:] = self._gram.view(-1).index_select(0, flat).view(c, k, k)
            else:
                nb = ref.index_select(0, idx.reshape(-1)).view(c, k, D)
                gram[:, 1:, 1:] = nb @ nb.transpose(1, 2)
            out.append(self._finish(gram, None, mask, D, threshold))
        bar.close()
        return torch.cat(out)

    def _bar(self, total: int, desc: str) -> Any:
        """A progress bar over ``total`` points (a bar on a terminal, plain lines otherwise, unless ``progress`` says otherwise)."""
        return progress_bar(total=total, desc=desc, disable=None if self.progress is None else not self.progress)


def local_pca(
    data: Any,
    query: Any = None,
    k: int = 100,
    *,
    tau: str | float = "fo",
    tau_percentile: float = 10.0,
    alpha: float = 0.05,
    radius: str | float | None = 0.0,
    radius_percentile: float = 10.0,
    max_pairs: int = 1_000_000,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    search: str = "exact",
    nprobe: int = 4,
    threshold: str | float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """LID_* by local PCA: ``LocalPCA(k, ...).fit(data).estimate(query)``.

    Parameters
    ----------
    data : array-like of shape (n, D) or (n, ...)
        Reference data set (defines neighbourhoods, the radius and tau).
    query : array-like of shape (q, D), optional
        Points to score; ``None`` scores each data point, excluded from its own neighbour search.
    k : int, default=100
    tau, tau_percentile, alpha, radius, radius_percentile, max_pairs, seed, batch_size, progress, search, nprobe, threshold
        See :class:`LocalPCA`.
    chunk_size : int, optional
        Deprecated alias of ``batch_size``.

    Returns
    -------
    Tensor of shape (q,) or (n,), int64
        LID_* estimates.
    """
    est = LocalPCA(
        k,
        tau=tau,
        tau_percentile=tau_percentile,
        alpha=alpha,
        radius=radius,
        radius_percentile=radius_percentile,
        max_pairs=max_pairs,
        seed=seed,
        batch_size=renamed_argument(batch_size, chunk_size, new="batch_size", old="chunk_size", func="local_pca"),
        progress=progress,
        search=search,
        nprobe=nprobe,
        threshold=threshold,
    )
    return est.fit(data).estimate(query)
