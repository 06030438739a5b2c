"""Planted local memorization: do memorization maps find a watermark?

    OMP_NUM_THREADS=1 python benchmarks/watermark_maps.py [--cache .cache/watermark]

Trains (first run, ``scripts/train_watermark.py``, ~5 CPU-minutes) or loads an MLP score model
on the digits with a 3x3 checkerboard stamped at the top-right corner of 30% of them
(:func:`lidmem.data.watermark.load_digits_with_watermark`), generates samples with the
probability-flow ODE, splits them into samples that carry the patch and samples that do not,
and computes on each

- the FLIPD map (:func:`lidmem.estimators.flipd_map`, exact diagonal, d = 64): the fraction of
  its lowest 10% pixels (7 of 64) that lie inside the patch;
- the score-difference map of Kim & Lee (ICML 2026, arXiv 2605.26756, their ``Delta s_theta~``,
  Eq. 6: ``(s_theta - s_theta~)^2`` per pixel against an underfitted checkpoint of the same run,
  here the model after 500 of 10,000 steps; :func:`lidmem.estimators.score_difference_map`):
  the fraction of its highest 10% pixels inside the patch. Their ``Delta s_empty`` / ``Delta h``
  variants need a conditional model (conditional minus unconditional score) and do not apply to
  this unconditional model.

Chance level: the patch's area share, 9 / 64 = 0.14. The same numbers on the training images
(watermarked vs not) are printed as a check of the maps on the data itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lidmem.data.watermark import WATERMARK, load_digits_with_watermark
from lidmem.diffusion.checkpoint import load_score_model
from lidmem.diffusion.sampling import sample_ode
from lidmem.estimators import flipd_map, lowest_pixels, score_difference_map

FRACTION = 0.1


def in_patch(low: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """Per image, the share of the selected pixels (``low``, (n, h, w) bool) inside ``mask``."""
    m = torch.from_numpy(mask)
    return ((low & m).flatten(1).sum(1) / low.flatten(1).sum(1)).numpy()


def patch_error(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean |pixel - watermark| over the patch of each image (n, 1, 8, 8); 0 for an exact copy."""
    return np.abs(x[:, 0][:, mask] - WATERMARK.ravel()).mean(1)


def main() -> None:
    ap = argparse.ArgumentParser(description="memorization maps on a planted watermark")
    ap.add_argument("--cache", type=Path, default=Path(".cache/watermark"))
    ap.add_argument("--n-samples", type=int, default=400)
    ap.add_argument("--sampling-steps", type=int, default=100)
    ap.add_argument("--t0", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2])
    args = ap.parse_args()
    final, early = args.cache / "watermark_mlp.safetensors", args.cache / "watermark_mlp_early.safetensors"
    if not (final.is_file() and early.is_file()):
        script = Path(__file__).resolve().parents[1] / "scripts" / "train_watermark.py"
        print(f"training the watermark model into {args.cache} ({script})", flush=True)
        subprocess.run([sys.executable, str(script), "--out", str(args.cache)], check=True)
    model, base = load_score_model(final).eval(), load_score_model(early).eval()
    data = load_digits_with_watermark()
    mask = data.mask
    t = time.perf_counter()
    samples = sample_ode(model, (args.n_samples, 1, 8, 8), steps=args.sampling_steps, denoise=True, seed=0, progress=False).detach()
    t_sample = time.perf_counter() - t
    err = patch_error(samples.numpy(), mask)
    counts = np.histogram(err, bins=[0, 0.1, 0.2, 0.3, 0.5, np.inf])[0]
    print(f"samples: {len(err)}, sampling {t_sample:.1f} s; patch error (mean |pixel - watermark| over the patch) in "
          f"[0, .1): {counts[0]}, [.1, .2): {counts[1]}, [.2, .3): {counts[2]}, [.3, .5): {counts[3]} (ambiguous, unused), "
          f">= .5 (no patch): {counts[4]}; training share with the patch 0.30")
    print(f"chance level (patch area / image area) = {mask.sum()}/{mask.size} = {mask.mean():.3f}")
    print(f"share of the lowest (FLIPD map) / highest (score difference) {FRACTION:.0%} of pixels inside the patch, "
          f"mean over images, and the share of images where it is >= 0.8")
    print(f"{'images':<30}{'t0':>6}{'n':>5}{'FLIPD map':>11}{'>=0.8':>7}{'score diff':>12}{'>=0.8':>7}{'FLIPD':>8}")
    sel = lambda keep: samples[torch.from_numpy(keep)]  # noqa: E731
    groups = [("samples with patch, err < .1", sel(err < 0.1)), ("samples with patch, err < .2", sel(err < 0.2)),
              ("samples with patch, err < .3", sel(err < 0.3)), ("samples without, err >= .5", sel(err >= 0.5)),
              ("train with patch", torch.from_numpy(data.images[data.watermarked][:300])),
              ("train without", torch.from_numpy(data.images[~data.watermarked][:300]))]
    for t0 in args.t0:
        for name, x in groups:
            if len(x) == 0:
                print(f"{name:<30}{t0:>6}{0:>5}")
                continue
            m = flipd_map(model, x, t0, trace="exact", progress=False)
            fm = in_patch(lowest_pixels(m, FRACTION), mask)
            sd = in_patch(lowest_pixels(-score_difference_map(model, base, x, t0), FRACTION), mask)
            print(f"{name:<30}{t0:>6}{len(x):>5}{fm.mean():>11.3f}{(fm >= 0.8).mean():>7.2f}{sd.mean():>12.3f}"
                  f"{(sd >= 0.8).mean():>7.2f}{float(m.sum((1, 2, 3)).mean()):>8.1f}")

if __name__ == "__main__":
    main()
