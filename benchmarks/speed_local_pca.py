"""Speed of lidmem's local PCA vs scikit-dimension's ``lPCA().fit_pw`` (pointwise, k = 100).

Data: a 10-dimensional sphere S^10 (true LID 10) rotated into R^D with small Gaussian noise
(sigma = 1e-3), n = 1000 points. Both estimators score every point from its k = 100 nearest other
points with the Fukunaga-Olsen rule (explained variance > 0.05 x the largest); lidmem also with its
defaults and with the paper's rules (global 10th-percentile tau + radius restriction). Times are wall-clock seconds,
best of ``--repeats`` runs, on ``--threads`` BLAS/torch threads.

    python benchmarks/speed_local_pca.py            # D in 784, 100, 20
    python benchmarks/speed_local_pca.py --dims 784 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--dims", type=int, nargs="+", default=[784, 100, 20])
    parser.add_argument("--lid", type=int, default=10, help="sphere dimension (true LID)")
    parser.add_argument("--noise", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import skdim

    from lidmem.data.manifolds import sphere
    from lidmem.estimators import local_pca

    def best(fn):
        times, out = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), np.asarray(out, dtype=float)

    rows = []
    for D in args.dims:
        s = sphere(args.n, dim=args.lid, ambient_dim=D, noise=args.noise, seed=0)
        x = s.points
        with np.errstate(all="ignore"):
            t_sk, sk = best(lambda: skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(x, n_neighbors=args.k).dimension_pw_)
        t_fo, fo = best(lambda: local_pca(x, k=args.k, tau="fo", radius=None, progress=False).numpy())
        t_df, df = best(lambda: local_pca(x, k=args.k, progress=False).numpy())
        t_pp, pp = best(lambda: local_pca(x, k=args.k, tau="percentile", radius="percentile", progress=False).numpy())
        runs = (("skdim lPCA().fit_pw (FO)", t_sk, sk), ("lidmem local_pca tau='fo', radius=None", t_fo, fo),
                ("lidmem local_pca (defaults)", t_df, df), ("lidmem local_pca (paper's tau/radius)", t_pp, pp))
        for name, t, est in runs:
            rows.append((D, name, t, t_sk / t, float(np.abs(est - s.lid).mean()), float(est.mean())))

    print(f"n={args.n}, k={args.k}, S^{args.lid} + noise {args.noise} (true LID {args.lid}), threads={args.threads}, best of {args.repeats}")
    print(f"| {'D':>4} | {'estimator':<34} | {'time (s)':>8} | {'speed-up':>8} | {'MAE':>6} | {'mean LID':>8} |")
    print(f"|{'-' * 6}|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 10}|")
    for D, name, t, sp, mae, mean in rows:
        print(f"| {D:>4} | {name:<34} | {t:>8.3f} | {sp:>7.1f}x | {mae:>6.3f} | {mean:>8.2f} |")


if __name__ == "__main__":
    main()
