"""Library-wide defaults, each defined once and imported by the library and the CLI.

The rule (README, "Conventions"):

- **FLIPD t0**: ``"auto"`` wherever the call has the model's training data (``lidmem audit``,
  ``lidmem mmh``, :func:`lidmem.memorization.mmh_analysis`): the label-free
  :func:`lidmem.estimators.t0.t0_from_training_data` with factor :data:`T0_AUTO_FACTOR` (the noise
  length at t0 is twice the training set's median nearest-neighbour gap, docs/t0.md). Where the
  training data are not at hand (``lidmem score``, ``lidmem t2i score-images``,
  :func:`lidmem.scoring.score_dataset`, :func:`lidmem.text2image.score_images`), the fixed
  :data:`FLIPD_T0` = 0.05: the paper's value for Stable Diffusion, and on the digits UNet of
  docs/t0.md's sweep AUROC 0.975-0.990 at t0 = 0.04-0.06 against 0.83 at 0.016.
  The demos keep their tuned t0 (digits: auto, text-to-image: 0.2, von Mises: 0.005) and pass it
  explicitly; each says so in its help.
- **Normal bundle**: t0 :data:`NB_T0` (as the audit), rank cut :data:`NB_THRESHOLD` (the paper's
  global 10th percentile; ``lidmem score`` fits it on the first batch and applies it to every shard).
- **CFG norm** (App. C.1): :data:`CFG_T0` after :data:`EULER_STEPS` Euler steps.
- **Relative maps** (:func:`lidmem.estimators.relative_map`): z-scores smoothed over the image
  plane with a Gaussian of :data:`RELATIVE_MAP_SMOOTH` pixels, then z-scored again (docs/maps.md:
  higher in-patch share on two planted watermarks and a smaller position bias than no smoothing).
"""

from __future__ import annotations

__all__ = ["FLIPD_T0", "FLIPD_T0_WITH_TRAINING_DATA", "T0_AUTO_FACTOR", "NB_T0", "NB_THRESHOLD", "CFG_T0", "EULER_STEPS", "RELATIVE_MAP_SMOOTH"]

#: FLIPD t0 where the training data are not available (score, t2i score-images).
FLIPD_T0: float = 0.05
#: FLIPD t0 where the training data are available (audit, mmh): label-free, from the data.
FLIPD_T0_WITH_TRAINING_DATA: str = "auto"
#: ``t0="auto"``: noise length at t0 = this factor x the median nearest-neighbour gap.
T0_AUTO_FACTOR: float = 2.0
#: Normal-bundle diffusion time.
NB_T0: float = 0.05
#: Normal-bundle rank cut ("gap" | "percentile" | float).
NB_THRESHOLD: str = "percentile"
#: CFG norm: time of the probability-flow ODE endpoint (App. C.1).
CFG_T0: float = 0.01
#: CFG norm: Euler steps to CFG_T0 (App. C.1).
EULER_STEPS: int = 3
#: relative_map: standard deviation (pixels) of the Gaussian smoothing of the z-scores (docs/maps.md).
RELATIVE_MAP_SMOOTH: float = 0.5
