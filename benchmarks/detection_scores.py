"""Copy detection beyond digits: label-free FLIPD ``t0`` rules and label-free scores built on
FLIPD, side by side, on two planted-duplicate data sets of different image size. AUROC /
TPR@1%FPR (low score = copy unless said) against ``find_copies`` labels, each with its 95%
bootstrap interval over samples and the number of copies it rests on. (Formerly
``benchmarks/t0_transfer.py``.)

- ``digits``: the shipped digits UNet (``src/lidmem/weights/digits_unet.safetensors``, 8x8,
  d = 64) on :func:`lidmem.data.images.load_digits_with_duplicates` (30 images x 30 copies).
- ``patches``: grey 16x16 photo tiles (d = 256; :func:`lidmem.data.images.load_patches_with_duplicates`:
  400 tiles, 10 of them x 20 copies, 590 rows) and the ``lidmem train --preset photo16`` model
  (v-prediction UNet 32/64, 1,800 steps, batch 64; 8.6 CPU-min) at ``--patches-model``
  (default ``build/train_presets/patches16_photo16.safetensors``, the file
  ``benchmarks/train_presets.py train --dataset patches16 --preset photo16`` writes); trained
  here with :func:`lidmem.workflows.train.train_image_model` if missing.

For each data set: ``--num-samples`` samples from the probability-flow ODE (30 Heun steps),
copy labels from :func:`lidmem.memorization.copy_detection.find_copies` (defaults; positive =
exact or near copy), and FLIPD (Hutchinson, 8 Rademacher probes, as the audit) of the samples on
:func:`default_t0_grid` plus the times of the label-free rules; FLIPD of the *training* images
(at most 500 distinct ones, drawn with seed 0, plus every sample's nearest training image) at the
rules' times. All cached in ``--cache`` as ``<name>_<n>.npz``.

Tables: (1) AUROC / TPR@1%FPR per grid ``t0``; (2) the ``t0`` each label-free rule picks;
(3) label-free scores at the label-free ``t0`` (``t0_from_training_data``; labels choose nothing):

- ``raw``: FLIPD at ``t0``.
- ``robust z``: ``(FLIPD - median) / MAD`` of the training images' FLIPD at ``t0`` (a monotone
  map of ``raw``: same ranking, printed to show that a per-``t0`` normalisation alone cannot help).
- ``minus nearest training image``: FLIPD(sample) - FLIPD(its nearest training image), same ``t0``.
- ``multi-t0 mean z`` / ``mean FLIPD``: the mean over the rule's times for factors 0.5, 1, 2, 4
  (the "window") of the robust z / of FLIPD.
- ``multi-t0 slope``: least-squares slope of FLIPD against log t0 over the same times.
- ``FLIPD / PNG`` (the audit's ``lid_theta_png``) and ``PNG residual``: FLIPD minus its
  least-squares fit on log PNG length over the training images (complexity correction).
- ``PNG length`` alone (the complexity proxy).

(4) Why a score fails: copies of planted vs of other training images, PNG length of copies and
others, corr(FLIPD, log PNG), FLIPD's median against d, FLIPD on planted vs other training images.
Measured (docs/t0.md): digits reach AUROC 0.998 with raw FLIPD; on the patches no score reaches
0.95 (raw FLIPD 0.671, best 0.726: PNG length alone).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/detection_scores.py [--cache build/detection_scores] [--num-samples 300] [--only patches]
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
from lidmem.estimators.t0 import (
    DEFAULT_T0_FACTOR,
    nearest_neighbour_scale,
    t0_from_training_data,
)
from lidmem.memorization.complexity import png_length
from lidmem.memorization.copy_detection import find_copies
from lidmem.memorization.metrics import detection_metrics, format_with_interval

FACTORS = (0.5, 1.0, 2.0, 4.0)
BELOW_GRID = (1e-4, 3e-4)  # fixed times below default_t0_grid(), printed with the rules
MAX_REFERENCE = 500  # distinct training images whose FLIPD is the reference distribution


def cells(labels: np.ndarray, scores: np.ndarray, low: bool = True) -> tuple[str, str]:
    """AUROC and TPR@1%FPR (low = copy unless ``low=False``), each with its 95% bootstrap interval."""
    r = detection_metrics("score", labels, scores, higher_is_positive=not low, interval=True)
    return format_with_interval(r.auroc, r.auroc_ci), format_with_interval(r.tpr_at_1pct_fpr, r.tpr_at_1pct_fpr_ci)


def patches_model(path: Path):
    """The ``--preset photo16`` model of the 16x16 patches (trained here if ``path`` is missing)."""
    data = load_patches_with_duplicates()
    if not path.is_file():
        from lidmem.workflows.train import train_image_model

        path.parent.mkdir(parents=True, exist_ok=True)
        c0 = time.process_time()
        train_image_model(data.images, path, preset="photo16", seed=0, progress=False, extra={"data": data.recipe})
        print(f"patches: trained --preset photo16 in {time.process_time() - c0:.0f} s CPU")
    return load_score_model(path), data


def digits_model():
    from lidmem.experiments.digits import shipped_digits_checkpoints

    return load_score_model(shipped_digits_checkpoints()["unet"]), load_digits_with_duplicates()


def rule_times(model, train: np.ndarray) -> dict[str, float]:
    """The label-free times that need FLIPD beyond the grid: the NN-gap rule per factor, fixed small times."""
    out = {f"nn gap, factor {f:g}" + (" (t0='auto')" if f == DEFAULT_T0_FACTOR else ""): t0_from_training_data(model.sde, train, factor=f)
           for f in FACTORS}
    out.update({f"fixed {t:g} (below the grid)": t for t in BELOW_GRID})
    return out


def evaluate(name: str, model, data, cache: Path, n: int) -> dict[str, np.ndarray]:
    """Samples, copy labels, FLIPD curves of the samples and of the reference training images (cached)."""
    path = cache / f"{name}_{n}.npz"
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    shape = tuple(data.images.shape[1:])
    train = data.images
    rules = rule_times(model, train)
    times = np.unique(np.concatenate([default_t0_grid(), list(rules.values())]))
    c0 = time.process_time()
    samples_path = cache / f"{name}_{n}_samples.npz"
    if samples_path.is_file():
        x = torch.from_numpy(np.load(samples_path)["samples"])
    else:
        xs = []
        for i, lo in enumerate(range(0, n, 256)):  # as the audit: chunks of 256, seed + chunk index
            with torch.no_grad():
                xs.append(sample_ode(model, (min(256, n - lo), *shape), steps=30, denoise=True, seed=i, progress=False))
        x = torch.cat(xs)
        np.savez(samples_path, samples=x.numpy())
    m = find_copies(x.numpy(), train)
    curve = flipd_curve(model, x, times, trace="hutchinson", n_probes=8, seed=0, progress=False).double().numpy()
    # reference: distinct training images (first row of each), at most MAX_REFERENCE, + every nearest training image
    _, first = np.unique(train.reshape(len(train), -1), axis=0, return_index=True)
    ref = np.sort(np.random.default_rng(0).permutation(np.sort(first))[:MAX_REFERENCE])
    rows = np.union1d(ref, m.nn_index)
    window = np.array(sorted(rules[k] for k in rules if k.startswith("nn gap")))
    train_curve = flipd_curve(model, torch.from_numpy(train[rows]), window, trace="hutchinson", n_probes=8, seed=0,
                              progress=False).double().numpy()
    out = {"samples": x.numpy(), "copy": m.labels != "none", "exact": m.labels == "exact_copy", "nn": m.nn_index,
           "times": times, "curve": curve, "window": window, "train_rows": rows, "ref_rows": ref, "train_curve": train_curve,
           "png_samples": png_length(x.numpy()), "png_train": png_length(train[rows])}
    np.savez(path, **out)
    print(f"{name}: {n} samples + curves in {time.process_time() - c0:.0f} s CPU")
    return out


def _at(times: np.ndarray, t: float) -> int:
    j = int(np.argmin(np.abs(np.log(times) - np.log(t))))
    if not np.isclose(times[j], t, rtol=1e-9):
        raise ValueError(f"t0 = {t} is not among the computed times")
    return j


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(values - median(reference)) / (1.4826 MAD(reference))`` per column (last axis matched)."""
    med = np.median(reference, axis=0)
    mad = 1.4826 * np.median(np.abs(reference - med), axis=0)
    return (values - med) / np.where(mad > 0, mad, 1.0)


def label_free_scores(r: dict[str, np.ndarray], t0: float) -> dict[str, tuple[np.ndarray, bool]]:
    """Every label-free score of one data set at ``t0``: name -> (score, low = copy)."""
    window = r["window"]
    cols = [_at(r["times"], t) for t in window]
    s_win = r["curve"][:, cols]  # samples at the window times
    rows = r["train_rows"]
    ref = r["train_curve"][np.isin(rows, r["ref_rows"])]  # distinct training images
    nn_curve = r["train_curve"][np.searchsorted(rows, r["nn"])]  # each sample's nearest training image
    k = _at(window, t0)
    raw = s_win[:, k]
    z = robust_z(s_win, ref)
    logt = np.log(window)
    slope = ((logt - logt.mean()) @ (s_win - s_win.mean(1, keepdims=True)).T) / ((logt - logt.mean()) ** 2).sum()
    png_s, png_ref = r["png_samples"], r["png_train"][np.isin(rows, r["ref_rows"])]
    a, b = np.polyfit(np.log(png_ref), ref[:, k], 1)
    return {
        "raw FLIPD": (raw, True),
        "robust z vs training FLIPD": (z[:, k], True),
        "minus nearest training image's FLIPD": (raw - nn_curve[:, k], True),
        "multi-t0 mean robust z (factors 0.5-4)": (z.mean(1), True),
        "multi-t0 mean FLIPD (factors 0.5-4)": (s_win.mean(1), True),
        "multi-t0 slope d FLIPD / d log t0": (slope, True),
        "multi-t0 slope (high = copy)": (slope, False),
        "FLIPD / PNG length (audit lid_theta_png)": (raw / png_s, True),
        "PNG residual: FLIPD - fit(log PNG) on training": (raw - (a * np.log(png_s) + b), True),
        "PNG length alone": (png_s, True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("build/detection_scores"))
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--patches-model", type=Path, default=Path("build/train_presets/patches16_photo16.safetensors"))
    ap.add_argument("--only", choices=["digits", "patches"], default=None)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    grid = default_t0_grid()
    sets = {}
    for name in ("digits", "patches"):
        if args.only not in (None, name):
            continue
        model, data = digits_model() if name == "digits" else patches_model(args.patches_model)
        sets[name] = (model, data, evaluate(name, model, data, args.cache, args.num_samples))

    print("\n(1) FLIPD (low = copy) per t0 against copy labels (exact or near copy); [95% bootstrap interval]:")
    print("positives: " + ", ".join(f"{n} {int(r['copy'].sum())} copies ({int(r['exact'].sum())} exact) of {len(r['copy'])} samples"
                                    for n, (_, _, r) in sets.items()))
    print(f"{'t0':>8} | " + " | ".join(f"{n + ' AUROC':>22}  {'TPR@1%':>21}" for n in sets))
    for t0 in grid:
        row = [cells(r["copy"], r["curve"][:, _at(r["times"], t0)]) for _, _, r in sets.values()]
        print(f"{t0:>8.4f} | " + " | ".join(f"{a:>22}  {b:>21}" for a, b in row))
    for name, (_, _, r) in sets.items():
        print(f"\n{name}: median FLIPD copies / others per t0:")
        print("  " + "  ".join(f"{t:.3g}:{np.median(r['curve'][r['copy'], _at(r['times'], t)]):.1f}/"
                              f"{np.median(r['curve'][~r['copy'], _at(r['times'], t)]):.1f}" for t in grid))

    print("\n(2) t0 rules (label-free):")
    print(f"{'data':>8} {'rule':<34} {'t0':>7} {'AUROC [95% CI]':>22} {'TPR@1% [95% CI]':>22}")
    for name, (model, data, r) in sets.items():
        on_grid = r["curve"][:, [_at(r["times"], t) for t in grid]]
        rows = {"select_t0 knee (sde=)": select_t0(on_grid, grid, sde=model.sde), "select_t0 knee (no sde)": select_t0(on_grid, grid),
                "max spread (IQR) of the curve": max_spread_t0(on_grid, grid), **rule_times(model, data.images)}
        for label, t0 in rows.items():
            a, b = cells(r["copy"], r["curve"][:, _at(r["times"], t0)])
            print(f"{name:>8} {label:<34} {t0:>7.4f} {a:>22} {b:>22}")
        print(f"{name:>8} training nearest-neighbour gap r_nn (median) = {nearest_neighbour_scale(data.images):.3f}, d = "
              f"{int(np.prod(data.images.shape[1:]))}")

    print("\n(3) label-free scores at t0 = t0_from_training_data (factor 2); [95% bootstrap interval]:")
    print(f"{'data':>8} {'score':<48} {'AUROC [95% CI]':>22} {'TPR@1% [95% CI]':>22}  positives")
    for name, (model, data, r) in sets.items():
        t0 = t0_from_training_data(model.sde, data.images)
        for label, (s, low) in label_free_scores(r, t0).items():
            a, b = cells(r["copy"], s, low)
            print(f"{name:>8} {label:<48} {a:>22} {b:>22}  {int(r['copy'].sum())}/{len(s)}")
        print(f"{name:>8} t0 = {t0:.4f}; window = {', '.join(f'{t:.4f}' for t in r['window'])}")

    print("\n(4) what the copies are, and what FLIPD measures (label-free t0):")
    for name, (model, data, r) in sets.items():
        why(name, model, data, r)


def why(name: str, model, data, r: dict[str, np.ndarray]) -> None:
    """Copies of planted vs of other training images, complexity, FLIPD's scale (section 4)."""
    from lidmem.memorization.metrics import auroc

    train = data.images.reshape(len(data.images), -1)
    _, inv, cnt = np.unique(train, axis=0, return_inverse=True, return_counts=True)
    planted = cnt[inv.ravel()] > 1  # training rows that are planted duplicates
    y, nn = r["copy"], r["nn"]
    of_planted = y & planted[nn]
    t0 = t0_from_training_data(model.sde, data.images)
    s = r["curve"][:, _at(r["times"], t0)]
    ref = np.isin(r["train_rows"], r["ref_rows"])
    ref_rows = r["train_rows"][ref]
    k = _at(r["window"], t0)
    ref_flipd = r["train_curve"][ref, k]
    d = int(np.prod(data.images.shape[1:]))
    print(f"{name:>8} copies {int(y.sum())}: {int(of_planted.sum())} of planted images ({len(np.unique(nn[of_planted]))} distinct), "
          f"{int((y & ~planted[nn]).sum())} of other training images ({len(np.unique(nn[y & ~planted[nn]]))} distinct); "
          f"{int((~y & planted[nn]).sum())} non-copies have a planted image as nearest neighbour")
    print(f"{name:>8} PNG length (bytes) median: copies {np.median(r['png_samples'][y]):.0f}, others {np.median(r['png_samples'][~y]):.0f}; "
          f"corr(FLIPD, log PNG) at t0: samples {np.corrcoef(s, np.log(r['png_samples']))[0, 1]:.2f}, "
          f"training images {np.corrcoef(ref_flipd, np.log(r['png_train'][ref]))[0, 1]:.2f}")
    print(f"{name:>8} median FLIPD at t0 (d = {d}): copies {np.median(s[y]):.1f}, others {np.median(s[~y]):.1f}, "
          f"training images {np.median(ref_flipd):.1f} (planted {np.median(ref_flipd[planted[ref_rows]]):.1f})")
    if of_planted.any():
        a = [auroc(of_planted, r["curve"][:, _at(r["times"], t)], higher_is_positive=False) for t in (BELOW_GRID[0], t0)]
        print(f"{name:>8} AUROC of raw FLIPD for copies of planted images only (vs all other samples): "
              f"{a[0]:.3f} at t0 = {BELOW_GRID[0]:g}, {a[1]:.3f} at t0 = {t0:.4f}")
    if planted[ref_rows].any():
        print(f"{name:>8} AUROC of FLIPD at t0 = {t0:.4f}, planted vs other distinct training images: "
              f"{auroc(planted[ref_rows], ref_flipd, higher_is_positive=False):.3f}")


def max_spread_t0(curve: np.ndarray, grid: list[float]) -> float:
    """Candidate rule: the grid time where FLIPD varies most across samples (interquartile range)."""
    q75, q25 = np.percentile(curve, [75, 25], axis=0)
    return float(grid[int(np.argmax(q75 - q25))])


if __name__ == "__main__":
    main()
