"""The memorization audit's workflow around its computation: load a model reference, write files.

:func:`lidmem.memorization.audit.audit_memorization` computes the audit from arrays and
estimator objects; this module holds what ``lidmem audit`` and the digits demo do around it:
:func:`load_audit_model` turns any model reference into ``(model, kind)`` and
:func:`write_audit` writes an :class:`~lidmem.memorization.audit.AuditResult` to a folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ..memorization.audit import AuditResult

__all__ = ["load_audit_model", "write_audit"]


def load_audit_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """Load any model reference (:func:`lidmem.models.load_model`); returns ``(model, kind)``
    with ``kind`` ``"score_model"`` or ``"generator"``.

    Raises ValueError for a reference that is no model lidmem can audit, before long work.
    """
    from ..models import load_model

    model = load_model(path, device=device)
    return model, model.info.kind


def write_audit(result: AuditResult, out_dir: str | Path, *, report: bool = True, n_grid: int = 24) -> dict[str, Path]:
    """Write ``samples.parquet``, ``samples.npy``, ``summary.json``, ``maps.npy`` (score models)
    and (optionally) ``report.html`` of an audit to ``out_dir``; returns their paths by name.

    ``samples.npy`` holds the audited images ``(n, c, h, w)`` in [-1, 1], row ``i`` being
    ``samples.parquet``'s row ``i``; re-score them with ``lidmem audit --samples samples.npy``.
    """
    from ..reports.audit import jsonable, write_audit_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"samples": out / "samples.parquet", "sample_images": out / "samples.npy", "summary": out / "summary.json"}
    result.samples.to_parquet(paths["samples"], index=False)
    np.save(paths["sample_images"], np.asarray(result.sample_images, dtype=np.float32))
    paths["summary"].write_text(json.dumps(jsonable(result.summary), indent=2), encoding="utf-8")
    if result.maps is not None:
        paths["maps"] = out / "maps.npy"
        np.save(paths["maps"], result.maps)
    if report:
        paths["report"] = write_audit_report(result, out / "report.html", n_grid=n_grid)
    return paths
