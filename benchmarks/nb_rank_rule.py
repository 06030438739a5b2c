"""Which normal-bundle rank cut does ``lidmem score --metrics nb`` default to? The per-image
``"gap"`` rule against the paper's global 10th-percentile ``tau`` fitted on the first batch only
(what ``score_dataset`` does, so every shard and every resumed run cuts at one place).

The shipped digits UNet (``src/lidmem/weights/digits_unet.safetensors``, 8x8, d = 64) on the
first ``--n`` scikit-learn digits mapped to [-1, 1]; normal bundle at ``lidmem.defaults.NB_T0``
with 4d = 256 noisy scores per image (seed 0). Prints, per rule, how many images get LID d - 1
(= 63: the rule found a single normal direction) and the LID histogram, and how far the tau
fitted on the first ``--batch-size`` images is from the tau of all images.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/nb_rank_rule.py [--n 200] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def main() -> None:
    from sklearn.datasets import load_digits

    from lidmem.defaults import NB_T0
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.estimators._rank import cut_rank, percentile_threshold
    from lidmem.estimators.normal_bundle import normal_bundle_singular_values
    from lidmem.utils import shipped_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    model = load_score_model(shipped_weights()["digits_unet"]).eval()
    x = torch.tensor(load_digits().images[: args.n] / 16.0 * 2 - 1, dtype=torch.float32)[:, None]
    d, k = 64, 256
    start = time.perf_counter()
    with torch.no_grad():
        sv = normal_bundle_singular_values(model, x, NB_T0, n_scores=k, seed=0, progress=False)
    seconds = time.perf_counter() - start
    sigma = float(model.sde.sigma(torch.tensor(NB_T0, dtype=torch.float64)))
    tau_batch = percentile_threshold(sv[: args.batch_size], 10.0)
    tau_all = percentile_threshold(sv, 10.0)
    rules = {
        "gap (per image)": d - cut_rank(sv, "gap", shape=(d, k), reference=math.sqrt(k) / sigma),
        f"percentile, tau from the first {args.batch_size}": d - cut_rank(sv, tau_batch, shape=(d, k)),
        "percentile, tau from all": d - cut_rank(sv, tau_all, shape=(d, k)),
    }
    print(f"digits UNet, {args.n} digits, nb t0 = {NB_T0}, {k} scores per image ({seconds:.0f} s)")
    print(f"tau from the first {args.batch_size} images: {tau_batch:.3f}; from all {args.n}: {tau_all:.3f}")
    print(f"{'rule':<38} {'LID = d-1':>9} {'median':>6}  LID histogram 0..12")
    for name, lid in rules.items():
        hist = np.bincount(lid.numpy(), minlength=d + 1)[:13]
        print(f"{name:<38} {int((lid == d - 1).sum()):>9} {float(lid.double().median()):>6.1f}  {hist.tolist()}")


if __name__ == "__main__":
    main()
