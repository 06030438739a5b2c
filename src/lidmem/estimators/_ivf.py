"""Approximate k-nearest-neighbour blocks over a faiss coarse quantizer, for local PCA's
``search="faiss"`` (:class:`_IVFNeighbours`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from ..utils import chunk_slices

__all__: list[str] = []


class _IVFNeighbours:
    """Approximate k-nearest-neighbour search in blocks, for many queries at once.

    The coarse quantizer of the audit's faiss index (:func:`lidmem.neighbors.train_ivf_index`:
    ``sqrt(n)`` k-means lists) partitions the reference rows. Each query is assigned its
    ``nprobe`` nearest lists (as in faiss's IVF search); queries are grouped by their nearest
    list and each group is compared, with one float32 matrix product (BLAS 3) per block of at most
    ``block`` queries, with every row of the union of the group's lists (more lists, nearest
    centroid first, if that union has fewer than ``k + 1`` rows). Every query thus sees at least
    the rows faiss's ``IndexIVFFlat`` with the same ``nprobe`` would scan, and each reference row is
    read once per group instead of once per query, which is what makes 10^6 queries affordable on
    a CPU. Memory: the reference data (not copied), its list assignment, one group's rows and one
    block of distances.
    """

    def __init__(self, ref: np.ndarray, *, nprobe: int = 4, block: int = 1024) -> None:
        from ..neighbors import train_ivf_index

        self.ref = ref
        self.nprobe = nprobe
        self.block = block
        self.index = train_ivf_index(ref)  # kept alive: it owns the quantizer
        self.quantizer = self.index.quantizer
        self.nlist = int(self.index.nlist)
        self.centroids = self.quantizer.reconstruct_n(0, self.nlist)
        assign = self._lists(ref, 1)[:, 0]
        self.order = np.argsort(assign, kind="stable")
        self.bounds = np.searchsorted(assign[self.order], np.arange(self.nlist + 1))
        self.sq = np.empty(len(ref), dtype=np.float32)
        for sl in chunk_slices(len(ref), 65536):
            r = np.asarray(ref[sl], dtype=np.float32)
            self.sq[sl] = np.einsum("ij,ij->i", r, r)

    def _lists(self, x: np.ndarray, p: int) -> np.ndarray:
        out = np.empty((len(x), p), dtype=np.int64)
        for sl in chunk_slices(len(x), 65536):
            _, out[sl] = self.quantizer.search(np.ascontiguousarray(x[sl], dtype=np.float32), p)
        return out

    def _members(self, lists: np.ndarray) -> np.ndarray:
        return np.concatenate([self.order[self.bounds[c] : self.bounds[c + 1]] for c in lists])

    def blocks(self, query: np.ndarray, k: int, *, self_query: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, idx)``: query rows (q_b,) and their k nearest reference rows (q_b, k).

        With ``self_query`` the queries are the reference rows and each is excluded from its own
        neighbours (its exact duplicates are not).
        """
        p = min(self.nlist, self.nprobe)
        qlists = self._lists(query, p)
        qorder = np.argsort(qlists[:, 0], kind="stable")
        qbounds = np.searchsorted(qlists[qorder, 0], np.arange(self.nlist + 1))
        need = k + 1 if self_query else k
        where = np.full(len(self.ref), -1, dtype=np.int64) if self_query else None
        for c in range(self.nlist):
            rows = qorder[qbounds[c] : qbounds[c + 1]]
            if len(rows) == 0:
                continue
            chosen = np.unique(qlists[rows])
            size = int((self.bounds[chosen + 1] - self.bounds[chosen]).sum())
            if size < need:  # tiny lists: add the lists of the nearest centroids
                taken = set(chosen.tolist())
                extra = []
                for j in np.argsort(((self.centroids - self.centroids[c]) ** 2).sum(axis=1), kind="stable"):
                    if int(j) not in taken:
                        extra.append(int(j))
                        size += int(self.bounds[j + 1] - self.bounds[j])
                        if size >= need:
                            break
                chosen = np.concatenate([chosen, np.asarray(extra, dtype=np.int64)])
            cand = self._members(chosen)
            r = torch.from_numpy(np.ascontiguousarray(self.ref[cand], dtype=np.float32))
            rsq = torch.from_numpy(self.sq[cand])
            if where is not None:
                where[cand] = np.arange(len(cand))
            for sl in chunk_slices(len(rows), self.block):
                qr = rows[sl]
                qt = torch.from_numpy(np.ascontiguousarray(query[qr], dtype=np.float32))
                d2 = torch.addmm(rsq[None, :], qt, r.T, alpha=-2.0)  # |r|^2 - 2 q.r: same order as |q - r|^2
                if where is not None:
                    d2[torch.arange(len(qr)), torch.from_numpy(where[qr])] = math.inf
                idx = torch.topk(d2, k, dim=1, largest=False).indices.numpy()
                yield qr, cand[idx]
            if where is not None:
                where[cand] = -1
