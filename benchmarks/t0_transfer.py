"""Does a label-free FLIPD ``t0`` transfer across data sets? AUROC / TPR@1%FPR of FLIPD (low = copy)
for fixed ``t0`` values and for the automatic rules, on two planted-duplicate data sets of
different image size.

- ``digits``: the shipped digits UNet (``src/lidmem/weights/digits_unet.safetensors``, 8x8,
  d = 64) on :func:`lidmem.data.images.load_digits_with_duplicates` (30 images x 30 copies).
- ``patches``: grey 16x16 photo tiles (d = 256) with 10 tiles x 20 copies among 400
  (:func:`lidmem.data.images.load_patches_with_duplicates`), a ``UNetScoreNet(16, (16, 32, 64))``
  trained here with :func:`lidmem.diffusion.training.train_score_model` (VP-SDE, epsilon,
  ``--patch-steps`` = 1,500 steps, 0.14 s CPU per step on one thread, ~4 min CPU; cached in
  ``--cache``; 9 min wall for samples + curves under heavy load).

For each data set: ``--num-samples`` samples from the probability-flow ODE (30 Heun steps, as
the digits demo), copy labels from :func:`lidmem.memorization.copy_detection.find_copies`
(defaults; positive = exact or near copy), the FLIPD curve on :func:`default_t0_grid`
(Hutchinson, 8 Rademacher probes, as the audit) - all cached as ``<name>_curves.npz``. Then the
table: AUROC / TPR@1%FPR per grid ``t0``, and the ``t0`` each rule picks with its AUROC. Every
AUROC / TPR carries its 95% bootstrap interval over samples
(:func:`lidmem.memorization.metrics.bootstrap_interval`, 1,000 resamples, seed 0) and the number
of copies it rests on is printed.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/t0_transfer.py [--cache build/t0_transfer] [--num-samples 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lidmem.data.images import load_digits_with_duplicates, load_patches_with_duplicates
from lidmem.diffusion.checkpoint import load_score_model
from lidmem.diffusion.sampling import sample_ode
from lidmem.estimators import flipd_curve
from lidmem.estimators.flipd import default_t0_grid, select_t0
from lidmem.estimators import flipd
from lidmem.estimators.t0 import DEFAULT_T0_FACTOR, nearest_neighbour_scale, t0_from_training_data
from lidmem.memorization.copy_detection import find_copies
from lidmem.memorization.metrics import detection_metrics, format_with_interval

PATCH_STEPS = 1500
FACTORS = (0.5, 1.0, 2.0, 4.0)
BELOW_GRID = (1e-4, 3e-4)  # fixed times below default_t0_grid(), printed with the rules


def cells(labels: np.ndarray, scores: np.ndarray) -> tuple[str, str]:
    """AUROC and TPR@1%FPR of FLIPD (low = copy), each with its 95% bootstrap interval."""
    r = detection_metrics("flipd", labels, scores, higher_is_positive=False, interval=True)
    return format_with_interval(r.auroc, r.auroc_ci), format_with_interval(r.tpr_at_1pct_fpr, r.tpr_at_1pct_fpr_ci)


def patches_model(cache: Path, steps: int):
    """Train (or resume / load from ``cache``) the 16x16 patches UNet."""
    from lidmem.diffusion.sde import VPSDE
    from lidmem.diffusion.training import train_score_model
    from lidmem.diffusion.unet import UNetScoreNet

    data = load_patches_with_duplicates()
    ckpt = cache / f"patches_unet_{steps}.safetensors"
    if ckpt.is_file() and not (cache / (ckpt.name + ".train_state.pt")).is_file():
        return load_score_model(ckpt), data
    torch.manual_seed(0)
    net = UNetScoreNet(16, in_channels=1, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8)
    c0 = time.process_time()
    res = train_score_model(net, data.images, VPSDE(), prediction="epsilon", steps=steps, batch_size=128, lr=1e-3,
                            ema_decay=0.999, seed=0, checkpoint=ckpt, checkpoint_every=500, extra={"data": data.recipe},
                            progress=False)
    print(f"patches UNet: {steps} steps, {time.process_time() - c0:.0f} s CPU this call, final loss {res.losses[-100:].mean():.4f}")
    (cache / (ckpt.name + ".train_state.pt")).unlink()
    return res.model, data


def digits_model():
    from lidmem.experiments.digits import shipped_digits_checkpoints

    return load_score_model(shipped_digits_checkpoints()["unet"]), load_digits_with_duplicates()


def curves(name: str, model, data, cache: Path, n: int, grid: list[float]) -> dict[str, np.ndarray]:
    """Samples, copy labels and FLIPD curves of one data set (cached)."""
    path = cache / f"{name}_curves_{n}.npz"
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    shape = tuple(data.images.shape[1:])
    t = time.perf_counter()
    xs = []
    for i, lo in enumerate(range(0, n, 256)):  # as the audit: chunks of 256, seed + chunk index
        with torch.no_grad():
            xs.append(sample_ode(model, (min(256, n - lo), *shape), steps=30, denoise=True, seed=i, progress=False))
    x = torch.cat(xs)
    m = find_copies(x.numpy(), data.images)
    c = flipd_curve(model, x, grid, trace="hutchinson", n_probes=8, seed=0, progress=False).double().numpy()
    out = {"samples": x.numpy(), "copy": (m.labels != "none"), "exact": (m.labels == "exact_copy"), "curve": c,
           "grid": np.asarray(grid), "train": data.images}
    np.savez(path, **out)
    print(f"{name}: {n} samples + curves in {time.perf_counter() - t:.0f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("build/t0_transfer"))
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--patch-steps", type=int, default=PATCH_STEPS)
    ap.add_argument("--only", choices=["digits", "patches"], default=None)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    grid = default_t0_grid()
    sets = {}
    for name in ("digits", "patches"):
        if args.only not in (None, name):
            continue
        model, data = digits_model() if name == "digits" else patches_model(args.cache, args.patch_steps)
        sets[name] = (model, curves(name, model, data, args.cache, args.num_samples, grid))

    print("\nFLIPD (low = copy) against copy labels (exact or near copy); [95% bootstrap interval]:")
    print("positives: " + ", ".join(f"{n} {int(r['copy'].sum())} copies of {len(r['copy'])} samples" for n, (_, r) in sets.items()))
    print(f"{'t0':>8} | " + " | ".join(f"{n + ' AUROC':>22}  {'TPR@1%':>21}" for n in sets))
    for j, t0 in enumerate(grid):
        row = [cells(r["copy"], r["curve"][:, j]) for _, r in sets.values()]
        print(f"{t0:>8.4f} | " + " | ".join(f"{a:>22}  {b:>21}" for a, b in row))
    for name, (model, r) in sets.items():
        print(f"\n{name}: {int(r['copy'].sum())} copies / {len(r['copy'])} samples; median FLIPD copies vs others per t0:")
        print("  " + "  ".join(f"{t:.3g}:{np.median(r['curve'][r['copy'], j]):.1f}/{np.median(r['curve'][~r['copy'], j]):.1f}"
                              for j, t in enumerate(grid)))
    print("\nrules (label-free; FLIPD recomputed at the chosen t0, same probes):")
    print(f"{'data':>8} {'rule':<34} {'t0':>7} {'AUROC [95% CI]':>22} {'TPR@1% [95% CI]':>22}")
    for name, (model, r) in sets.items():
        rows = {"select_t0 knee (sde=)": select_t0(r["curve"], grid, sde=model.sde),
                "select_t0 knee (no sde)": select_t0(r["curve"], grid),
                "max spread (IQR) of the curve": max_spread_t0(r["curve"], grid)}
        for f in FACTORS:
            label = f"nn gap, factor {f:g}" + (" (t0='auto')" if f == DEFAULT_T0_FACTOR else "")
            rows[label] = t0_from_training_data(model.sde, r["train"], factor=f)
        for t0 in BELOW_GRID:
            rows[f"fixed {t0:g} (below the grid)"] = t0
        x = torch.from_numpy(r["samples"])
        for label, t0 in rows.items():
            s = flipd(model, x, t0, trace="hutchinson", n_probes=8, seed=0, progress=False).double().numpy()
            a, b = cells(r["copy"], s)
            print(f"{name:>8} {label:<34} {t0:>7.4f} {a:>22} {b:>22}")
        print(f"{name:>8} training nearest-neighbour gap r_nn (median) = {nearest_neighbour_scale(r['train']):.3f}, d = "
              f"{int(np.prod(r['train'].shape[1:]))}")


def max_spread_t0(curve: np.ndarray, grid: list[float]) -> float:
    """Candidate rule: the grid time where FLIPD varies most across samples (interquartile range)."""
    q75, q25 = np.percentile(curve, [75, 25], axis=0)
    return float(grid[int(np.argmax(q75 - q25))])


if __name__ == "__main__":
    main()
