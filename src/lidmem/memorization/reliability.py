"""How far an audit can be trusted: the checks behind report.html's reliability panel.

One function, :func:`audit_reliability`, turns what an audit measured (samples outside the data
range, the primary LID_theta against its scale ``[0, d]``, the MMH comparability check, the number
of copies) into warnings and a one-line verdict. The audit stores its output in
``summary["reliability"]``; the report shows it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .metrics import MIN_POSITIVES_FOR_INTERVAL

__all__ = ["OUT_OF_RANGE_TOO_WEAK", "OUT_OF_RANGE_CAUTION", "IN_RANGE_TARGET", "in_range_fraction", "audit_reliability"]

#: Above this share of samples outside the training data's value range the model is called too
#: weak to audit: its samples are not images of the data, and LID estimates there mean little.
OUT_OF_RANGE_TOO_WEAK = 0.5
#: Above this share (and up to :data:`OUT_OF_RANGE_TOO_WEAK`) the audit gets a warning.
OUT_OF_RANGE_CAUTION = 0.1

#: Share of samples inside the data range a model should reach before it is audited (``lidmem train`` warns below).
IN_RANGE_TARGET = 0.9


def in_range_fraction(samples: Any, lo: float = -1.0, hi: float = 1.0, *, tol: float = 0.05) -> dict[str, Any]:
    """Share of images with every value inside ``[lo, hi]`` widened by ``tol`` of its width.

    The rule of the audit's ``samples_out_of_range`` (there ``lo`` / ``hi`` are the training
    images' range); ``lidmem train`` applies it to its sample grid with lidmem's ``[-1, 1]``.

    Returns
    -------
    dict
        ``n``, ``n_in_range``, ``fraction``, ``range`` ([lo, hi]), ``tolerance``,
        ``sample_min``, ``sample_max``.
    """
    x = np.asarray(samples.detach().cpu().numpy() if hasattr(samples, "detach") else samples, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"samples must have shape (n, ...) with n >= 1; got {x.shape}")
    pad = float(tol) * (float(hi) - float(lo))
    flat = x.reshape(len(x), -1)
    ok = (flat.min(1) >= lo - pad) & (flat.max(1) <= hi + pad)
    return {"n": int(len(x)), "n_in_range": int(ok.sum()), "fraction": float(ok.mean()), "range": [float(lo), float(hi)],
            "tolerance": float(tol), "sample_min": float(flat.min()), "sample_max": float(flat.max())}


def audit_reliability(
    *,
    n_samples: int,
    n_out_of_range: int,
    lid_theta: Any,
    lid_theta_name: str,
    d: int,
    mmh: Mapping[str, Any],
    n_copies: int,
    n_exact_copies: int,
) -> dict[str, Any]:
    """The reliability checks of one audit, with a one-line verdict.

    Parameters
    ----------
    n_samples : int
        Audited samples.
    n_out_of_range : int
        Samples with a value outside the training images' range (the audit's
        ``samples_out_of_range["n_samples"]``).
    lid_theta : array-like of shape (n_samples,)
        The primary LID_theta (FLIPD or the Jacobian rank); NaN entries are ignored.
    lid_theta_name : str
        Its column name (``lid_theta_flipd``, ``lid_theta_jacobian``).
    d : int
        The dimension LID_theta is estimated in (model input values); a LID lies in ``[0, d]``.
    mmh : mapping
        :meth:`lidmem.memorization.mmh.MMHResult.thresholds` (``comparable``, ``scale_offset``,
        ``od_margin``).
    n_copies, n_exact_copies : int
        Samples labelled exact or near copies, and exact copies (the positives of the detection table).

    Returns
    -------
    dict
        ``verdict`` (one line), ``level`` (``"ok"``, ``"caution"`` or ``"unreliable"``),
        ``warnings`` (list of str, most serious first) and the measured quantities:
        ``samples_out_of_range`` (``n``, ``fraction``), ``lid_theta_scale`` (``estimator``, ``d``,
        ``median``, ``fraction_outside_0_d``, ``on_scale``), ``mmh_comparable``,
        ``mmh_scale_offset``, ``n_copies``, ``n_exact_copies``, ``min_positives``.
    """
    n = int(n_samples)
    if n < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    d = int(d)
    if d < 1:
        raise ValueError(f"d={d} must be >= 1 (the number of values LID_theta is estimated over)")
    frac_out = int(n_out_of_range) / n
    v = np.asarray(lid_theta, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    median = float(np.median(v)) if v.size else None
    # a LID lies in [0, d]; a margin of 5% of d absorbs the estimators' noise around the ends
    margin = 0.05 * d
    outside = float(((v < -margin) | (v > d + margin)).mean()) if v.size else None
    on_scale = None if median is None else bool(-margin <= median <= d + margin)
    short = lid_theta_name.removeprefix("lid_theta_").replace("_", " ")
    short = {"flipd": "FLIPD", "jacobian": "Jacobian rank"}.get(short, short)
    comparable = mmh.get("comparable")
    offset = mmh.get("scale_offset")

    warnings: list[str] = []
    if frac_out > OUT_OF_RANGE_TOO_WEAK:
        warnings.append(f"{n_out_of_range} of {n} samples ({frac_out:.0%}) leave the training data's value range: the model is "
                        "undertrained (or sampled with too few steps); its samples are not images of the data and their LID "
                        "estimates mean little. Train longer (README: 'Train a model worth auditing').")
    elif frac_out > OUT_OF_RANGE_CAUTION:
        warnings.append(f"{n_out_of_range} of {n} samples ({frac_out:.0%}) leave the training data's value range: LID estimates "
                        "of those samples are unreliable.")
    if on_scale is False:
        warnings.append(f"{short} is off its scale: median {median:.3g} at d = {d} (a LID lies in [0, d]; {outside:.0%} of the "
                        "samples fall outside): read it as a ranking of samples, not as a dimension.")
    if comparable is False:
        warnings.append("MMH classes not comparable: LID_theta and LID_* differ by a scale offset "
                        f"({float(offset):+.2f} on samples with LID_* > 0), so the classes reflect the two estimators' scales.")
    if n_copies == 0:
        warnings.append("No copies among the samples: detection (AUROC, TPR) cannot be measured.")
    elif n_copies < MIN_POSITIVES_FOR_INTERVAL:
        warnings.append(f"Only {n_copies} cop{'y' if n_copies == 1 else 'ies'} among the samples: AUROC and TPR rest on "
                        f"fewer than {MIN_POSITIVES_FOR_INTERVAL} positives; their intervals are wide. Audit more samples.")
    if 0 < n_exact_copies < MIN_POSITIVES_FOR_INTERVAL and n_copies >= MIN_POSITIVES_FOR_INTERVAL:
        warnings.append(f"Only {n_exact_copies} exact cop{'y' if n_exact_copies == 1 else 'ies'}: the exact-copy rows of the "
                        "detection table rest on few positives.")

    if frac_out > OUT_OF_RANGE_TOO_WEAK:
        level, verdict = "unreliable", f"Model too weak to audit: most samples leave the data range ({n_out_of_range} of {n})."
    elif n_copies == 0:
        level, verdict = "caution", "No copies found: nothing to detect (the detection table is empty)."
    elif n_copies < MIN_POSITIVES_FOR_INTERVAL:
        level, verdict = "unreliable", f"Too few copies to measure detection: {n_copies} (at least {MIN_POSITIVES_FOR_INTERVAL} needed)."
    elif warnings:
        level, verdict = "caution", f"Usable with caution: {len(warnings)} warning{'s' if len(warnings) > 1 else ''} below."
    else:
        level, verdict = "ok", (f"No reliability warnings: samples in range, {short} on its scale, MMH comparable, "
                                f"{n_copies} copies.")
    return {
        "verdict": verdict,
        "level": level,
        "warnings": warnings,
        "samples_out_of_range": {"n": int(n_out_of_range), "fraction": frac_out, "too_weak_above": OUT_OF_RANGE_TOO_WEAK,
                                 "caution_above": OUT_OF_RANGE_CAUTION},
        "lid_theta_scale": {"estimator": lid_theta_name, "d": d, "median": median, "fraction_outside_0_d": outside, "on_scale": on_scale},
        "mmh_comparable": None if comparable is None else bool(comparable),
        "mmh_scale_offset": offset,
        "n_copies": int(n_copies),
        "n_exact_copies": int(n_exact_copies),
        "min_positives": MIN_POSITIVES_FOR_INTERVAL,
    }
