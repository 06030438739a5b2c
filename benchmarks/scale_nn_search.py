"""Nearest-neighbour search of the memorization audit on 1e5-1e6 reference vectors.

Usage::

    python benchmarks/scale_nn_search.py                       # 1e5 x 64 and 1e6 x 32
    python benchmarks/scale_nn_search.py --sizes 100000:64 --queries 1000

Compares, for the copy-detection step (nearest training row of each query):

- ``lidmem exact``: :func:`lidmem.memorization.copy_detection.nearest_neighbors` with
  ``search="exact"`` (chunked brute force in torch, float64 ``cdist``),
- ``torch exact f32``: the same brute force in float32 with the ``|q|^2 - 2 q.r + |r|^2``
  matmul form, chunked over queries *and* reference rows (memory ``chunk x chunk``),
- ``faiss Flat``: exact ``IndexFlatL2``,
- ``lidmem faiss (IVF-Flat)``: ``search="faiss"`` (``IndexIVFFlat``, ``nlist = sqrt(n)``,
  trained on at most 64 rows per list, ``nprobe = max(16, nlist // 32)``), build + search.

Data: clustered Gaussians (1000 centres); half of the queries are near-copies of reference
rows (tiny noise), half are fresh draws, as in an audit of generated samples. Recall@1 is
measured against the exact answer.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def make_data(n: int, d: int, n_query: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32) * 3
    ref = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, d)).astype(np.float32)
    half = n_query // 2
    copies = ref[rng.integers(0, n, half)] + 0.01 * rng.standard_normal((half, d)).astype(np.float32)
    fresh = centres[rng.integers(0, 1000, n_query - half)] + rng.standard_normal((n_query - half, d)).astype(np.float32)
    return ref, np.concatenate([copies, fresh])


def torch_exact_f32(q: np.ndarray, r: np.ndarray, *, q_chunk: int = 1024, r_chunk: int = 65536) -> np.ndarray:
    """Index of the nearest row of ``r`` for each row of ``q``; memory ``q_chunk x r_chunk`` floats."""
    qt, rt = torch.from_numpy(q), torch.from_numpy(r)
    rn = (rt * rt).sum(1)
    out = np.empty(len(q), np.int64)
    for qs in range(0, len(q), q_chunk):
        qc = qt[qs : qs + q_chunk]
        best_d = torch.full((len(qc),), float("inf"))
        best_i = torch.zeros(len(qc), dtype=torch.int64)
        for rs in range(0, len(r), r_chunk):
            d2 = rn[rs : rs + r_chunk][None] - 2 * qc @ rt[rs : rs + r_chunk].T  # |q|^2 omitted: constant per row
            v, i = d2.min(1)
            better = v < best_d
            best_d = torch.where(better, v, best_d)
            best_i = torch.where(better, i + rs, best_i)
        out[qs : qs + q_chunk] = best_i.numpy()
    return out


def run(n: int, d: int, n_query: int) -> list[dict]:
    import faiss

    from lidmem.memorization.copy_detection import nearest_neighbors

    ref, q = make_data(n, d, n_query)
    rows = []

    def record(name: str, build: float, search: float, idx: np.ndarray, exact: np.ndarray | None) -> np.ndarray:
        recall = float(np.mean(idx == exact)) if exact is not None else 1.0
        rows.append({"n": n, "d": d, "method": name, "build_s": build, "search_s": search, "qps": n_query / search, "recall": recall})
        return idx

    t = time.perf_counter()
    index = faiss.IndexFlatL2(d)
    index.add(ref)
    b = time.perf_counter() - t
    t = time.perf_counter()
    _, fi = index.search(q, 1)
    exact = record("faiss Flat (exact)", b, time.perf_counter() - t, fi[:, 0], None)
    del index

    # lidmem's exact search: float64 cdist over query chunks; chunk so that chunk x n doubles stay ~0.5 GB
    chunk = max(1, int(5e8 // (8 * n)))
    t = time.perf_counter()
    _, li = nearest_neighbors(q, ref, 1, search="exact", batch_size=chunk)
    record(f"lidmem exact (torch f64, chunk {chunk})", 0.0, time.perf_counter() - t, li[:, 0], exact)

    t = time.perf_counter()
    ti = torch_exact_f32(q, ref)
    record("torch exact f32 (matmul, 2-D chunks)", 0.0, time.perf_counter() - t, ti, exact)

    t = time.perf_counter()
    _, vi = nearest_neighbors(q, ref, 1, search="faiss")
    record("lidmem faiss (IVF-Flat), build+search", 0.0, time.perf_counter() - t, vi[:, 0], exact)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000:64,1000000:32", help="comma-separated n:d pairs")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    import faiss

    print(f"# nearest-neighbour search, {args.queries} queries, torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}\n")
    print("| reference rows | dim | method | build s | search s | queries/s | recall@1 |")
    print("|---|---|---|---|---|---|---|")
    for pair in args.sizes.split(","):
        n, d = (int(v) for v in pair.split(":"))
        for r in run(n, d, args.queries):
            print(f"| {r['n']:,} | {r['d']} | {r['method']} | {r['build_s']:.2f} | {r['search_s']:.2f} | {r['qps']:.0f} | {r['recall']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
