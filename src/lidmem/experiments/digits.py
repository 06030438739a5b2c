"""The paper's image audit at small scale on the shipped digits checkpoints (``lidmem demo digits``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..memorization.audit import AuditResult

__all__ = ["shipped_digits_checkpoints", "digits_demo"]


def shipped_digits_checkpoints() -> dict[str, Path]:
    """Paths of the shipped digits checkpoints: ``"unet"`` and ``"vae"`` (the VAE decoder) from
    scripts/train_digits.py, ``"generator"`` (the memorizing IMLE generator of the demo's generator
    report) from scripts/train_digits_gan.py."""
    from importlib.resources import files

    root = Path(str(files("lidmem") / "weights"))
    paths = {"unet": root / "digits_unet.safetensors", "vae": root / "digits_generator.safetensors",
             "generator": root / "digits_imle.safetensors"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ValueError(f"shipped digits checkpoints are missing: {missing}; reinstall lidmem or run scripts/train_digits.py "
                         "and scripts/train_digits_gan.py")
    return paths


def digits_demo(
    out_dir: str | Path | None = None,
    *,
    num_samples: int = 300,
    num_inference_steps: int = 30,
    n_scores: int = 64,
    generator: bool = True,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, AuditResult]:
    """The paper's image audit at small scale, from the shipped digits checkpoints.

    LID_* uses local PCA with its defaults (Fukunaga-Olsen tau, neighbourhoods restricted to
    exact duplicates, ``LocalPCA(radius=0.0)``): on the 8x8 digits the paper's radius (10th
    percentile of all pairwise distances, 4.8 in [-1, 1] units) is more than twice the typical
    nearest-neighbour distance, so it would merge distinct digits with the planted duplicates.

    Audits the diffusion UNet (``"unet"``) and, when ``generator=True``, a generator
    (``"generator"``, Jacobian-rank LID_theta with the paper's global 10th-percentile threshold):
    the IMLE generator of scripts/train_digits_gan.py, which reproduces planted duplicates (an MLP
    GAN and the VAE decoder of scripts/train_digits.py reproduce none; see docs/audit.md). Its
    summary gets ``"jacobian_rank_auroc"`` (copies vs other samples, low rank = copy). Both are
    audited against the planted-duplicates digits
    (:func:`lidmem.data.images.load_digits_with_duplicates`). The normal bundle uses
    ``n_scores=64`` (= d) noisy copies instead of the paper's 4d to fit the 3-minute budget on
    2 CPU cores. With ``out_dir``, each result is
    written to ``out_dir/<name>/`` (samples.parquet, summary.json, report.html).
    """
    from ..data.audit_inputs import load_training_images
    from ..estimators import LocalPCA, NormalBundle
    from ..memorization.audit import audit_memorization, check_audit_inputs
    from ..workflows.audit import load_audit_model, write_audit

    ckpts = shipped_digits_checkpoints()
    tr = load_training_images("digits")
    results: dict[str, AuditResult] = {}
    model, kind = load_audit_model(ckpts["unet"])
    check_audit_inputs(model, kind, tr.images)
    nb = NormalBundle(model, t0=0.05, n_scores=n_scores, threshold="percentile", seed=seed, progress=progress)
    results["unet"] = audit_memorization(model, tr, kind=kind, num_samples=num_samples, num_inference_steps=num_inference_steps,
                                         normal_bundle=nb, lid_star=LocalPCA(k=100, radius=0.0, seed=seed, progress=progress),
                                         seed=seed, progress=progress)
    if generator:
        gen, gkind = load_audit_model(ckpts["generator"])
        res = audit_memorization(gen, tr, kind=gkind, num_samples=num_samples, seed=seed,
                                 lid_star_train=results["unet"].lid_star_train, progress=progress)
        row = next((r for r in res.summary["detection"] if r["positive"] == "copy (exact or near)" and r["score"] == "lid_theta_jacobian"), None)
        res.summary["jacobian_rank_auroc"] = None if row is None else row["auroc"]
        res.summary["generator_checkpoint"] = {"file": ckpts["generator"].name, **getattr(gen, "metadata", {}).get("extra", {}).get("training", {})}
        results["generator"] = res
    if out_dir is not None:
        for name, res in results.items():
            write_audit(res, Path(out_dir) / name)
    return results
