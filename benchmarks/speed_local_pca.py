"""Speed of lidmem's local PCA vs scikit-dimension's ``lPCA().fit_pw`` (pointwise, k = 100).

Data: a 10-dimensional sphere S^10 (true LID 10) rotated into R^D with small Gaussian noise
(sigma = 1e-3), n = 1000 points; and scikit-dimension's benchmark manifold M8 (nonlinear, LID 12
in R^72, n = 1000; ``--no-m8`` to skip). Both estimators score every point from its k = 100
nearest other points with the Fukunaga-Olsen rule (explained variance > 0.05 x the largest);
lidmem also with its defaults and with the paper's rules (global 10th-percentile tau + radius
restriction). Each row runs on ``--threads`` torch and BLAS threads (``torch.set_num_threads`` and
threadpoolctl, set in this process, so 1 and 2 threads are compared in the same process); times
are wall-clock seconds, the median of ``--repeats`` runs (the machine may be shared: compare
ratios within a table, not absolute times across tables).

    python benchmarks/speed_local_pca.py                         # D in 784, 100, 20 + M8; 1 and 2 threads
    python benchmarks/speed_local_pca.py --dims 784 --threads 2
    python benchmarks/speed_local_pca.py --kernels-only   # ms per 101 x 101 matrix of the eigen kernels

The first table (``--kernels-only`` prints only it) times the kernels on 256 centred Gram matrices
of 101 points in R^784: ``torch.linalg.eigvalsh`` as is (on 2 threads only 16 matrices: the MKL
kernel is that slow), lidmem's ``batched_eigvalsh`` (one thread per part of the batch) and
``count_eigenvalues_above`` (Sylvester inertia by LDL^T, no eigenvalues).
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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-m8", action="store_true", help="skip scikit-dimension's M8 manifold (D = 72)")
    parser.add_argument("--kernels-only", action="store_true", help="print only the eigen-kernel table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(max(args.threads))

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    import skdim

    from lidmem.data.manifolds import sphere
    from lidmem.estimators import local_pca

    def median_time(fn):
        times, out = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times)), np.asarray(out, dtype=float)

    from lidmem.estimators.local_pca import batched_eigvalsh, count_eigenvalues_above

    y = torch.randn(256, args.k + 1, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y -= y.mean(dim=1, keepdim=True)
    gram = y @ y.transpose(1, 2)
    tau = float(torch.linalg.eigvalsh(gram[:1])[0, -10])
    print(f"eigen kernels, ms per {args.k + 1}x{args.k + 1} centred Gram matrix (median of {args.repeats})")
    print("| threads | torch.linalg.eigvalsh | batched_eigvalsh | count_eigenvalues_above |")
    print("|---------|-----------------------|------------------|-------------------------|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        raw = gram[:16] if threads > 1 else gram
        cells = []
        for fn, a in ((torch.linalg.eigvalsh, raw), (batched_eigvalsh, gram), (lambda g: count_eigenvalues_above(g, tau), gram)):
            cells.append(1e3 * median_time(lambda: fn(a))[0] / len(a))
        print(f"| {threads:>7} | {cells[0]:>21.3f} | {cells[1]:>16.3f} | {cells[2]:>23.3f} |")
    print()
    if args.kernels_only:
        return

    data = [(f"S^{args.lid}", D, *_sphere(sphere, args, D)) for D in args.dims]
    if not args.no_m8:
        bm = skdim.datasets.BenchmarkManifolds(random_state=0)
        data.append(("M8", 72, bm.generate(name="M8_Nonlinear", n=args.n, dim=72, d=12), 12))
    rows = []
    for name_data, D, x, true in data:
        for threads in args.threads:
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads), np.errstate(all="ignore"):
                t_sk, sk = median_time(lambda: skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(x, n_neighbors=args.k).dimension_pw_)
                t_fo, fo = median_time(lambda: local_pca(x, k=args.k, tau="fo", radius=None, progress=False).numpy())
                t_df, df = median_time(lambda: local_pca(x, k=args.k, progress=False).numpy())
                t_pp, pp = median_time(lambda: local_pca(x, k=args.k, tau="percentile", radius="percentile", progress=False).numpy())
            runs = (("skdim lPCA().fit_pw (FO)", t_sk, sk), ("lidmem local_pca tau='fo', radius=None", t_fo, fo),
                    ("lidmem local_pca (defaults)", t_df, df), ("lidmem local_pca (paper's tau/radius)", t_pp, pp))
            for name, t, est in runs:
                rows.append((name_data, D, threads, name, t, t_sk / t, float(np.abs(est - true).mean()), float(est.mean())))

    print(f"n={args.n}, k={args.k}; S^{args.lid} + noise {args.noise} (true LID {args.lid}), M8 (true LID 12); median of {args.repeats}")
    print(f"| data | {'D':>4} | threads | {'estimator':<38} | {'time (s)':>8} | {'speed-up':>8} | {'MAE':>6} | {'mean LID':>8} |")
    print(f"|------|{'-' * 6}|---------|{'-' * 40}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 10}|")
    for name_data, D, threads, name, t, sp, mae, mean in rows:
        print(f"| {name_data:<4} | {D:>4} | {threads:>7} | {name:<38} | {t:>8.3f} | {sp:>7.1f}x | {mae:>6.3f} | {mean:>8.2f} |")


def _sphere(sphere, args, D):
    s = sphere(args.n, dim=args.lid, ambient_dim=D, noise=args.noise, seed=0)
    return s.points, s.lid


if __name__ == "__main__":
    main()
