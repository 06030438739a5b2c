"""Nearest-neighbour search on flattened vectors: exact (chunked torch) or a faiss IVF index.

Shared by copy detection (:mod:`lidmem.memorization.copy_detection`), local PCA
(:mod:`lidmem.estimators.local_pca`) and the label-free t0 (:mod:`lidmem.estimators.t0`):
:func:`nearest_neighbors` (``search="auto" | "exact" | "faiss"``), :func:`train_ivf_index`,
:func:`dedupe_rows` (distinct rows) and :func:`calibration_distances` (mean distance to the ``k``
nearest other distinct rows, the denominator of the calibrated l2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._validation import ArgumentError, check_choice, check_positive_int, renamed_argument
from .utils import chunk_slices

__all__ = ["SEARCHES", "nearest_neighbors", "train_ivf_index", "dedupe_rows", "calibration_distances"]

SEARCHES = ("auto", "exact", "faiss")


def dedupe_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of ``x`` (n, d): ``(first_index (u,), inverse (n,), counts (u,))``.

    ``x[first_index[inverse[i]]] == x[i]`` exactly, and ``first_index`` holds the first row of
    each group, in increasing order.
    """
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    _, first, inverse, counts = np.unique(arr, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order].astype(np.int64), rank[inverse.ravel()].astype(np.int64), counts[order].astype(np.int64)


def _resolve_search(search: str, n_ref: int, n_query: int, ann_threshold: int) -> str:
    check_choice(search, "search", SEARCHES)
    if search == "auto":
        if n_ref * n_query <= ann_threshold:
            return "exact"
        try:
            import faiss  # noqa: F401
        except ImportError:
            return "exact"
        return "faiss"
    if search == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError as exc:
            raise ImportError("search='faiss' needs faiss; install it with `pip install lidmem[faiss]` or use search='exact'") from exc
    return search


def train_ivf_index(ref: np.ndarray, metric: str = "l2") -> Any:
    """A trained, still empty faiss ``IndexIVFFlat`` for the rows of ``ref`` (m, d), float32.

    ``nlist = sqrt(m)`` lists (at most ``m // 39``), k-means trained on at most 64 points per list
    drawn with a fixed seed, ``nprobe = max(16, nlist // 32)`` (see :func:`nearest_neighbors`).
    The caller adds the vectors (``index.add``) or uses only its coarse quantizer
    (``index.quantizer``: the ``nlist`` centroids).
    """
    import faiss

    check_choice(metric, "metric", ("l2", "ip"))
    r = np.ascontiguousarray(ref, dtype=np.float32)
    dim = r.shape[1]
    nlist = max(1, min(len(r) // 39, int(np.sqrt(len(r)))))
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
    n_train = min(len(r), 64 * nlist)
    train = r if n_train == len(r) else r[np.random.default_rng(0).choice(len(r), n_train, replace=False)]
    index.train(train)
    index.nprobe = min(nlist, max(16, nlist // 32))
    return index


def nearest_neighbors(
    query: np.ndarray,
    ref: np.ndarray,
    k: int = 1,
    *,
    metric: str = "l2",
    search: str = "auto",
    ann_threshold: int = 50_000_000,
    batch_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest rows of ``ref`` (m, d) for each row of ``query`` (n, d).

    Parameters
    ----------
    metric : {"l2", "ip"}
        ``"l2"``: Euclidean distance, ascending. ``"ip"``: inner product, descending (cosine
        similarity for unit-norm rows).
    search : {"auto", "exact", "faiss"}
        ``"exact"``: chunked brute force with torch (float64). ``"faiss"``: an inverted-file
        index (``IndexIVFFlat``, ``nlist = sqrt(m)`` lists trained on at most 64 points per list
        drawn with a fixed seed, ``nprobe = max(16, nlist // 32)``; approximate: see
        ``benchmarks/scale_nn_search.py`` for time and recall@1 on 10^5-10^6 vectors).
        ``"auto"``: faiss when ``n * m > ann_threshold`` and faiss is installed.
    batch_size : int or None, default=None
        Query rows per exact-search block; None bounds each block's distance matrix to about
        256 MiB whatever the size of ``ref``.
    chunk_size : int or None
        Deprecated alias of ``batch_size``.

    Returns
    -------
    values : ndarray of shape (n, k)
        Distances (l2) or inner products (ip).
    indices : ndarray of shape (n, k), int64
    """
    batch_size = renamed_argument(batch_size, chunk_size, new="batch_size", old="chunk_size", func="nearest_neighbors")
    check_choice(metric, "metric", ("l2", "ip"))
    q = np.ascontiguousarray(query, dtype=np.float32)
    r = np.ascontiguousarray(ref, dtype=np.float32)
    k = check_positive_int(k, "k")
    if k > len(r):
        raise ArgumentError(f"k={k} nearest neighbours requested but the reference set has only {len(r)} rows", argument="k")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query has {q.shape[1]} features but the reference set has {r.shape[1]}")
    used = _resolve_search(search, len(r), len(q), ann_threshold)
    if used == "faiss":
        index = train_ivf_index(r, metric)
        index.add(r)
        vals, idx = index.search(q, k)
        if metric == "l2":
            vals = np.sqrt(np.maximum(vals, 0.0))
        return vals.astype(np.float64), idx.astype(np.int64)
    rt = torch.from_numpy(r).double()
    out_v = np.empty((len(q), k), np.float64)
    out_i = np.empty((len(q), k), np.int64)
    if batch_size is None:
        batch_size = max(1, (256 * 2**20) // (8 * max(1, len(r))))
    for sl in chunk_slices(len(q), check_positive_int(batch_size, "batch_size")):
        qt = torch.from_numpy(q[sl]).double()
        if metric == "l2":
            d = torch.cdist(qt, rt)
            v, i = torch.topk(d, k, dim=1, largest=False)
        else:
            v, i = torch.topk(qt @ rt.T, k, dim=1, largest=True)
        out_v[sl], out_i[sl] = v.numpy(), i.numpy()
    return out_v, out_i


def calibration_distances(
    train_unique: np.ndarray, rows: np.ndarray, k: int, *, search: str = "auto", ann_threshold: int = 50_000_000
) -> np.ndarray:
    """Mean l2 from ``train_unique[rows]`` to their ``k`` nearest *other* rows of ``train_unique``.

    ``train_unique`` must hold distinct rows (see :func:`dedupe_rows`), so no distance is 0.
    Returns an array of shape ``(len(rows),)``.
    """
    if k >= len(train_unique):
        raise ValueError(
            f"k={k} calibration neighbours need at least k+1={k + 1} distinct training images; there are {len(train_unique)}. Lower k."
        )
    rows = np.asarray(rows, dtype=np.int64)
    d, i = nearest_neighbors(train_unique[rows], train_unique, k + 1, search=search, ann_threshold=ann_threshold)
    # drop each point itself (it is its own nearest neighbour at distance 0; an ANN index may
    # miss it, then drop the farthest instead)
    keep = i != rows[:, None]
    out = np.empty(len(rows))
    for j in range(len(rows)):
        out[j] = d[j][keep[j]][:k].mean()
    return out

