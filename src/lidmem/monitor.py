"""Catch memorization while a model trains: FLIPD of a fixed probe set every N steps.

The manifold memorization hypothesis (paper, Sec. 2-3) says that a model memorizes a training
image when its LID_theta there falls below the data's LID_* (OD-Mem). During training this is a
*fall*: the LID_theta of an image the model starts to copy drops towards 0 while held-out images
(and the training images it generalises on) keep theirs. :class:`MemorizationMonitor` watches
exactly that, in any training loop::

    monitor = MemorizationMonitor(unet, probes, sde=DDPMSchedule.from_scheduler(scheduler),
                                  prediction="epsilon", heldout=val_images, train_data=train_images,
                                  every=500, log="monitor.parquet")
    for step in range(steps):
        ...  # the loop's own step
        monitor.update(step + 1)          # scores only when (step + 1) % every == 0

Every ``every`` steps it scores the probe images (training images, and held-out images when
given) with FLIPD (eq. 6, Hutchinson trace, :func:`lidmem.estimators.flipd`) at one ``t0``
fixed at the start (``"auto"``: :func:`lidmem.estimators.t0.t0_from_training_data`, label-free),
on the model being trained or its EMA weights (``ema=``). The model's training state is left as
it was: the train/eval mode of every submodule, the RNG states (torch CPU and CUDA, NumPy's
global generator, Python's ``random``) and the parameters' ``.grad`` / ``requires_grad`` are
restored; FLIPD runs without autograd graphs.

The signal, per scored step (two robust z-scores per image):

- reference: the held-out probes' LID_theta at that step when given, otherwise the training
  probes' own LID_theta at that step; ``z = (lid - median_ref) / (1.4826 * MAD_ref)`` (the
  image's *level*);
- ``fall_z``: the same robust z-score of the image's *change* ``lid(now) - lid(window scored
  steps ago)`` against the reference images' changes over those steps (NaN for the first
  ``window`` scored steps; ``window=0`` turns it off). An image's own complexity is in both of
  its values and cancels: on photo tiles, whose LID_theta follows their PNG complexity far more
  than their memorization (docs/t0.md), the level of a planted image is unremarkable while its
  falls over consecutive scored steps stand out (docs/monitor.md);
- an image is *flagged* when ``z < -z_threshold`` at this scored step and at each of the
  ``persistence - 1`` scored steps before it, or ``fall_z < -fall_threshold`` at as many
  consecutive scored steps (it stayed far below the reference, or kept falling faster than the
  others; an estimate that dips once is not flagged). With ``window=1`` the changes at
  consecutive scored steps do not overlap, so persistence asks for two separate intervals of fast
  fall, and the fall test can use the level test's threshold (2.5; with ``window=2`` consecutive
  changes overlap by one interval, one jump counts twice, and a threshold of 3 was needed on the
  clean digits run);
- ``signal`` = fraction of training probes flagged minus fraction of held-out probes flagged
  (the held-out fraction is the false-alarm rate of the rule itself; 0 without held-out images);
- ``memorizing`` (the alarm) = at least ``min_flagged`` training probes flagged and
  ``signal > threshold``;
- ``drop`` = ``z`` now minus the image's first ``z`` after ``baseline_step``: the images whose
  LID_theta fell most relative to the spread are those with the most negative drop;
- with held-out probes also ``auroc`` (training vs held-out, low LID_theta = training) and
  ``gap`` = (median held-out - median training) / pooled standard deviation.

False alarms (:func:`false_alarm_bound`): if no image is memorized and every probe's ``z`` were
an independent standard normal at every scored step, an image would be flagged with probability
``q = Phi(-z_threshold) ** persistence`` by the level test and ``q_f = Phi(-fall_threshold) **
persistence`` by the fall test (slightly more: the reference is estimated) and the alarm would fire
at a scored step with probability ``P(Binomial(n, 1 - (1 - q)(1 - q_f)) >= min_flagged)`` for ``n``
training probes (the defaults, ``z_threshold=2.5``, ``fall_threshold=2.5``, ``persistence=2``,
``min_flagged=2``, ``window=1``, give 3.3e-4 for ``n=256``, the median and MAD being estimated
from the probes themselves included: about 0.6% over the 18 scored steps of a 1,800-step run;
``min_flagged=3`` gives 2.8e-6 but alarmed 200 steps later on the photo-patch run it was chosen on). Real LID_theta is not such a null in two ways: an image keeps
much of its level from one step to the next (which makes persistence a weaker filter than the
bound assumes), and the left tail of LID_theta across images is lighter than normal (on the
digits and photo-patch runs of ``benchmarks/monitor_planted.py`` fewer images lie below -2.5 than
a normal law predicts). The measured rate on runs without duplicates is in docs/monitor.md.
:func:`evaluate_log` applies the rule (any settings) to a saved log.

Log: a Parquet file rewritten atomically (temporary file + ``os.replace``) after every scored
step, so an interrupted run keeps every step scored so far; a rerun with the same ``log``
continues it (rows of steps at or after the first step scored again are replaced). Columns:

============ ======= ===============================================================
column       type    meaning
============ ======= ===============================================================
step         int64   training step at which the probes were scored
image_id     int64   the probe's id (``image_ids``, default 0..n-1 per split)
split        string  ``"train"`` or ``"heldout"``
lid          float64 FLIPD estimate of LID_theta (can be negative)
t0           float64 the FLIPD time (fixed for the run)
z            float64 robust z-score against the step's reference (see above)
fall_z       float64 robust z-score of the change over ``window`` scored steps (NaN before)
drop         float64 ``z`` minus the image's first ``z`` (0 at its first step)
flagged      bool    the rule's flag (``z < -z_threshold`` or ``fall_z < -fall_threshold``)
signal       float64 the step's signal (same on every row of the step)
memorizing   bool    the step's alarm (same on every row of the step)
seconds      float64 wall time the step's scoring took
============ ======= ===============================================================
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ._validation import check_positive_int
from .diffusion.score import ScoreModel
from .diffusion.sde import SDE

__all__ = ["MemorizationMonitor", "MonitorStep", "LOG_COLUMNS", "DEFAULT_RULE", "DEFAULT_WINDOW", "DEFAULT_EVERY", "DEFAULT_PROBE_IMAGES",
           "DEFAULT_HUTCHINSON", "fall_scores", "log_scores",
           "alarm_trace", "choose_probe_images", "evaluate_log", "false_alarm_bound",
           "preserved_training_state", "read_monitor_log", "step_summaries", "step_summaries_list"]

#: Columns of the monitor's Parquet log, in order (module docstring).
LOG_COLUMNS: tuple[str, ...] = ("step", "image_id", "split", "lid", "t0", "z", "fall_z", "drop", "flagged", "signal", "memorizing", "seconds")

_MAD_TO_SD = 1.4826

#: Scored steps over which ``fall_z`` measures an image's change (module docstring; 0: level test only).
DEFAULT_WINDOW: int = 1


@dataclass(frozen=True)
class MonitorStep:
    """The memorization signal of one scored step.

    ``flagged`` holds the ids of the flagged training probes, most negative ``drop`` first
    (the images whose LID_theta fell most); ``auroc`` and ``gap`` are NaN without held-out probes.
    """

    step: int
    signal: float
    memorizing: bool
    n_flagged: int
    flagged: tuple[int, ...]
    auroc: float
    gap: float
    lid_train_median: float
    lid_heldout_median: float
    seconds: float
    fell_most: tuple[int, ...] = field(default=())

    def describe(self) -> str:
        """One short line for a progress bar, e.g. ``"mem 0.031 (8 flagged) ALARM"``."""
        s = f"mem {self.signal:.3f} ({self.n_flagged} flagged)"
        if not math.isnan(self.auroc):
            s += f" auroc {self.auroc:.2f}"
        return s + (" ALARM" if self.memorizing else "")


class _SampleOutput(nn.Module):
    """``net(x, t)``, unwrapping a diffusers output's ``.sample`` (``UNet2DModel`` returns one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        return out if isinstance(out, torch.Tensor) else out.sample


def _as_images(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, ...); got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be batch-first with at least one row, shape (n, ...); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floats (images in [-1, 1]); got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x.detach()


def _robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    med = float(np.median(reference))
    mad = float(np.median(np.abs(reference - med))) * _MAD_TO_SD
    if not mad > 0:
        mad = float(np.std(reference)) or 1.0
    return (values - med) / mad


def _check_window(window: int) -> int:
    return check_positive_int(window, "window", minimum=0)


def fall_scores(lid_train: Any, lid_heldout: Any = None, *, window: int = DEFAULT_WINDOW) -> tuple[np.ndarray, np.ndarray | None]:
    """``fall_z`` (module docstring) at every scored step of a LID history.

    Parameters
    ----------
    lid_train : array-like of shape (k, n)
        LID_theta of the ``n`` training probes at ``k`` scored steps, oldest first (NaN: not scored).
    lid_heldout : array-like of shape (k, m), optional
        The held-out probes' LID_theta at the same steps: their changes are the reference.
    window : int, default=1 (:data:`DEFAULT_WINDOW`)
        Scored steps between the two values whose difference is scored.

    Returns
    -------
    (ndarray (k, n), ndarray (k, m) or None)
        Robust z-scores of ``lid[j] - lid[j - window]`` against the reference's changes; NaN for
        ``j < window`` (and everywhere for ``window=0``).
    """
    window = _check_window(window)
    tr = np.asarray(lid_train, dtype=np.float64)
    ho = None if lid_heldout is None else np.asarray(lid_heldout, dtype=np.float64)
    if tr.ndim != 2 or (ho is not None and (ho.ndim != 2 or len(ho) != len(tr))):
        raise ValueError(f"lid_train must have shape (k steps, n probes) and lid_heldout (k, m); got {tr.shape} and {None if ho is None else ho.shape}")
    f_tr = np.full(tr.shape, np.nan)
    f_ho = None if ho is None else np.full(ho.shape, np.nan)
    for j in range(window, len(tr)) if window else ():
        d_tr = tr[j] - tr[j - window]
        d_ho = None if ho is None else ho[j] - ho[j - window]
        ref = d_tr if d_ho is None else d_ho
        ref = ref[np.isfinite(ref)]
        if len(ref) == 0:
            continue
        f_tr[j] = _robust_z(d_tr, ref)
        if f_ho is not None and d_ho is not None:
            f_ho[j] = _robust_z(d_ho, ref)
    return f_tr, f_ho


#: The alarm rule's defaults (module docstring): ``z_threshold``, ``fall_threshold``, ``persistence``, ``min_flagged``, ``threshold``.
DEFAULT_RULE: dict[str, float] = {"z_threshold": 2.5, "fall_threshold": 2.5, "persistence": 2, "min_flagged": 2, "threshold": 0.0}
_Z, _FALL = DEFAULT_RULE["z_threshold"], DEFAULT_RULE["fall_threshold"]
_PERSIST, _MIN_FLAGGED = int(DEFAULT_RULE["persistence"]), int(DEFAULT_RULE["min_flagged"])


#: Default scoring interval (steps), probe images and Hutchinson probes per image: with them the
#: monitor's scoring takes 4.7-6.9% of the training CPU time at batch 64 (docs/monitor.md, ``benchmarks/monitor_planted.py cost``).
DEFAULT_EVERY: int = 100
DEFAULT_PROBE_IMAGES: int = 256
DEFAULT_HUTCHINSON: int = 2


def choose_probe_images(images: Any, n: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``n`` distinct training images to watch, duplicated images first.

    Images that occur more than once in ``images`` (exact duplicates, found with
    :func:`lidmem.neighbors.dedupe_rows`) are the likeliest to be memorized (Carlini et al. 2023;
    Somepalli et al. 2023), so every such image is a probe (the most-copied first when there are
    more than ``n``); the remaining places go to distinct images drawn at random under ``seed``.
    Returns the first row of each chosen image, sorted, shape ``(min(n, distinct),)``.
    """
    from .neighbors import dedupe_rows

    n = check_positive_int(n, "n")
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    first, _, counts = dedupe_rows(arr.reshape(len(arr), -1))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(first))  # random among equals
    order = order[np.argsort(-counts[order], kind="stable")]  # then most-copied first
    dup = order[counts[order] > 1][:n]
    rest = order[counts[order] == 1]
    rest = rng.choice(rest, min(n - len(dup), len(rest)), replace=False) if n > len(dup) else rest[:0]
    return np.sort(first[np.r_[dup, rest].astype(np.int64)])


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} must be a positive number, e.g. {DEFAULT_RULE[name]}")
    return float(value)


def _check_rule(z_threshold: float, persistence: int, min_flagged: int, threshold: float) -> tuple[float, int, int, float]:
    _check_threshold(z_threshold, "z_threshold")
    persistence = check_positive_int(persistence, "persistence")
    min_flagged = check_positive_int(min_flagged, "min_flagged")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (0 <= threshold < 1):
        raise ValueError(f"threshold={threshold!r} must lie in [0, 1), e.g. 0.0")
    return float(z_threshold), persistence, min_flagged, float(threshold)


def false_alarm_bound(n: int, *, z_threshold: float = _Z, fall_threshold: float = _FALL, persistence: int = _PERSIST, min_flagged: int = _MIN_FLAGGED,
                      n_reference: int | None = None, window: int = DEFAULT_WINDOW) -> float:
    """Probability that the alarm fires at one scored step when nothing is memorized, under the
    null where every probe's LID_theta is an independent normal draw at every scored step.

    ``P(Binomial(n, q) >= min_flagged)`` for ``n`` training probes, with ``q = Phi(-c) ** persistence``
    for the level test alone (``window=0``) and ``1 - (1 - Phi(-c) ** persistence)(1 - Phi(-c_f) **
    persistence)`` with the fall test too (two chances, treated as independent; ``c_f`` from
    ``fall_threshold`` as ``c`` from ``z_threshold``); ``c = z_threshold / sqrt(1 + (pi/2 + 1.36 z_threshold**2) / n_reference)`` accounts
    (to first order) for the median and the MAD being estimated from ``n_reference`` reference
    probes (default ``n``: no held-out set), whose errors widen the robust z. See the module
    docstring for how real LID_theta departs from this null; ``tests/test_monitor_rule.py``
    checks the bound against simulated noise.
    """
    from scipy.stats import binom, norm

    n = check_positive_int(n, "n")
    m = n if n_reference is None else check_positive_int(n_reference, "n_reference")
    z_threshold, persistence, min_flagged, _ = _check_rule(z_threshold, persistence, min_flagged, 0.0)
    fall_threshold = _check_threshold(fall_threshold, "fall_threshold")

    def widened(c: float) -> float:
        return c / math.sqrt(1.0 + (math.pi / 2 + 1.36 * c**2) / m)

    q = float(norm.cdf(-widened(z_threshold))) ** persistence
    if _check_window(window):
        q = 1.0 - (1.0 - q) * (1.0 - float(norm.cdf(-widened(fall_threshold))) ** persistence)
    return float(binom.sf(min_flagged - 1, n, q))


def alarm_trace(
    z_train: Any,
    z_heldout: Any = None,
    *,
    fall_train: Any = None,
    fall_heldout: Any = None,
    z_threshold: float = _Z,
    fall_threshold: float = _FALL,
    persistence: int = _PERSIST,
    min_flagged: int = _MIN_FLAGGED,
    threshold: float = 0.0,
) -> dict[str, np.ndarray]:
    """The alarm rule on the z-scores of consecutive scored steps (module docstring).

    Parameters
    ----------
    z_train : array-like of shape (k, n)
        Robust z-scores of the ``n`` training probes at ``k`` scored steps, oldest first
        (NaN: not scored at that step, never flagged).
    z_heldout : array-like of shape (k, m), optional
        The held-out probes' z-scores against the same reference.
    fall_train, fall_heldout : array-like of shape (k, n) and (k, m), optional
        ``fall_z`` of the same steps (:func:`fall_scores`; NaN: no score, never flagged). An
        image is flagged by either test.
    z_threshold, fall_threshold, persistence, min_flagged, threshold
        The rule (defaults :data:`DEFAULT_RULE`).

    Returns
    -------
    dict
        ``flagged`` (k, n) bool, ``flagged_heldout`` (k, m) bool or None, ``signal`` (k,)
        float, ``memorizing`` (k,) bool.
    """
    z_threshold, persistence, min_flagged, threshold = _check_rule(z_threshold, persistence, min_flagged, threshold)
    fall_threshold = _check_threshold(fall_threshold, "fall_threshold")

    def flags(z: Any, name: str, cut: float) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"{name} must have shape (k steps, n probes); got shape {z.shape}")
        below = np.nan_to_num(z, nan=np.inf) < -cut
        out = below.copy()
        for lag in range(1, persistence):
            prev = np.zeros_like(below)
            prev[lag:] = below[:-lag]
            out &= prev
        return out

    fl = flags(z_train, "z_train", z_threshold)
    if fall_train is not None:
        f = flags(fall_train, "fall_train", fall_threshold)
        if f.shape != fl.shape:
            raise ValueError(f"fall_train has shape {f.shape} but z_train {fl.shape}; give both for the same steps and probes")
        fl = fl | f
    frac = fl.mean(axis=1) if fl.shape[1] else np.zeros(len(fl))
    fl_ho = None
    if z_heldout is not None:
        fl_ho = flags(z_heldout, "z_heldout", z_threshold)
        if fall_heldout is not None:
            f = flags(fall_heldout, "fall_heldout", fall_threshold)
            if f.shape != fl_ho.shape:
                raise ValueError(f"fall_heldout has shape {f.shape} but z_heldout {fl_ho.shape}; give both for the same steps and probes")
            fl_ho = fl_ho | f
        if len(fl_ho) != len(fl):
            raise ValueError(f"z_heldout has {len(fl_ho)} steps but z_train {len(fl)}; give both for the same scored steps")
        frac = frac - (fl_ho.mean(axis=1) if fl_ho.shape[1] else 0.0)
    memorizing = (fl.sum(axis=1) >= min_flagged) & (frac > threshold)
    return {"flagged": fl, "flagged_heldout": fl_ho, "signal": frac.astype(np.float64), "memorizing": memorizing}


@contextmanager
def preserved_training_state(module: nn.Module | None) -> Iterator[None]:
    """Run a block with ``module`` in eval mode and give everything back afterwards: each
    submodule's ``training`` flag, the parameters' ``.grad`` and ``requires_grad``, and the RNG
    states of torch (CPU and every CUDA device), NumPy's global generator and Python's ``random``."""
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    params = list(module.parameters()) if module is not None else []
    grads = [(p, p.grad, p.requires_grad) for p in params]
    np_state = np.random.get_state()
    py_state = random.getstate()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            if module is not None:
                module.eval()
            yield
        finally:
            for m, mode in modes:
                m.training = mode
            for p, g, rg in grads:
                p.grad = g
                p.requires_grad_(rg)
            np.random.set_state(np_state)
            random.setstate(py_state)


class MemorizationMonitor:
    """FLIPD of a fixed probe set every ``every`` steps, a Parquet log and a memorization signal.

    Parameters
    ----------
    model : nn.Module
        The network being trained: a :class:`lidmem.ScoreModel` (its ``.sde`` is used), or a raw
        network ``net(x, t_model)`` (a diffusers ``UNet2DModel`` too: its ``.sample`` is taken)
        together with ``sde`` and ``prediction``. Held by reference: every step scores its
        current weights (or ``ema``'s).
    probes : Tensor or ndarray of shape (n, ...)
        Training images to watch (the model's input scale, e.g. [-1, 1]); fixed for the run.
    sde : SDE, optional
        Forward process of a raw network (:class:`~lidmem.VPSDE`, ``DDPMSchedule.from_scheduler``
        for a diffusers scheduler). Required unless ``model`` is a ScoreModel.
    prediction : {"epsilon", "score", "x0", "v"}, default="epsilon"
        What a raw network predicts (ignored for a ScoreModel).
    heldout : Tensor or ndarray of shape (m, ...), optional
        Images the model never trains on; they become the reference of the signal.
    train_data : array-like of shape (N, ...), optional
        The training set for ``t0="auto"`` (nearest-neighbour scale). Default: ``probes``
        (coarser: fewer neighbours give a larger gap and so a larger ``t0``).
    every : int, default=100 (:data:`DEFAULT_EVERY`)
        Score when ``step % every == 0`` (:meth:`update`).
    log : path, optional
        Parquet file of the per-image rows (module docstring); None keeps them in memory only.
    t0 : float or "auto", default="auto"
        FLIPD time, fixed once here.
    n_probes : int, default=2 (:data:`DEFAULT_HUTCHINSON`)
        Hutchinson probes per image (the same probes at every step).
    z_threshold : float, default=2.5
        An image is flagged when its robust z-score is below ``-z_threshold`` (or its ``fall_z``
        below ``-fall_threshold``) ...
    fall_threshold : float, default=2.5
        The fall test's threshold (module docstring).
    persistence : int, default=2
        ... at this and the ``persistence - 1`` scored steps before it, or its ``fall_z`` is.
    window : int, default=1 (:data:`DEFAULT_WINDOW`)
        ``fall_z`` scores the change of LID_theta over this many scored steps (0: no fall test).
    min_flagged : int, default=2
        ``memorizing`` when at least this many training probes are flagged ...
    threshold : float, default=0.0
        ... and the signal exceeds this (with held-out probes: more training than held-out
        probes flagged, in proportion). :func:`false_alarm_bound` gives the rule's false-alarm
        rate per scored step under an independent-normal null; docs/monitor.md the measured one.
    ema : nn.Module or diffusers ``EMAModel``, optional
        Score these weights instead of ``model``'s: a module of the same call signature (an EMA
        copy; ``model``'s wrapping applies to it), or an object with ``store``, ``copy_to`` and
        ``restore`` (diffusers' ``EMAModel``), whose weights are copied into ``model`` for the
        scoring and restored afterwards.
    image_ids : sequence of int, optional
        Ids of the training probes in the log (default ``0..n-1``); held-out probes are ``0..m-1``.
    baseline_step : int, default=0
        ``drop`` is measured from each image's first scored step ``>= baseline_step`` (skip the
        first steps of an untrained network).
    seed : int, default=0
        Seed of the Hutchinson probes (the same probes at every step).
    batch_size : int, optional
        Images per FLIPD chunk (default: FLIPD's).
    resume : bool, default=True
        Continue an existing ``log`` (else overwrite it at the first scored step).

    Attributes
    ----------
    t0_ : float
        The FLIPD time in use.
    history_ : list of MonitorStep
        One entry per scored step.
    """

    def __init__(
        self,
        model: nn.Module,
        probes: Any,
        *,
        sde: SDE | None = None,
        prediction: str = "epsilon",
        heldout: Any = None,
        train_data: Any = None,
        every: int = DEFAULT_EVERY,
        log: str | Path | None = None,
        t0: float | str = "auto",
        n_probes: int = DEFAULT_HUTCHINSON,
        z_threshold: float = _Z,
        fall_threshold: float = _FALL,
        persistence: int = _PERSIST,
        min_flagged: int = _MIN_FLAGGED,
        threshold: float = 0.0,
        window: int = DEFAULT_WINDOW,
        ema: Any = None,
        image_ids: Sequence[int] | None = None,
        baseline_step: int = 0,
        seed: int = 0,
        batch_size: int | None = None,
        resume: bool = True,
    ) -> None:
        from .estimators.t0 import resolve_t0

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be the torch.nn.Module being trained (a ScoreModel or a network net(x, t)); got {type(model).__name__}")
        if isinstance(model, ScoreModel):
            sde = model.sde
        elif not isinstance(sde, SDE):
            raise TypeError("sde is required for a raw network: pass sde=VPSDE() or sde=DDPMSchedule.from_scheduler(scheduler)")
        self.model = model
        self.sde = sde
        self.prediction = prediction
        self.ema = ema
        if ema is not None and not isinstance(ema, nn.Module) and not all(hasattr(ema, a) for a in ("store", "copy_to", "restore")):
            raise TypeError(f"ema must be an nn.Module or a diffusers EMAModel (store/copy_to/restore); got {type(ema).__name__}")
        self.probes = _as_images(probes, "probes")
        self.heldout = None if heldout is None else _as_images(heldout, "heldout")
        if self.heldout is not None and self.heldout.shape[1:] != self.probes.shape[1:]:
            raise ValueError(f"heldout images have shape {tuple(self.heldout.shape[1:])} but probes {tuple(self.probes.shape[1:])}; give images of one shape")
        self.every = check_positive_int(every, "every")
        self.n_probes = check_positive_int(n_probes, "n_probes")
        self.z_threshold, self.persistence, self.min_flagged, self.threshold = _check_rule(z_threshold, persistence, min_flagged, threshold)
        self.window = _check_window(window)
        self.fall_threshold = _check_threshold(fall_threshold, "fall_threshold")
        self.baseline_step = check_positive_int(baseline_step, "baseline_step", minimum=0)
        self.seed = int(seed)
        self.batch_size = batch_size
        if image_ids is None:
            self.image_ids = np.arange(len(self.probes), dtype=np.int64)
        else:
            self.image_ids = np.asarray(list(image_ids), dtype=np.int64)
            if self.image_ids.shape != (len(self.probes),):
                raise ValueError(f"image_ids has {self.image_ids.size} entries but probes has {len(self.probes)} rows; give one id per probe")
        ref = self.probes if train_data is None else train_data
        self.t0_ = float(resolve_t0(t0, sde, ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else ref))
        self.log = None if log is None else Path(log)
        self._frames: list[Any] = []
        self.history_: list[MonitorStep] = []
        self._first_z: dict[tuple[str, int], float] = {}
        self._wrappers: dict[int, tuple[nn.Module, ScoreModel]] = {}
        if self.log is not None and resume and self.log.is_file():
            self._load(self.log)

    # ------------------------------------------------------------------ log
    def _load(self, path: Path) -> None:
        import pandas as pd

        df = pd.read_parquet(path)
        if "fall_z" not in df.columns and "z" in df.columns:  # a log written before the fall test: no fall scores
            df.insert(list(df.columns).index("z") + 1, "fall_z", np.nan)
        missing = [c for c in LOG_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path} is not a lidmem monitor log (missing columns {missing}); pass resume=False or another log path")
        for _, g in df.groupby("step", sort=True):
            self._frames.append(g[list(LOG_COLUMNS)].reset_index(drop=True))
        self.history_ = step_summaries_list(df)
        self._rebuild_first_z()

    def _rebuild_first_z(self) -> None:
        self._first_z = {}
        for g in self._frames:
            step = int(g["step"].iloc[0])
            if step < self.baseline_step:
                continue
            for split, iid, z in zip(g["split"], g["image_id"], g["z"]):
                self._first_z.setdefault((str(split), int(iid)), float(z))

    @property
    def frame(self) -> Any:
        """All rows so far as a pandas DataFrame (the log's columns)."""
        import pandas as pd

        if not self._frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(LOG_COLUMNS, ("int64", "int64", "string", "float64", "float64", "float64", "float64", "float64", "bool", "float64", "bool", "float64"))})
        return pd.concat(self._frames, ignore_index=True)

    def _write(self) -> None:
        if self.log is None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.log.with_name(self.log.name + ".tmp")
        self.frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.log)

    # ------------------------------------------------------------------ scoring
    @property
    def first_alarm(self) -> int | None:
        """The first scored step whose ``memorizing`` is True (None: no alarm yet)."""
        return next((h.step for h in self.history_ if h.memorizing), None)

    def due(self, step: int) -> bool:
        """Whether :meth:`update` scores at ``step``."""
        return int(step) % self.every == 0

    def update(self, step: int, model: nn.Module | None = None) -> MonitorStep | None:
        """Score the probes when ``step % every == 0`` (see :meth:`score`); else return None."""
        return self.score(step, model) if self.due(step) else None

    def _score_model(self, net: nn.Module) -> ScoreModel:
        if isinstance(net, ScoreModel):
            return net
        # one wrapper per network for the run: FLIPD's forward-mode check (ad="auto") is cached per model
        held = self._wrappers.get(id(net))
        if held is None or held[0] is not net:
            held = (net, ScoreModel(_SampleOutput(net), self.sde, prediction=self.prediction))  # type: ignore[arg-type]
            self._wrappers[id(net)] = held
        return held[1]

    def _lid(self, net: nn.Module, x: torch.Tensor) -> np.ndarray:
        from .estimators.flipd import flipd

        param = next(iter(net.parameters()), None)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else x.dtype)
        vals = flipd(self._score_model(net), x, self.t0_, trace="hutchinson", n_probes=self.n_probes, seed=self.seed,
                     batch_size=self.batch_size, progress=False)
        return vals.detach().double().cpu().numpy()

    def score(self, step: int, model: nn.Module | None = None) -> MonitorStep:
        """Score every probe now, append the rows to the log and return the step's signal.

        ``model`` overrides the network given at construction (e.g. an EMA copy made by the
        loop); ``ema`` (constructor) is used otherwise when given. The training state is restored.
        """
        step = check_positive_int(step, "step", minimum=0)
        start = time.perf_counter()
        target = model if model is not None else self.model
        if not isinstance(target, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(target).__name__}")
        ema = self.ema if model is None else None
        # everything (imports of the metrics included) inside: nothing may touch the loop's RNGs
        with preserved_training_state(target):
            if isinstance(ema, nn.Module):
                with preserved_training_state(ema):
                    lid_tr, lid_ho = self._lid(ema, self.probes), (None if self.heldout is None else self._lid(ema, self.heldout))
            elif ema is not None:  # diffusers EMAModel: swap its weights in for the scoring
                ema.store(target.parameters())
                ema.copy_to(target.parameters())
                try:
                    lid_tr, lid_ho = self._lid(target, self.probes), (None if self.heldout is None else self._lid(target, self.heldout))
                finally:
                    ema.restore(target.parameters())
            else:
                lid_tr, lid_ho = self._lid(target, self.probes), (None if self.heldout is None else self._lid(target, self.heldout))
            seconds = time.perf_counter() - start
            summary, frame = self._summarise(step, lid_tr, lid_ho, seconds)
            # a rerun from an earlier step replaces what the log held from that step on
            kept = [f for f in self._frames if int(f["step"].iloc[0]) < step]
            if len(kept) != len(self._frames):
                self._frames = kept
                self.history_ = [h for h in self.history_ if h.step < step]
                self._rebuild_first_z()
                summary, frame = self._summarise(step, lid_tr, lid_ho, seconds)
            self._frames.append(frame)
            self.history_.append(summary)
            self._write()
        return summary

    @staticmethod
    def _logged(frame: Any, split: str, ids: np.ndarray, column: str = "z") -> np.ndarray:
        """``column`` of one logged step for ``ids`` of ``split`` (NaN where absent)."""
        g = frame[frame["split"] == split]
        z = dict(zip(g["image_id"].astype(np.int64), g[column].astype(np.float64)))
        return np.array([z.get(int(i), np.nan) for i in ids], dtype=np.float64)

    def _summarise(self, step: int, lid_tr: np.ndarray, lid_ho: np.ndarray | None, seconds: float) -> tuple[MonitorStep, Any]:
        import pandas as pd

        from .memorization.metrics import auroc

        ref = lid_tr if lid_ho is None else lid_ho
        z_tr = _robust_z(lid_tr, ref)
        z_ho = None if lid_ho is None else _robust_z(lid_ho, ref)
        ids_ho = None if lid_ho is None else np.arange(len(lid_ho), dtype=np.int64)
        # the fall test: this step's change over ``window`` scored steps, against the reference's changes
        f_tr = np.full(len(lid_tr), np.nan)
        f_ho = None if lid_ho is None else np.full(len(lid_ho), np.nan)
        if self.window and len(self._frames) >= self.window:
            old = self._frames[-self.window]
            past_ho = None if ids_ho is None else self._logged(old, "heldout", ids_ho, "lid")[None]
            now_ho = None if lid_ho is None else lid_ho[None]
            ft, fh = fall_scores(np.vstack([self._logged(old, "train", self.image_ids, "lid"), lid_tr]),
                                 None if now_ho is None or past_ho is None else np.vstack([past_ho, now_ho]), window=1)
            f_tr = ft[-1]
            f_ho = None if fh is None else fh[-1]
        # the rule looks back persistence - 1 scored steps: only those frames are read (not the whole log)
        recent = self._frames[-(self.persistence - 1):] if self.persistence > 1 else []
        hist_tr = [self._logged(f, "train", self.image_ids) for f in recent] + [z_tr]
        fall_tr = [self._logged(f, "train", self.image_ids, "fall_z") for f in recent] + [f_tr]
        hist_ho = fall_ho = None
        if z_ho is not None and ids_ho is not None and f_ho is not None:
            hist_ho = [self._logged(f, "heldout", ids_ho) for f in recent] + [z_ho]
            fall_ho = [self._logged(f, "heldout", ids_ho, "fall_z") for f in recent] + [f_ho]
        p = self.persistence
        trace = alarm_trace(np.vstack(hist_tr[-p:]), None if hist_ho is None else np.vstack(hist_ho[-p:]),
                            fall_train=np.vstack(fall_tr[-p:]), fall_heldout=None if fall_ho is None else np.vstack(fall_ho[-p:]),
                            z_threshold=self.z_threshold, fall_threshold=self.fall_threshold, persistence=p, min_flagged=self.min_flagged,
                            threshold=self.threshold)
        flag_tr = trace["flagged"][-1]
        flag_ho = None if trace["flagged_heldout"] is None else trace["flagged_heldout"][-1]
        signal = float(trace["signal"][-1])
        n_flag = int(flag_tr.sum())
        memorizing = bool(trace["memorizing"][-1])

        def drops(split: str, ids: np.ndarray, z: np.ndarray) -> np.ndarray:
            out = np.zeros(len(z))
            for i, (iid, zi) in enumerate(zip(ids, z)):
                key = (split, int(iid))
                if step >= self.baseline_step and key not in self._first_z:
                    self._first_z[key] = float(zi)
                out[i] = zi - self._first_z.get(key, float(zi))
            return out

        d_tr = drops("train", self.image_ids, z_tr)
        order = np.argsort(d_tr, kind="stable")
        flagged = tuple(int(self.image_ids[i]) for i in order if flag_tr[i])
        fell = tuple(int(self.image_ids[i]) for i in order[: min(10, len(order))])
        if lid_ho is not None:
            labels = np.r_[np.ones(len(lid_tr), bool), np.zeros(len(lid_ho), bool)]
            au = auroc(labels, np.r_[lid_tr, lid_ho], higher_is_positive=False)
            pooled = math.sqrt(0.5 * (np.var(lid_tr) + np.var(lid_ho))) or 1.0
            gap = float((np.median(lid_ho) - np.median(lid_tr)) / pooled)
            med_ho = float(np.median(lid_ho))
        else:
            au = gap = med_ho = float("nan")
        summary = MonitorStep(step=step, signal=signal, memorizing=memorizing, n_flagged=n_flag, flagged=flagged, auroc=float(au),
                              gap=gap, lid_train_median=float(np.median(lid_tr)), lid_heldout_median=med_ho, seconds=seconds, fell_most=fell)
        parts = [("train", self.image_ids, lid_tr, z_tr, f_tr, d_tr, flag_tr)]
        if lid_ho is not None and z_ho is not None and flag_ho is not None and ids_ho is not None and f_ho is not None:
            parts.append(("heldout", ids_ho, lid_ho, z_ho, f_ho, drops("heldout", ids_ho, z_ho), flag_ho))
        frames = []
        for split, ids, lid, z, fz, d, fl in parts:
            frames.append(pd.DataFrame({
                "step": np.full(len(lid), step, dtype=np.int64), "image_id": ids.astype(np.int64),
                "split": pd.Series([split] * len(lid), dtype="string"), "lid": lid.astype(np.float64),
                "t0": np.full(len(lid), self.t0_), "z": z.astype(np.float64), "fall_z": fz.astype(np.float64), "drop": d.astype(np.float64),
                "flagged": fl.astype(bool), "signal": np.full(len(lid), signal), "memorizing": np.full(len(lid), memorizing),
                "seconds": np.full(len(lid), seconds),
            }))
        return summary, pd.concat(frames, ignore_index=True)[list(LOG_COLUMNS)]


def read_monitor_log(path: str | Path) -> Any:
    """The monitor's Parquet log as a pandas DataFrame (plain ``pandas.read_parquet`` works too)."""
    import pandas as pd

    return pd.read_parquet(path)


def step_summaries_list(df: Any) -> list[MonitorStep]:
    """:class:`MonitorStep` per step of a log frame (flags as logged)."""
    out = []
    for step, g in df.groupby("step", sort=True):
        tr = g[g["split"] == "train"].sort_values("drop", kind="stable")
        ho = g[g["split"] == "heldout"]
        flagged = tuple(int(i) for i in tr.loc[tr["flagged"].astype(bool), "image_id"])
        out.append(MonitorStep(
            step=int(step), signal=float(g["signal"].iloc[0]), memorizing=bool(g["memorizing"].iloc[0]), n_flagged=len(flagged),
            flagged=flagged, auroc=float("nan"), gap=float("nan"), lid_train_median=float(tr["lid"].median()),
            lid_heldout_median=float(ho["lid"].median()) if len(ho) else float("nan"), seconds=float(g["seconds"].iloc[0]),
            fell_most=tuple(int(i) for i in tr["image_id"].iloc[:10]),
        ))
    return out


def log_scores(log: Any, *, window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """The per-image scores of the rule recomputed from a monitor log's ``lid`` column.

    ``log`` is a log DataFrame (:func:`read_monitor_log`) or its path. Returns ``steps`` (k,),
    ``ids`` (n,) of the training probes, ``lid_train`` / ``z_train`` / ``fall_train`` (k, n) and,
    when the log has held-out rows, ``lid_heldout`` / ``z_heldout`` / ``fall_heldout`` (k, m), else
    None; ``z`` against each step's reference (held-out rows when present), ``fall_z`` by
    :func:`fall_scores` over ``window`` of the log's steps. Also ``seconds`` (k,), each step's scoring time.
    """
    import pandas as pd

    df = pd.read_parquet(log) if isinstance(log, (str, Path)) else log
    missing = [c for c in ("step", "image_id", "split", "lid", "seconds") if c not in df.columns]
    if missing:
        raise ValueError(f"log is not a lidmem monitor log (missing columns {missing})")
    steps = sorted(int(s) for s in df["step"].unique())
    tr = df[df["split"] == "train"].pivot(index="step", columns="image_id", values="lid").reindex(steps)
    ho_rows = df[df["split"] == "heldout"]
    ho = ho_rows.pivot(index="step", columns="image_id", values="lid").reindex(steps) if len(ho_rows) else None
    lid_tr = tr.to_numpy(np.float64)
    lid_ho = None if ho is None else ho.to_numpy(np.float64)
    z_tr, z_ho = [], []
    for j in range(len(steps)):
        ref = lid_tr[j] if lid_ho is None else lid_ho[j]
        ref = ref[np.isfinite(ref)]
        z_tr.append(_robust_z(lid_tr[j], ref))
        if lid_ho is not None:
            z_ho.append(_robust_z(lid_ho[j], ref))
    f_tr, f_ho = fall_scores(lid_tr, lid_ho, window=window)
    return {"steps": np.asarray(steps, dtype=np.int64), "ids": tr.columns.to_numpy(np.int64), "lid_train": lid_tr, "z_train": np.vstack(z_tr),
            "fall_train": f_tr, "lid_heldout": lid_ho, "z_heldout": None if lid_ho is None else np.vstack(z_ho), "fall_heldout": f_ho,
            "seconds": df.groupby("step")["seconds"].first().reindex(steps).to_numpy(np.float64)}


def evaluate_log(log: Any, *, z_threshold: float = _Z, fall_threshold: float = _FALL, persistence: int = _PERSIST, min_flagged: int = _MIN_FLAGGED,
                 threshold: float = 0.0, window: int = DEFAULT_WINDOW) -> list[MonitorStep]:
    """The alarm rule (these settings) re-applied to a monitor log, one :class:`MonitorStep` per step.

    ``log`` is a log DataFrame (:func:`read_monitor_log`) or its path; ``z`` is recomputed from
    ``lid`` at each step (reference: held-out rows when present), ``fall_z`` from the changes of
    ``lid`` over ``window`` of the log's steps (:func:`fall_scores`), so a log thinned to fewer steps
    or scored with other settings gives what the monitor would have said. With the monitor's own
    settings it reproduces the logged ``flagged``, ``signal`` and ``memorizing``.
    """
    from .memorization.metrics import auroc

    sc = log_scores(log, window=window)
    trace = alarm_trace(sc["z_train"], sc["z_heldout"], fall_train=sc["fall_train"], fall_heldout=sc["fall_heldout"],
                        z_threshold=z_threshold, fall_threshold=fall_threshold, persistence=persistence, min_flagged=min_flagged,
                        threshold=threshold)
    ids, ho = sc["ids"], sc["lid_heldout"]
    out = []
    for j, s in enumerate(sc["steps"]):
        lt = sc["lid_train"][j]
        fl = trace["flagged"][j]
        order = np.argsort(sc["z_train"][j], kind="stable")
        au = gap = med_ho = float("nan")
        if ho is not None:
            lh = ho[j]
            ok_t, ok_h = np.isfinite(lt), np.isfinite(lh)
            labels = np.r_[np.ones(int(ok_t.sum()), bool), np.zeros(int(ok_h.sum()), bool)]
            au = float(auroc(labels, np.r_[lt[ok_t], lh[ok_h]], higher_is_positive=False))
            pooled = math.sqrt(0.5 * (np.var(lt[ok_t]) + np.var(lh[ok_h]))) or 1.0
            gap = float((np.median(lh[ok_h]) - np.median(lt[ok_t])) / pooled)
            med_ho = float(np.median(lh[ok_h]))
        out.append(MonitorStep(
            step=int(s), signal=float(trace["signal"][j]), memorizing=bool(trace["memorizing"][j]), n_flagged=int(fl.sum()),
            flagged=tuple(int(ids[i]) for i in order if fl[i]), auroc=au, gap=gap, lid_train_median=float(np.nanmedian(lt)),
            lid_heldout_median=med_ho, seconds=float(sc["seconds"][j]), fell_most=tuple(int(ids[i]) for i in order[:10]),
        ))
    return out


def step_summaries(df: Any) -> Any:
    """One row per step of a monitor log: ``step, signal, memorizing, n_flagged, lid_train_median,
    lid_heldout_median, seconds`` (a pandas DataFrame)."""
    import pandas as pd

    rows = [{"step": h.step, "signal": h.signal, "memorizing": h.memorizing, "n_flagged": h.n_flagged,
             "lid_train_median": h.lid_train_median, "lid_heldout_median": h.lid_heldout_median, "seconds": h.seconds}
            for h in step_summaries_list(df)]
    return pd.DataFrame(rows)
