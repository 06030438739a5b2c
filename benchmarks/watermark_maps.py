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


def carries_patch(x: np.ndarray, mask: np.ndarray, tol: float = 0.3) -> np.ndarray:
    """Whether each image (n, 1, 8, 8) shows the watermark: mean |pixel - patch| < ``tol``."""
    return np.abs(x[:, 0][:, mask] - WATERMARK.ravel()).mean(1) < tol


def main() -> None:
    ap = argparse.ArgumentParser(description="memorization maps on a planted watermark")
    ap.add_argument("--cache", type=Path, default=Path(".cache/watermark"))
    ap.add_argument("--n-samples", type=int, default=400)
    ap.add_argument("--sampling-steps", type=int, default=100)
    ap.add_argument("--t0", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05])
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
    xs = samples.numpy()
    has = carries_patch(xs, mask)
    print(f"samples: {len(xs)} ({has.sum()} carry the patch, {(~has).sum()} do not; training share 0.30); "
          f"sampling {t_sample:.1f} s; chance level (patch area / image area) = {mask.sum()}/{mask.size} = {mask.mean():.3f}")
    print(f"lowest (FLIPD map) / highest (score difference) {FRACTION:.0%} of pixels: mean share inside the patch")
    print(f"{'images':<22}{'t0':>7}{'n':>6}{'FLIPD map':>11}{'>=80% hit':>11}{'score diff':>12}{'>=80% hit':>11}{'FLIPD':>8}")
    groups = [("samples with patch", samples[torch.from_numpy(has)]), ("samples without", samples[torch.from_numpy(~has)]),
              ("train with patch", torch.from_numpy(data.images[data.watermarked][:300])),
              ("train without", torch.from_numpy(data.images[~data.watermarked][:300]))]
    for t0 in args.t0:
        for name, x in groups:
            if len(x) == 0:
                print(f"{name:<22}{t0:>7}{0:>6}")
                continue
            m = flipd_map(model, x, t0, trace="exact", progress=False)
            fm = in_patch(lowest_pixels(m, FRACTION), mask)
            sd = in_patch(lowest_pixels(-score_difference_map(model, base, x, t0), FRACTION), mask)
            print(f"{name:<22}{t0:>7}{len(x):>6}{fm.mean():>11.3f}{(fm >= 0.8).mean():>11.3f}{sd.mean():>12.3f}"
                  f"{(sd >= 0.8).mean():>11.3f}{float(m.sum((1, 2, 3)).mean()):>8.1f}")


if __name__ == "__main__":
    main()
