"""CLI: ``lidmem audit`` - memorization audit of an image diffusion model or generator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import check_audit_options, check_finite_images, console, parse_lpca_radius, parse_lpca_tau, user_errors


def run_audit_command(
    model: Path,
    train: str,
    out: Path,
    *,
    samples: Optional[Path],
    num_samples: int,
    sampling_steps: int,
    flipd_t0: float,
    flipd_trace: str,
    flipd_probes: int,
    nb_t0: float,
    nb_scores: Optional[int],
    copy_k: int,
    exact_threshold: float,
    near_threshold: float,
    cos_threshold: float,
    search: str,
    lpca_k: int,
    lpca_tau: str,
    lpca_radius: str,
    seed: int,
    report: bool,
) -> dict:
    """Validate all inputs, run :func:`lidmem.memorization.audit.audit_memorization`, write the outputs."""
    from ..memorization.audit import audit_memorization, check_audit_inputs, load_audit_model, load_sample_images, load_training_images

    # validate first: every cheap check before sampling / estimating
    radius = parse_lpca_radius(lpca_radius, "--lpca-radius")
    tau = parse_lpca_tau(lpca_tau, "--lpca-tau")
    check_audit_options(out=out, model=model, num_samples=num_samples, sampling_steps=sampling_steps, flipd_t0=flipd_t0,
                        flipd_trace=flipd_trace, flipd_probes=flipd_probes, nb_t0=nb_t0, nb_scores=nb_scores, copy_k=copy_k,
                        exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
                        search=search, lpca_k=lpca_k, seed=seed)
    tr = load_training_images(train)
    check_finite_images(tr.images, "--train", train)
    given, given_ids = (None, None) if samples is None else load_sample_images(samples)
    if given is not None:
        check_finite_images(given, "--samples", samples)
    net, kind = load_audit_model(model)
    check_audit_inputs(net, kind, tr.images, given, lpca_k=lpca_k, copy_k=copy_k)
    console.print(f"auditing a {kind} on {len(tr.images)} training images of shape {tuple(tr.images.shape[1:])}")
    result = audit_memorization(
        net, tr, kind=kind, samples=given, sample_ids=given_ids, num_samples=num_samples, sampling_steps=sampling_steps,
        flipd_t0=flipd_t0, flipd_trace=flipd_trace, flipd_probes=flipd_probes, nb_t0=nb_t0, nb_scores=nb_scores,
        copy_k=copy_k, exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
        search=search, lpca_k=lpca_k, lpca_tau=tau, lpca_radius=radius, seed=seed,
    )
    paths = result.write(out, report=report)
    s = result.summary
    console.print(f"copy labels: {s['copy_label_counts']}   MMH classes: {s['mmh_class_counts']}")
    for row in s["detection"]:
        if row["auroc"] is not None:
            console.print(f"  {row['positive']:>22} | {row['score']:<20} AUROC {row['auroc']:.3f}  TPR@1%FPR {row['tpr_at_1pct_fpr']:.3f}")
    for name, p in paths.items():
        console.print(f"wrote {name}: {p}")
    return s


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem audit`` to the lidmem app."""

    @app.command("audit")
    def audit(
        model: Path = typer.Option(..., "--model", help="A score_model or generator checkpoint (.safetensors)."),
        train: str = typer.Option(..., "--train", help="Training images: a folder of images, a .npy (n,c,h,w) in [-1,1], or 'digits'."),
        out: Path = typer.Option(..., "--out", help="Output folder (samples.parquet, summary.json, report.html)."),
        num_samples: int = typer.Option(500, "--num-samples", help="Samples to generate (ignored with --samples)."),
        samples: Optional[Path] = typer.Option(None, "--samples", help="Audit these images (folder or .npy) instead of generating."),
        sampling_steps: int = typer.Option(50, help="Heun steps of the probability-flow ODE."),
        flipd_t0: float = typer.Option(0.1, help="FLIPD time t0 in (0, 1]."),
        flipd_trace: str = typer.Option("hutchinson", help="FLIPD trace: hutchinson or exact."),
        flipd_probes: int = typer.Option(8, help="Hutchinson probes per sample."),
        nb_t0: float = typer.Option(0.05, help="Normal-bundle time t0."),
        nb_scores: Optional[int] = typer.Option(None, help="Normal-bundle noisy copies per sample (default 4d)."),
        copy_k: int = typer.Option(5, help="Neighbours in the calibrated-l2 denominator."),
        exact_threshold: float = typer.Option(0.3, help="calibrated l2 <= this: exact_copy."),
        near_threshold: float = typer.Option(0.5, help="calibrated l2 <= this: near_copy."),
        cos_threshold: float = typer.Option(0.97, help="embedding cosine >= this: near_copy."),
        search: str = typer.Option("auto", help="Nearest-neighbour search: auto, exact or faiss."),
        lpca_k: int = typer.Option(100, help="Neighbours of local PCA (LID_*)."),
        lpca_tau: str = typer.Option("fo", help="Local PCA threshold: fo (Fukunaga-Olsen), percentile (paper) or a number."),
        lpca_radius: str = typer.Option("0", help="Local PCA neighbourhood restriction: a radius (0 = exact duplicates), percentile (paper) or none."),
        seed: int = typer.Option(0, help="Seed of sampling and estimators."),
        report: bool = typer.Option(True, help="Write report.html."),
    ) -> None:
        """Find copies of training images among a model's samples and explain them with LID (paper Sec. 4.1)."""
        with user_errors():
            run_audit_command(
                model, train, out, samples=samples, num_samples=num_samples, sampling_steps=sampling_steps,
                flipd_t0=flipd_t0, flipd_trace=flipd_trace, flipd_probes=flipd_probes, nb_t0=nb_t0, nb_scores=nb_scores,
                copy_k=copy_k, exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
                search=search, lpca_k=lpca_k, lpca_tau=lpca_tau, lpca_radius=lpca_radius, seed=seed, report=report,
            )
