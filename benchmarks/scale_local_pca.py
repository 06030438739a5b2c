"""Local PCA (LID_*) at scale: 10^4 - 10^6 points in R^512 with the faiss neighbour search.

Data: a union of three noisy spheres S^2, S^5, S^10 (one third of the points each, true LID 2, 5,
10), each in its own random (d+1)-dimensional subspace of R^512, centred at a random offset
(norm 10), with isotropic Gaussian noise of standard deviation ``--noise`` per coordinate;
generated in float32 blocks (10^6 x 512 float32 = 2 GB).

For each size n, in a fresh process (so that the peak memory is that run's):
``LocalPCA(k=100, search="faiss").fit(x).estimate()`` (defaults otherwise: Fukunaga-Olsen tau,
exact duplicates -> 0) on all n points, its wall time and the process's peak resident memory
(``resource.getrusage``, includes the 2 GB of data at 10^6), its CPU time (user + system, all
threads: on a shared machine a better measure of the work than wall time), and the MAE vs the
true LID; then,
on a random subset of ``--check`` points, the MAE of the same fitted estimator with *exact*
neighbours in the full data set (``faiss.knn``: brute force, float32, no copy of the data; not
timed; ``LocalPCA.estimate_from_neighbours``) against the faiss-search MAE on the same points.

    python benchmarks/scale_local_pca.py                      # 1e4 1e5
    python benchmarks/scale_local_pca.py --sizes 1e4 1e5 1e6 --threads 2   # the README table (about 25 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DIMS = (2, 5, 10)


def make_data(n: int, D: int, noise: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty((n, D), dtype=np.float32)
    lid = np.empty(n, dtype=np.int64)
    parts = np.array_split(np.arange(n), len(DIMS))
    for d, rows in zip(DIMS, parts):
        basis, _ = np.linalg.qr(rng.standard_normal((D, d + 1)))
        offset = rng.standard_normal(D)
        offset *= 10.0 / np.linalg.norm(offset)
        for start in range(0, len(rows), 65536):
            r = rows[start : start + 65536]
            g = rng.standard_normal((len(r), d + 1))
            g /= np.linalg.norm(g, axis=1, keepdims=True)
            x[r] = (g @ basis.T + offset).astype(np.float32) + noise * rng.standard_normal((len(r), D), dtype=np.float32)
        lid[rows] = d
    return x, lid


def run_one(args: argparse.Namespace, n: int) -> dict:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lidmem.estimators import LocalPCA
    import faiss

    x, true = make_data(n, args.dim, args.noise, args.seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t, cpu = time.perf_counter(), time.process_time()
    est = LocalPCA(args.k, search="faiss", progress=args.progress).fit(x)
    lid = est.estimate().numpy()
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB on Linux)
    sub = np.sort(np.random.default_rng(1).choice(n, min(args.check, n), replace=False))
    _, nn = faiss.knn(x[sub], x, args.k + 1)
    keep = nn != sub[:, None]  # each point is not its own neighbour; its exact copies are
    idx = np.stack([row[m][: args.k] for row, m in zip(nn, keep)])
    exact = est.estimate_from_neighbours(x[sub], idx).numpy()
    return {
        "n": n,
        "time_s": elapsed,
        "cpu_s": cpu,
        "peak_gib": peak,
        "data_gib": rss_data,
        "mae": float(np.abs(lid - true).mean()),
        "check": len(sub),
        "mae_faiss_sub": float(np.abs(lid[sub] - true[sub]).mean()),
        "mae_exact_sub": float(np.abs(exact - true[sub]).mean()),
        "agree_sub": float((exact == lid[sub]).mean()),
        "nlist": est._ivf.nlist,
        "nprobe": est.nprobe,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--noise", type=float, default=1e-4, help="noise per coordinate; at 10^6 points the k = 100 neighbourhoods of S^2 have radius ~0.035, so noise of norm ~0.07 (3e-3 x sqrt(512)) swamps them")
    parser.add_argument("--check", type=int, default=10_000, help="points scored again with exact neighbours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.one is not None:
        print(json.dumps(run_one(args, args.one)), flush=True)
        return
    rows = []
    for n in args.sizes:
        argv = [sys.executable, __file__, "--one", str(int(n))]
        for name in ("dim", "k", "noise", "check", "threads", "seed"):
            argv += [f"--{name}", str(getattr(args, name))]
        argv += ["--progress"] if args.progress else []
        res = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"D={args.dim}, k={args.k}, spheres S^{DIMS} + noise {args.noise}, search='faiss', threads={args.threads}")
    print(f"| {'n':>9} | {'time (s)':>8} | {'CPU (s)':>8} | {'peak mem (GiB)':>14} | {'MAE':>6} | {'MAE, check subset: faiss / exact nbrs':>37} | {'same LID':>8} |")
    print(f"|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 16}|{'-' * 8}|{'-' * 39}|{'-' * 10}|")
    for r in rows:
        sub = f"{r['mae_faiss_sub']:.4f} / {r['mae_exact_sub']:.4f} (n={r['check']})"
        print(f"| {r['n']:>9} | {r['time_s']:>8.1f} | {r['cpu_s']:>8.1f} | {r['peak_gib']:>14.2f} | {r['mae']:>6.4f} | {sub:>37} | {r['agree_sub']:>7.1%} |")


if __name__ == "__main__":
    main()
