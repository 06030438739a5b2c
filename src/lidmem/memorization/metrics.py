"""Detection quality of a memorization score: AUROC and TPR at 1% FPR, defined once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["HIGHER_IS_MEMORIZED", "higher_is_memorized", "auroc", "tpr_at_fpr", "bootstrap_interval", "DetectionResult",
           "detection_metrics", "detection_table", "MIN_POSITIVES_FOR_INTERVAL", "format_with_interval", "interval_columns"]

#: Below this many positives (or negatives) a bootstrap interval is reported with a note: it is
#: wide, and with one positive it only reflects the negatives' spread (the positive is always drawn).
MIN_POSITIVES_FOR_INTERVAL = 10

#: "Is a low or a high score memorized", stated once for every score the library produces
#: (columns of ``lidmem score``, ``lidmem audit``, ``t2i score-images``, prompt metrics and
#: detectors): True when a *larger* value means "memorized". Every LID estimate (and the PNG
#: length, a complexity proxy of LID) is low on memorized points; the guidance-based prompt scores
#: (A^CFG, A^{s_CFG}, Wen et al., the CFG norm), the sharpness / anisotropy detectors and the
#: concentration of a FLIPD map are high. Read it through :func:`higher_is_memorized`.
HIGHER_IS_MEMORIZED: dict[str, bool] = {
    # LID estimates and their proxies (lidmem score / audit / t2i score-images columns)
    "flipd": False,
    "flipd_hutchinson": False,
    "nb": False,
    "png_complexity": False,
    "flipd_uncond": False,
    "flipd_cond": False,
    "lid_theta_flipd": False,
    "lid_theta_nb": False,
    "lid_theta_png": False,
    "lid_theta_jacobian": False,
    "lid_star": False,
    "flipd_map_top10_mass": True,
    "cfg_norm": True,
    # prompt metrics (Ross, Kamkari et al., App. D.2; Wen et al.)
    "a_cfg": True,
    "a_scfg": True,
    "a_flipd": False,
    "wen": True,
    # other detectors (lidmem.text2image.detectors)
    "sharpness": True,
    "sharpness_step1": True,
    "anisotropy": True,
}


def higher_is_memorized(name: str) -> bool:
    """True when a larger value of the score ``name`` means "memorized" (:data:`HIGHER_IS_MEMORIZED`).

    Raises
    ------
    ValueError
        If ``name`` is not a known score; add it to :data:`HIGHER_IS_MEMORIZED` (a registered
        custom metric states its direction there).
    """
    try:
        return HIGHER_IS_MEMORIZED[name]
    except (KeyError, TypeError):
        raise ValueError(f"no direction is known for the score {name!r}; known: {', '.join(HIGHER_IS_MEMORIZED)}") from None


def _check_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(labels).ravel()
    if raw.dtype != np.bool_:
        values = set(np.unique(raw).tolist()) if raw.size else set()
        if not values <= {0, 1}:
            shown = sorted(values, key=str)[:5]
            raise ValueError(f"labels must be booleans or 0/1 (1 = memorized); got the values {shown}")
    y = raw.astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length; got {y.size} and {s.size}")
    if y.all() or (~y).all():
        raise ValueError("labels must contain both positives (memorized) and negatives; got only one class")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    return y, s


def auroc(labels: Any, scores: Any, *, higher_is_positive: bool = True) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (True = memorized).

    Set ``higher_is_positive=False`` for scores where *low* means memorized (e.g. LID_theta).
    Ties between a positive and a negative count 1/2 (the expected AUROC under random
    tie-breaking), so integer scores are handled without bias.
    """
    y, s = _check_labels_scores(labels, scores)
    return float(roc_auc_score(y, s if higher_is_positive else -s))


def tpr_at_fpr(
    labels: Any, scores: Any, *, fpr: float = 0.01, higher_is_positive: bool = True, ties: str = "expected"
) -> float:
    """True-positive rate at false-positive rate ``fpr``, with ties between scores handled.

    A point is called positive when its score is above a threshold; the threshold admits as many
    positives as possible while at most ``floor(fpr * n_negative)`` negatives are admitted.

    ``ties="expected"`` (default): the expected TPR when ties are broken uniformly at random.
    Groups of equal scores are admitted whole while they fit; in the first group that does not fit
    (``p`` positives, ``q`` negatives, ``j < q`` negatives still allowed) the positives that
    precede the ``(j + 1)``-th negative of a random order are admitted, ``(j + 1) p / (q + 1)`` on
    average. For integer scores (the normal bundle's rank, LID_*) this replaces the misleading 0
    that ``ties="strict"`` gives when the lowest score is shared by copies and many non-copies.
    Scores without ties give the same value under both rules.

    ``ties="strict"``: ties are never split (the largest TPR over thresholds equal to the score
    values whose FPR is <= ``fpr``).
    """
    y, s = _check_labels_scores(labels, scores)
    if not (0.0 <= fpr <= 1.0):
        raise ValueError(f"fpr={fpr} must lie in [0, 1]")
    if ties not in ("expected", "strict"):
        raise ValueError(f"ties={ties!r} must be 'expected' (random tie-breaking) or 'strict' (ties never split)")
    s = s if higher_is_positive else -s
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    allowed = int(np.floor(fpr * n_neg + 1e-9))
    values, inverse = np.unique(-s, return_inverse=True)  # groups of equal score, highest score first
    pos = np.bincount(inverse, weights=y.astype(np.float64), minlength=len(values))
    neg = np.bincount(inverse, weights=(~y).astype(np.float64), minlength=len(values))
    cfp = np.cumsum(neg)
    over = np.flatnonzero(cfp > allowed)  # groups that no longer fit whole
    if over.size == 0:
        return 1.0
    k = int(over[0])  # first group that does not fit
    tp = float(pos[:k].sum())
    if ties == "expected":
        j = allowed - (float(cfp[k - 1]) if k else 0.0)  # negatives still allowed, 0 <= j < neg[k]
        tp += (j + 1.0) * pos[k] / (neg[k] + 1.0)
    return float(tp / n_pos)


def _resampled_metrics(
    y: np.ndarray, s: np.ndarray, pos_draws: np.ndarray, neg_draws: np.ndarray, *, higher_is_positive: bool, fpr: float
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and expected-tie TPR@``fpr`` of ``B`` resamples at once.

    ``pos_draws`` (B, n_pos) indexes the positives (in their order in ``y``), ``neg_draws``
    (B, n_neg) the negatives; resample ``b`` is the multiset of those samples. Same definitions as
    :func:`auroc` and :func:`tpr_at_fpr` (ties count 1/2; random tie-breaking), computed from the
    per-group counts of equal scores: O(B n) time and memory.
    """
    s = s if higher_is_positive else -s
    _, group = np.unique(-s, return_inverse=True)  # groups of equal score, highest score first
    n_groups = int(group.max()) + 1
    n_boot, n_pos = pos_draws.shape
    n_neg = neg_draws.shape[1]
    offset = (np.arange(n_boot) * n_groups)[:, None]

    def counts(draws: np.ndarray, members: np.ndarray) -> np.ndarray:
        g = group[members][draws] + offset
        return np.bincount(g.ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups).astype(np.float64)

    pos = counts(pos_draws, np.flatnonzero(y))
    neg = counts(neg_draws, np.flatnonzero(~y))
    cneg = np.cumsum(neg, axis=1)
    # a positive beats the negatives of lower groups and ties half of those in its own group
    aurocs = (pos * (n_neg - cneg + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    allowed = int(np.floor(fpr * n_neg + 1e-9))
    over = cneg > allowed
    fits_all = ~over.any(1)
    k = np.argmax(over, axis=1)  # first group that does not fit whole
    rows = np.arange(n_boot)
    cpos = np.cumsum(pos, axis=1)
    tp_before = np.where(k > 0, cpos[rows, np.maximum(k - 1, 0)], 0.0)
    fp_before = np.where(k > 0, cneg[rows, np.maximum(k - 1, 0)], 0.0)
    tp = tp_before + (allowed - fp_before + 1.0) * pos[rows, k] / (neg[rows, k] + 1.0)
    tprs = np.where(fits_all, 1.0, tp / n_pos)
    return aurocs, tprs


def bootstrap_interval(
    labels: Any,
    scores: Any,
    *,
    higher_is_positive: bool = True,
    fpr: float = 0.01,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Seeded bootstrap intervals of AUROC and TPR@``fpr`` over samples.

    Recipe (reproducible from the labels and scores alone, e.g. from an audit's
    ``samples.parquet``): the positives and the negatives are resampled with replacement
    separately (a stratified bootstrap, so every resample keeps ``n_positive`` and ``n_negative``):
    ``rng = numpy.random.default_rng(seed)``, ``pos = rng.integers(0, n_positive, (n_boot,
    n_positive))`` then ``neg = rng.integers(0, n_negative, (n_boot, n_negative))``, indexing the
    positives / negatives in their order in ``labels``. Each resample's AUROC and TPR are those of
    :func:`auroc` and :func:`tpr_at_fpr` (ties: expected value under random tie-breaking); the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (``numpy.quantile``,
    linear interpolation) of the ``n_boot`` values.

    Parameters
    ----------
    labels, scores : array-like of shape (n,)
        As :func:`auroc`; both classes are needed.
    higher_is_positive : bool, default=True
    fpr : float, default=0.01
    n_boot : int, default=1000
    level : float, default=0.95
    seed : int, default=0

    Returns
    -------
    dict
        ``auroc_ci`` and ``tpr_ci`` (``[low, high]``), ``level``, ``n_boot``, ``seed``,
        ``n_positive``, ``n_negative`` and ``note`` (None, or why the interval is unreliable: fewer
        than :data:`MIN_POSITIVES_FOR_INTERVAL` positives or negatives). Perfectly separated
        scores give ``[1, 1]`` for both: every resample is separated too.
    """
    y, s = _check_labels_scores(labels, scores)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be a positive integer (1000 is the default)")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.95")
    if not (0.0 <= fpr <= 1.0):
        raise ValueError(f"fpr={fpr} must lie in [0, 1]")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    rng = np.random.default_rng(seed)
    pos_draws = rng.integers(0, n_pos, (int(n_boot), n_pos))
    neg_draws = rng.integers(0, n_neg, (int(n_boot), n_neg))
    aurocs, tprs = _resampled_metrics(y, s, pos_draws, neg_draws, higher_is_positive=higher_is_positive, fpr=fpr)
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    note = None
    few = min(n_pos, n_neg)
    if few < MIN_POSITIVES_FOR_INTERVAL:
        which = "positive" if n_pos <= n_neg else "negative"
        note = (f"only {few} {which}{'s' if few != 1 else ''}: the interval is wide and unreliable "
                f"(below {MIN_POSITIVES_FOR_INTERVAL}" + ("; with one, it only reflects the other class" if few == 1 else "") + ")")
    return {"auroc_ci": [float(v) for v in np.quantile(aurocs, q)], "tpr_ci": [float(v) for v in np.quantile(tprs, q)],
            "level": float(level), "n_boot": int(n_boot), "seed": int(seed), "n_positive": n_pos, "n_negative": n_neg, "note": note}


def format_with_interval(value: float | None, interval: Any = None, fmt: str = "{:.3f}") -> str:
    """``0.912 [0.871, 0.950]``: a number with its interval (``-`` for None, no brackets without one)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    text = fmt.format(float(value))
    if interval is not None and len(interval) == 2 and all(v is not None and np.isfinite(float(v)) for v in interval):
        text += f" [{fmt.format(float(interval[0]))}, {fmt.format(float(interval[1]))}]"
    return text


def interval_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """Flat table columns of a :func:`detection_table` row's intervals (for CSV / parquet tables):
    ``auroc_ci_low``, ``auroc_ci_high``, ``tpr_at_1pct_fpr_ci_low``, ``tpr_at_1pct_fpr_ci_high``
    (None without an interval) and ``ci_note``."""
    out: dict[str, Any] = {}
    for key in ("auroc", "tpr_at_1pct_fpr"):
        ci = row.get(f"{key}_ci")
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = (None, None) if ci is None else (float(ci[0]), float(ci[1]))
    out["ci_note"] = row.get("ci_note")
    return out


@dataclass
class DetectionResult:
    """AUROC and TPR@1%FPR of one score (``higher_is_positive`` tells its direction).

    Both are expected values under random tie-breaking (see :func:`tpr_at_fpr`); ``n_tied`` is
    the number of samples whose score equals another sample's score. ``auroc_ci`` and
    ``tpr_at_1pct_fpr_ci`` are 95% bootstrap intervals (:func:`bootstrap_interval`; None when not
    computed), ``ci_note`` says when they rest on too few positives.
    """

    metric: str
    auroc: float
    tpr_at_1pct_fpr: float
    n_positive: int
    n_negative: int
    higher_is_positive: bool
    n_tied: int = 0
    auroc_ci: list[float] | None = None
    tpr_at_1pct_fpr_ci: list[float] | None = None
    ci_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection_metrics(
    name: str, labels: Any, scores: Any, *, higher_is_positive: bool = True, interval: bool = False, n_boot: int = 1000, seed: int = 0
) -> DetectionResult:
    """Both detection numbers for one score, in one record; ``interval=True`` adds their 95%
    bootstrap intervals (:func:`bootstrap_interval` with ``n_boot`` and ``seed``)."""
    y, _ = _check_labels_scores(labels, scores)
    ci: dict[str, Any] = {}
    if interval:
        b = bootstrap_interval(labels, scores, higher_is_positive=higher_is_positive, n_boot=n_boot, seed=seed)
        ci = {"auroc_ci": b["auroc_ci"], "tpr_at_1pct_fpr_ci": b["tpr_ci"], "ci_note": b["note"]}
    return DetectionResult(
        metric=name,
        auroc=auroc(labels, scores, higher_is_positive=higher_is_positive),
        tpr_at_1pct_fpr=tpr_at_fpr(labels, scores, fpr=0.01, higher_is_positive=higher_is_positive),
        n_positive=int(y.sum()),
        n_negative=int((~y).sum()),
        higher_is_positive=higher_is_positive,
        n_tied=_n_tied(scores),
        **ci,
    )


def _n_tied(scores: Any) -> int:
    """Number of values that equal at least one other value."""
    _, counts = np.unique(np.asarray(scores, dtype=np.float64).ravel(), return_counts=True)
    return int(counts[counts > 1].sum())


def detection_table(
    labels: Any,
    scores: Mapping[str, Any],
    *,
    higher_is_positive: bool | Mapping[str, bool] = True,
    one_class: str = "raise",
    interval: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The detection table: AUROC and TPR@1%FPR of every score against one set of labels.

    The one place where lidmem builds this table (the audit, the prompt metrics, the detectors
    benchmark and the demos all call it).

    Parameters
    ----------
    labels : array-like of shape (n,)
        True (or 1) = memorized.
    scores : mapping of name -> array-like of shape (n,)
        One entry per score, in the order of the rows.
    higher_is_positive : bool or mapping of name -> bool, default=True
        Direction of each score (False: low = memorized, e.g. LID_theta); a mapping needs every
        name of ``scores``.
    one_class : {"raise", "note"}, default="raise"
        When ``labels`` holds one class only: raise ValueError, or return rows with ``auroc`` and
        ``tpr_at_1pct_fpr`` None and a ``note``.
    interval : bool, default=True
        Add ``auroc_ci`` / ``tpr_at_1pct_fpr_ci``: 95% stratified bootstrap intervals over samples
        (:func:`bootstrap_interval`, ``n_boot`` resamples, seeded with ``seed``; the same draws for
        every score), and ``ci_note`` (None, or a warning when they rest on fewer than
        :data:`MIN_POSITIVES_FOR_INTERVAL` positives).
    n_boot : int, default=1000
    seed : int, default=0

    Returns
    -------
    list of dict
        One row per score: :meth:`DetectionResult.to_dict` (``metric``, ``auroc``,
        ``tpr_at_1pct_fpr``, ``n_positive``, ``n_negative``, ``higher_is_positive``, ``n_tied``,
        ``auroc_ci``, ``tpr_at_1pct_fpr_ci``, ``ci_note``).
    """
    if one_class not in ("raise", "note"):
        raise ValueError(f"one_class={one_class!r} must be 'raise' or 'note'")
    if not isinstance(higher_is_positive, bool):
        missing = [name for name in scores if name not in higher_is_positive]
        if missing:
            raise ValueError(f"higher_is_positive has no direction for {missing}; give one per score")
    y = np.asarray(labels).ravel().astype(bool)
    rows = []
    for name, values in scores.items():
        higher = higher_is_positive if isinstance(higher_is_positive, bool) else bool(higher_is_positive[name])
        if one_class == "note" and (y.all() or (~y).all()):
            rows.append({"metric": name, "auroc": None, "tpr_at_1pct_fpr": None, "n_positive": int(y.sum()),
                         "n_negative": int((~y).sum()), "higher_is_positive": higher, "auroc_ci": None, "tpr_at_1pct_fpr_ci": None,
                         "ci_note": None, "note": "only one class among the samples"})
            continue
        rows.append(detection_metrics(name, labels, np.asarray(values, dtype=np.float64), higher_is_positive=higher,
                                      interval=interval, n_boot=n_boot, seed=seed).to_dict())
    return rows
