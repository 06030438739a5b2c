"""Standard LID_* estimators from scikit-dimension (MLE, TwoNN, ESS, lPCA), pointwise.

scikit-dimension is an optional dependency: ``pip install "lidmem[skdim]"``. It is imported when an
estimate is computed, never at import time.

How each estimator is made pointwise (``k`` nearest reference points, itself excluded from its own
search when ``query=None``, exactly as ``skdim``'s ``fit_pw`` / ``LocalEstimator.fit``):

* ``"mle"`` (Levina & Bickel 2004, as ``skdim.id.MLE``): from the distances of the point to its k
  nearest reference points (``precomputed_knn_arrays``); a point with exact duplicates among its
  neighbours has a zero distance and comes out as 0 (all neighbours duplicates: 0 as well).
* ``"twonn"`` (Facco et al. 2017, ``skdim.id.TwoNN``), ``"lpca"`` (``skdim.id.lPCA``,
  Fukunaga-Olsen ``ver="FO"`` with ``alphaFO=alpha``), ``"ess"`` (Johnsson et al. 2015,
  ``skdim.id.ESS.fit_once``): the global estimator fitted on the neighbourhood of k reference
  points.

New query points use the same neighbourhoods among the fitted reference points (a query
point equal to a reference point has that point among its neighbours, at distance 0).
TwoNN divides by nearest-neighbour distances, so reference data with duplicate rows are
rejected for it with a ValueError (deduplicate, or use ``LocalPCA``, which scores duplicates as
LID 0). Results are real-valued (float64), unlike local PCA's counts.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_points, check_positive_int, check_probability
from ..utils import progress as _progress
from .base import Estimator

__all__ = ["SkdimEstimator", "skdim_lid", "SKDIM_ESTIMATORS"]

SKDIM_ESTIMATORS = ("mle", "twonn", "ess", "lpca")


def _import_skdim() -> Any:
    try:
        import skdim  # noqa: F401
        import skdim.id
    except ImportError as exc:  # pragma: no cover - skdim is installed in the test environment
        raise ImportError(
            'the scikit-dimension estimators need the optional dependency scikit-dimension; install it with pip install "lidmem[skdim]"'
        ) from exc
    return skdim


@contextlib.contextmanager
def _quiet():
    """Silence skdim's warnings, numpy floating-point warnings and prints."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class SkdimEstimator(Estimator):
    """Pointwise LID_* with a scikit-dimension estimator, at the fitted points or at new points.

    Parameters
    ----------
    estimator : {"mle", "twonn", "ess", "lpca"}, default="mle"
        Levina-Bickel MLE, TwoNN, expected simplex skewness, or Fukunaga-Olsen local PCA.
    k : int, default=100
        Neighbourhood size (>= 3). With ``query=None`` at most ``n - 1``, otherwise at most ``n``.
    alpha : float, default=0.05
        Fukunaga-Olsen ratio for ``"lpca"`` (skdim's ``alphaFO``); ignored otherwise.
    progress : bool, optional
        Progress bar over neighbourhoods (None: only on a terminal).

    Attributes
    ----------
    data_ : ndarray of shape (n, D), float64
    nn_ : sklearn.neighbors.NearestNeighbors
        kNN index on ``data_``.
    n_samples_fit_, n_features_in_ : int

    Examples
    --------
    >>> from lidmem.data.manifolds import affine_subspace
    >>> s = affine_subspace(300, dim=3, ambient_dim=10, seed=0)
    >>> lid = SkdimEstimator("lpca", k=30).fit(s.points).estimate()
    >>> int(lid.median())
    3
    """

    def __init__(self, estimator: str = "mle", k: int = 100, *, alpha: float = 0.05, progress: bool | None = None) -> None:
        self.estimator = estimator
        self.k = k
        self.alpha = alpha
        self.progress = progress

    def fit(self, data: Any) -> SkdimEstimator:
        """Store the reference data and its kNN index.

        Parameters
        ----------
        data : array-like of shape (n, D) or (n, ...)
            Reference points (flattened if rank > 2), ``n >= k + 1``.
        """
        check_choice(self.estimator, "estimator", SKDIM_ESTIMATORS)
        check_positive_int(self.k, "k", minimum=3)
        check_probability(self.alpha, "alpha", closed=False)
        _import_skdim()
        from sklearn.neighbors import NearestNeighbors

        x = check_points(data, "data", min_samples=2, dtype=torch.float64)
        x = x.reshape(len(x), -1).cpu().numpy()
        n = len(x)
        if self.k > n - 1:
            raise ValueError(
                f"k={self.k} neighbours requested but data has n_samples={n}, so each point has only n_samples - 1 = {n - 1} "
                f"other points; use k <= {n - 1}"
            )
        if self.estimator == "twonn":
            n_unique = len(np.unique(x, axis=0))
            if n_unique < n:
                raise ValueError(
                    f"data has {n - n_unique} duplicate rows; TwoNN divides by nearest-neighbour distances and fails on them. "
                    "Deduplicate with numpy.unique(data, axis=0), or use estimator='mle'/'lpca' or lidmem's local_pca, "
                    "which score duplicates as LID 0"
                )
        self.data_ = x
        self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(x)
        self.n_samples_fit_ = n
        self.n_features_in_ = x.shape[1]
        return self

    def estimate(self, query: Any = None) -> torch.Tensor:
        """Pointwise LID_* estimates.

        Parameters
        ----------
        query : array-like of shape (q, D), optional
            New points; ``None`` scores the fitted points, each excluded from its own neighbourhood.

        Returns
        -------
        Tensor of shape (q,) or (n,), float64
        """
        if not hasattr(self, "nn_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this SkdimEstimator instance is not fitted yet; call fit(data) first")
        skdim = _import_skdim()
        if query is None:
            dists, idx = self.nn_.kneighbors()
            q = self.data_
        else:
            qt = check_points(query, "query", min_samples=1, dtype=torch.float64)
            q = qt.reshape(len(qt), -1).cpu().numpy()
            if q.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"query has {q.shape[1]} features per point but the estimator was fitted on data with {self.n_features_in_}"
                )
            if self.k > self.n_samples_fit_:
                raise ValueError(f"k={self.k} must be <= n_samples_fit={self.n_samples_fit_} to query new points")
            dists, idx = self.nn_.kneighbors(q)
        with _quiet():
            if self.estimator == "mle":
                est = skdim.id.MLE()
                # MLE reads only the distances; duplicate the single row when q == 1 (skdim needs 2 rows)
                reps = 2 if len(q) == 1 else 1
                out = est.fit(
                    np.repeat(q, reps, axis=0),
                    precomputed_knn_arrays=(np.repeat(dists, reps, axis=0), np.repeat(idx, reps, axis=0)),
                    n_neighbors=self.k,
                ).dimension_pw_[: len(q)]
                out = np.where(np.isnan(out), 0.0, out)  # all k neighbours at distance 0: a point mass
            else:
                out = np.empty(len(idx))
                if self.estimator == "twonn":
                    est = skdim.id.TwoNN()
                elif self.estimator == "lpca":
                    est = skdim.id.lPCA(ver="FO", alphaFO=self.alpha)
                else:
                    est = skdim.id.ESS()
                rows = _progress(range(len(idx)), total=len(idx), desc=f"skdim {self.estimator}", disable=None if self.progress is None else not self.progress)
                for i in rows:
                    hood = self.data_[idx[i]]
                    if self.estimator == "ess":
                        out[i] = est.fit_once(hood).dimension_
                    else:
                        out[i] = est.fit(hood).dimension_
        return torch.as_tensor(np.asarray(out, dtype=np.float64))

    def fit_estimate(self, data: Any) -> torch.Tensor:
        """``fit(data).estimate()``."""
        return self.fit(data).estimate()


def skdim_lid(
    data: Any,
    query: Any = None,
    *,
    estimator: str = "mle",
    k: int = 100,
    alpha: float = 0.05,
    progress: bool | None = None,
) -> torch.Tensor:
    """Pointwise LID_* by a scikit-dimension estimator: ``SkdimEstimator(estimator, k).fit(data).estimate(query)``.

    Parameters
    ----------
    data : array-like of shape (n, D)
        Reference data.
    query : array-like of shape (q, D), optional
        Points to score; ``None`` scores each data point, excluded from its own neighbourhood.
    estimator : {"mle", "twonn", "ess", "lpca"}, default="mle"
    k : int, default=100
    alpha : float, default=0.05
        Fukunaga-Olsen ratio for ``"lpca"``.
    progress : bool, optional

    Returns
    -------
    Tensor of shape (n,) or (q,), float64

    Raises
    ------
    ImportError
        If scikit-dimension is not installed (``pip install "lidmem[skdim]"``).
    """
    return SkdimEstimator(estimator, k, alpha=alpha, progress=progress).fit(data).estimate(query)
