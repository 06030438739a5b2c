"""Planted local memorization: do memorization maps find a watermark, and only there?

    OMP_NUM_THREADS=1 python benchmarks/watermark_maps.py [--cache .cache]

Two planted set-ups (:func:`lidmem.data.watermark.load_digits_with_watermark`, 30% of the digits
carry a +-1 checkerboard): a 3x3 patch at the top-right corner (``.cache/watermark``) and a 4x4
patch at the bottom-left corner (``.cache/watermark_4x4_bl``). Each MLP score model is trained on
the first run by ``scripts/train_watermark.py`` (~5 CPU-minutes each) or loaded. Samples from the
probability-flow ODE are split into samples that carry the patch and samples that do not, and on
each group (and on training images with / without the patch) the script reports

- ``raw``: the share of the lowest 10% pixels (7 of 64) of the FLIPD map
  (:func:`lidmem.estimators.flipd_map`, exact diagonal) that lie inside the patch;
- ``rel train`` / ``rel samples``: the same for the map relative to ordinary images
  (:func:`lidmem.estimators.relative_map` with its defaults: per-pixel robust z-score against the
  median / MAD of reference maps, smoothed over the image plane with a Gaussian of 0.5 pixels
  and z-scored again): against 400 held-out training images (not among the evaluated ones), and
  against all generated samples of the run (what ``lidmem audit``'s report does);
- ``no smooth``: ``relative_map(..., smooth=None)`` against the training images (the plain
  per-pixel z-score, the default before the smoothing);
- ``worst``: for the groups *without* the patch, the largest deviation from chance of the
  in-window share over every window of the patch's size and any position
  (``max_w |mean share in w - area(w)/64|``): a position bias shows here, whatever the patch's
  position (raw map, relative map, relative map without smoothing);
- ``score diff``: the score-difference map of Kim & Lee (ICML 2026, arXiv 2605.26756,
  ``(s_theta - s_theta~)^2`` against the same run after 500 steps;
  :func:`lidmem.estimators.score_difference_map`), its highest 10% pixels.

Chance level of the in-patch share: the patch's area share (9/64 = 0.14, 16/64 = 0.25).

``--compare-rules`` prints, instead, one line per normalisation rule of the map against the
reference training images (:data:`RULES`: the raw map, the difference of means, the per-pixel
rank among the references, the robust z-score without and with smoothing of several widths and
clipping thresholds), for the exact diagonal and for Hutchinson's diagonal with 8 probes (the
audit's default), at ``--compare-t0`` (default 0.05, 0.1 and the auto t0): the in-patch share of
the closest copies (error < 0.1, < 0.2) and the worst window on samples and training images
without the patch (docs/maps.md, "Which normalisation").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lidmem.data.watermark import checkerboard, load_digits_with_watermark
from lidmem.diffusion.checkpoint import load_score_model
from lidmem.diffusion.sampling import sample_ode
from lidmem.estimators import flipd_map, lowest_pixels, relative_map, score_difference_map
from lidmem.estimators.t0 import t0_from_training_data

FRACTION = 0.1
#: (name, cache sub-folder, top-left pixel, side) of the planted set-ups
SETUPS = (("3x3 top-right", "watermark", (0, 5), 3), ("4x4 bottom-left", "watermark_4x4_bl", (4, 0), 4))
N_REFERENCE = 400


def in_patch(low: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """Per image, the share of the selected pixels (``low``, (n, h, w) bool) inside ``mask``."""
    m = torch.from_numpy(mask)
    return ((low & m).flatten(1).sum(1) / low.flatten(1).sum(1)).numpy()


def patch_error(x: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Mean |pixel - watermark| over the patch of each image (n, 1, 8, 8); 0 for an exact copy."""
    return np.abs(x[:, 0][:, mask] - checkerboard(size).ravel()).mean(1)


def worst_window(low: torch.Tensor, size: int) -> float:
    """Largest |mean in-window share - area share| over all ``size x size`` windows of (n, 8, 8) masks."""
    side = low.shape[-1]
    dev = 0.0
    for r in range(side - size + 1):
        for c in range(side - size + 1):
            w = np.zeros((side, side), dtype=bool)
            w[r : r + size, c : c + size] = True
            dev = max(dev, abs(float(in_patch(low, w).mean()) - w.mean()))
    return dev


def _rank_map(m: torch.Tensor, ref: torch.Tensor, clip: float = 2.0) -> torch.Tensor:
    """Per-pixel normal score of the rank of ``m`` among the reference values kept by ``relative_map``'s
    clipping (below all of them: the lowest rank, ties broken by the robust z-score)."""
    from scipy.stats import norm

    from lidmem.estimators.maps import _robust_center_scale

    center, scale = _robust_center_scale(ref, clip, 0.1, 10)
    kept = torch.where(ref >= center - clip * scale, ref, torch.inf).sort(0).values  # clipped values last
    n_kept = torch.isfinite(kept).sum(0)
    flat_k, flat_m = kept.flatten(1).T.contiguous(), m.flatten(1).T.contiguous()
    below = torch.searchsorted(flat_k, flat_m, right=True).T.reshape(m.shape).double()
    p = (below + 0.5) / (n_kept + 1)
    score = torch.from_numpy(norm.ppf(p.numpy()))
    floor = torch.from_numpy(norm.ppf((0.5 / (n_kept + 1)).numpy()))
    z = (m - center) / scale
    return torch.where(below == 0, floor + torch.clamp(z + clip, max=0.0), score)


#: (name, rule(maps, reference maps) -> map whose lowest pixels are the memorized ones) for --compare-rules
RULES = (
    ("raw map", lambda m, r: m),
    ("difference of means", lambda m, r: m - r.mean(0)),
    ("per-pixel rank (clipped refs)", _rank_map),
    ("robust z, smooth=None", lambda m, r: relative_map(m, r, smooth=None)),
    ("robust z, smooth=0.35", lambda m, r: relative_map(m, r, smooth=0.35)),
    ("robust z, smooth=0.5 (default)", lambda m, r: relative_map(m, r)),
    ("robust z, smooth=0.7", lambda m, r: relative_map(m, r, smooth=0.7)),
    ("robust z, smooth=1.0", lambda m, r: relative_map(m, r, smooth=1.0)),
    ("smooth=0.5, clip=1.5", lambda m, r: relative_map(m, r, clip=1.5)),
    ("smooth=0.5, clip=2.5", lambda m, r: relative_map(m, r, clip=2.5)),
)


def compare_rules(model: torch.nn.Module, data: object, samples: torch.Tensor, err: np.ndarray, ref_idx: np.ndarray, with_idx: np.ndarray,
                  without_idx: np.ndarray, size: int, t0s: list[float | str]) -> None:
    """Print the --compare-rules table of one set-up (module docstring)."""
    mask = data.mask
    images = {"S<.1": samples[torch.from_numpy(err < 0.1)], "S<.2": samples[torch.from_numpy(err < 0.2)],
              "S none": samples[torch.from_numpy(err >= 0.5)], "T none": torch.from_numpy(data.images[without_idx[:300]]),
              "ref": torch.from_numpy(data.images[ref_idx])}
    print(f"{'rule':<32}{'diagonal':>12}{'t0':>7}{'S<.1':>7}{'S<.2':>7}{'worst S':>9}{'worst T':>9}   (samples: error < .1 / < .2; "
          f"worst window - chance on samples / training images without the patch)")
    for t0 in t0s:
        if t0 == "auto":
            t0 = t0_from_training_data(model.sde, data.images)
        for diag, kw in (("exact", {"trace": "exact"}), ("hutch. 8", {"trace": "hutchinson", "n_probes": 8, "seed": 0})):
            maps = {k: flipd_map(model, x, t0, progress=False, **kw) for k, x in images.items()}
            for name, rule in RULES:
                low = {k: lowest_pixels(rule(m, maps["ref"]), FRACTION) for k, m in maps.items() if k != "ref"}
                print(f"{name:<32}{diag:>12}{t0:>7.3g}{in_patch(low['S<.1'], mask).mean():>7.3f}{in_patch(low['S<.2'], mask).mean():>7.3f}"
                      f"{worst_window(low['S none'], size):>9.3f}{worst_window(low['T none'], size):>9.3f}", flush=True)


def _t0_arg(text: str) -> float | str:
    return text if text == "auto" else float(text)


def main() -> None:
    ap = argparse.ArgumentParser(description="memorization maps on planted watermarks")
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--n-samples", type=int, default=400)
    ap.add_argument("--sampling-steps", type=int, default=100)
    ap.add_argument("--t0", type=_t0_arg, nargs="+", default=[0.01, 0.05, 0.1, 0.2, "auto"],
                    help="FLIPD times; 'auto': lidmem.estimators.t0.t0_from_training_data of each set-up (the audit's default)")
    ap.add_argument("--compare-rules", action="store_true", help="print the table of normalisation rules instead (module docstring)")
    ap.add_argument("--compare-t0", type=_t0_arg, nargs="+", default=[0.05, 0.1, "auto"])
    args = ap.parse_args()
    for title, sub, position, size in SETUPS:
        run_setup(title, args.cache / sub, position, size, args)


def run_setup(title: str, cache: Path, position: tuple[int, int], size: int, args: argparse.Namespace) -> None:
    final, early = cache / "watermark_mlp.safetensors", cache / "watermark_mlp_early.safetensors"
    if not (final.is_file() and early.is_file()):
        script = Path(__file__).resolve().parents[1] / "scripts" / "train_watermark.py"
        print(f"training the watermark model into {cache} ({script})", flush=True)
        subprocess.run([sys.executable, str(script), "--out", str(cache), "--position", str(position[0]), str(position[1]),
                        "--size", str(size)], check=True)
    model, base = load_score_model(final).eval(), load_score_model(early).eval()
    data = load_digits_with_watermark(position=position, size=size)
    mask = data.mask
    t = time.perf_counter()
    samples = sample_ode(model, (args.n_samples, 1, 8, 8), steps=args.sampling_steps, denoise=True, seed=0, progress=False).detach()
    t_sample = time.perf_counter() - t
    err = patch_error(samples.numpy(), mask, size)
    counts = np.histogram(err, bins=[0, 0.1, 0.2, 0.3, 0.5, np.inf])[0]
    print(f"\n=== {title}: {size}x{size} patch at {position}; {len(err)} samples, sampling {t_sample:.1f} s; patch error "
          f"(mean |pixel - watermark| over the patch) in [0, .1): {counts[0]}, [.1, .2): {counts[1]}, [.2, .3): {counts[2]}, "
          f"[.3, .5): {counts[3]} (ambiguous, unused), >= .5 (no patch): {counts[4]}; training share with the patch 0.30")
    print(f"chance level (patch area / image area) = {mask.sum()}/{mask.size} = {mask.mean():.3f}")
    rng = np.random.default_rng(0)
    with_idx, without_idx = np.flatnonzero(data.watermarked), np.flatnonzero(~data.watermarked)
    evaluated = np.r_[with_idx[:300], without_idx[:300]]
    rest = np.setdiff1d(np.arange(len(data.images)), evaluated)
    ref_idx = np.sort(rng.choice(rest, min(N_REFERENCE, len(rest)), replace=False))
    if args.compare_rules:
        compare_rules(model, data, samples, err, ref_idx, with_idx, without_idx, size, args.compare_t0)
        return
    print(f"share of the lowest (FLIPD maps) / highest (score difference) {FRACTION:.0%} of pixels inside the patch, mean over "
          f"images; 'worst': largest |in-window share - chance| over every {size}x{size} window (groups without the patch)")
    print(f"{'images':<30}{'t0':>7}{'n':>5}{'raw':>8}{'rel train':>11}{'no smooth':>11}{'rel samples':>13}{'worst raw':>11}"
          f"{'worst rel':>11}{'w no smth':>11}{'score diff':>12}{'FLIPD':>8}")
    sel = lambda keep: samples[torch.from_numpy(keep)]  # noqa: E731
    groups = [("samples with patch, err < .1", sel(err < 0.1), True), ("samples with patch, err < .2", sel(err < 0.2), True),
              ("samples with patch, err < .3", sel(err < 0.3), True), ("samples without, err >= .5", sel(err >= 0.5), False),
              ("train with patch", torch.from_numpy(data.images[with_idx[:300]]), True),
              ("train without", torch.from_numpy(data.images[without_idx[:300]]), False)]
    for t0 in args.t0:
        if t0 == "auto":
            t0 = t0_from_training_data(model.sde, data.images)
        ref_train = flipd_map(model, torch.from_numpy(data.images[ref_idx]), t0, trace="exact", progress=False)
        ref_samples = flipd_map(model, samples, t0, trace="exact", progress=False)
        for name, x, carries in groups:
            if len(x) == 0:
                print(f"{name:<30}{t0:>7.3g}{0:>5}")
                continue
            m = flipd_map(model, x, t0, trace="exact", progress=False)
            low_raw = lowest_pixels(m, FRACTION)
            low_rt = lowest_pixels(relative_map(m, ref_train), FRACTION)
            low_ns = lowest_pixels(relative_map(m, ref_train, smooth=None), FRACTION)
            low_rs = lowest_pixels(relative_map(m, ref_samples), FRACTION)
            sd = in_patch(lowest_pixels(-score_difference_map(model, base, x, t0), FRACTION), mask)
            worst = "" if carries else "".join(f"{worst_window(low, size):>11.3f}" for low in (low_raw, low_rt, low_ns))
            print(f"{name:<30}{t0:>7.3g}{len(x):>5}{in_patch(low_raw, mask).mean():>8.3f}{in_patch(low_rt, mask).mean():>11.3f}"
                  f"{in_patch(low_ns, mask).mean():>11.3f}{in_patch(low_rs, mask).mean():>13.3f}{worst if worst else '':>33}{sd.mean():>12.3f}"
                  f"{float(m.sum((1, 2, 3)).mean()):>8.1f}")


if __name__ == "__main__":
    main()
