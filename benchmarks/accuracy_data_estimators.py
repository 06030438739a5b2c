"""Accuracy of the LID_* estimators on manifolds of known LID.

For each manifold of :mod:`lidmem.data.manifolds` (n points, k nearest neighbours) and each
estimator, prints the mean absolute error (MAE) against the true per-point LID, and, per
estimator, Lin's concordance correlation coefficient (CCC) between estimates and truth pooled
over all manifolds (1 = perfect agreement; it penalises bias as well as scatter).

Estimators: lidmem local PCA with the paper's defaults (global 10th-percentile tau + radius
restriction), local PCA with the Fukunaga-Olsen rule (``tau="fo"``) with and without the radius
restriction, and scikit-dimension's MLE, TwoNN, ESS and lPCA (FO) made pointwise by
:func:`lidmem.estimators.skdim_lid`. "dup" marks data with duplicate rows, which TwoNN rejects.

    OMP_NUM_THREADS=1 python benchmarks/accuracy_data_estimators.py [--n 600] [--k 50]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from lidmem.data import manifolds as M
    from lidmem.estimators import local_pca, skdim_lid

    n, seed = args.n, args.seed
    data = {
        "plane 2 in R^20": M.affine_subspace(n, dim=2, ambient_dim=20, seed=seed),
        "plane 5 in R^20 + noise .01": M.affine_subspace(n, dim=5, ambient_dim=20, noise=0.01, seed=seed),
        "S^2 in R^10": M.sphere(n, dim=2, ambient_dim=10, seed=seed),
        "S^5 in R^20": M.sphere(n, dim=5, ambient_dim=20, seed=seed),
        "torus in R^10": M.torus(n, ambient_dim=10, seed=seed),
        "helix in R^10": M.helix(n, ambient_dim=10, seed=seed),
        "union 0,1,2,5 in R^10": M.union_of_subspaces(n, seed=seed),
        "von Mises + origin (n=100, k=20)": M.von_mises_mixture(100, seed=seed),
    }
    estimators = {
        "lpca paper": lambda x, k: local_pca(x, k=k, progress=False),
        "lpca fo": lambda x, k: local_pca(x, k=k, tau="fo", radius=None, progress=False),
        "lpca fo+radius": lambda x, k: local_pca(x, k=k, tau="fo", progress=False),
        "skdim mle": lambda x, k: skdim_lid(x, estimator="mle", k=k, progress=False),
        "skdim twonn": lambda x, k: skdim_lid(x, estimator="twonn", k=k, progress=False),
        "skdim ess": lambda x, k: skdim_lid(x, estimator="ess", k=k, progress=False),
        "skdim lpca": lambda x, k: skdim_lid(x, estimator="lpca", k=k, progress=False),
    }
    mae: dict[tuple[str, str], str] = {}
    pooled: dict[str, tuple[list, list]] = {e: ([], []) for e in estimators}
    seconds: dict[str, float] = {e: 0.0 for e in estimators}
    for dname, s in data.items():
        k = min(args.k, 20) if len(s) <= 100 else args.k
        for ename, fn in estimators.items():
            t = time.perf_counter()
            try:
                est = np.asarray(fn(s.points, k), dtype=float)
            except ValueError as exc:
                if "duplicate" not in str(exc):
                    raise
                mae[dname, ename] = "dup"
                continue
            seconds[ename] += time.perf_counter() - t
            mae[dname, ename] = f"{np.abs(est - s.lid).mean():.3f}"
            pooled[ename][0].append(est)
            pooled[ename][1].append(s.lid.astype(float))

    def ccc(a, b):
        a, b = np.concatenate(a), np.concatenate(b)
        return 2 * np.cov(a, b, bias=True)[0, 1] / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)

    names = list(estimators)
    print(f"MAE against the true LID (n={n} per manifold, k={args.k}, seed={seed})")
    print("| manifold | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for dname in data:
        print(f"| {dname} | " + " | ".join(mae[dname, e] for e in names) + " |")
    print("| **CCC, pooled** | " + " | ".join(f"{ccc(*pooled[e]):.3f}" for e in names) + " |")
    print("| time (s), total | " + " | ".join(f"{seconds[e]:.1f}" for e in names) + " |")


if __name__ == "__main__":
    main()
