"""Detection quality of a memorization score: AUROC and TPR at 1% FPR, defined once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["auroc", "tpr_at_fpr", "DetectionResult", "detection_metrics"]


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
    """
    y, s = _check_labels_scores(labels, scores)
    return float(roc_auc_score(y, s if higher_is_positive else -s))


def tpr_at_fpr(labels: Any, scores: Any, *, fpr: float = 0.01, higher_is_positive: bool = True) -> float:
    """True-positive rate at the largest threshold whose false-positive rate is <= ``fpr``.

    Thresholds are the score values themselves (a point is called positive when its score is
    >= the threshold); ties are never split.
    """
    y, s = _check_labels_scores(labels, scores)
    if not (0.0 <= fpr <= 1.0):
        raise ValueError(f"fpr={fpr} must lie in [0, 1]")
    fprs, tprs, _ = roc_curve(y, s if higher_is_positive else -s, drop_intermediate=False)
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


@dataclass
class DetectionResult:
    """AUROC and TPR@1%FPR of one score (``higher_is_positive`` tells its direction)."""

    metric: str
    auroc: float
    tpr_at_1pct_fpr: float
    n_positive: int
    n_negative: int
    higher_is_positive: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection_metrics(name: str, labels: Any, scores: Any, *, higher_is_positive: bool = True) -> DetectionResult:
    """Both detection numbers for one score, in one record."""
    y, _ = _check_labels_scores(labels, scores)
    return DetectionResult(
        metric=name,
        auroc=auroc(labels, scores, higher_is_positive=higher_is_positive),
        tpr_at_1pct_fpr=tpr_at_fpr(labels, scores, fpr=0.01, higher_is_positive=higher_is_positive),
        n_positive=int(y.sum()),
        n_negative=int((~y).sum()),
        higher_is_positive=higher_is_positive,
    )
