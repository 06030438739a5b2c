"""Memorization under the manifold memorization hypothesis: MMH classes, copy detection,
complexity correction, detection metrics."""

from .metrics import DetectionResult, auroc, detection_metrics, tpr_at_fpr

__all__ = ["auroc", "tpr_at_fpr", "detection_metrics", "DetectionResult"]
