"""Memorization under the manifold memorization hypothesis (MMH).

- :mod:`.mmh`: OD-Mem / DD-Mem classes from LID_theta and LID_* with explicit thresholds.
- :mod:`.copy_detection`: nearest training image by calibrated l2 and embedding cosine.
- :mod:`.complexity`: PNG-compressed length and complexity-normalised LID_theta (App. C.2).
- :mod:`.metrics`: AUROC and TPR@1%FPR, defined once.
- :mod:`.audit`: the full audit of a model against its training set.
"""

from .complexity import png_length, png_normalized_lid
from .copy_detection import CopyMatches, Embedder, PCAEmbedder, find_copies
from .metrics import HIGHER_IS_MEMORIZED, DetectionResult, auroc, detection_metrics, higher_is_memorized, tpr_at_fpr
from .mmh import MMHResult, classify_mmh, mmh_analysis

__all__ = [
    "HIGHER_IS_MEMORIZED",
    "higher_is_memorized",
    "auroc",
    "tpr_at_fpr",
    "detection_metrics",
    "DetectionResult",
    "classify_mmh",
    "mmh_analysis",
    "MMHResult",
    "find_copies",
    "CopyMatches",
    "Embedder",
    "PCAEmbedder",
    "png_length",
    "png_normalized_lid",
]
