"""CLI: ``lidmem audit`` - memorization audit of an image diffusion model or generator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..defaults import NB_T0
from ._common import check_audit_options, check_finite_images, console, parse_lpca_radius, parse_lpca_tau, renamed_option, user_errors


def run_audit_command(
    model: Path,
    train: str,
    out: Path,
    *,
    samples: Optional[Path],
    num_samples: int,
    sampling_steps: int,
    flipd_t0: str,
    flipd_trace: str,
    flipd_probes: int,
    nb_t0: float,
    nb_scores: Optional[int],
    copy_k: int,
    nb_max_dim: int = 1024,
    duplicates: Optional[Path] = None,
    flipd_sweep: str = "0.003,0.01,0.03,0.1,0.3",
    exact_threshold: float,
    near_threshold: float,
    cos_threshold: float,
    search: str,
    lpca_k: Optional[int],
    lpca_tau: str,
    lpca_radius: str,
    seed: int,
    report: bool,
) -> dict:
    """Validate all inputs, run :func:`lidmem.memorization.audit.audit_memorization`, write the outputs."""
    from ..data.audit_inputs import load_duplicate_flags, load_sample_images, load_training_images
    from ..estimators import FLIPD, LocalPCA, NormalBundle
    from ..memorization.audit import audit_memorization, check_audit_inputs, default_lpca_k, lpca_k_note
    from ..workflows.audit import load_audit_model, write_audit

    # validate first: every cheap check before sampling / estimating
    radius = parse_lpca_radius(lpca_radius, "--lpca-radius")
    tau = parse_lpca_tau(lpca_tau, "--lpca-tau")
    t0 = _parse_t0(flipd_t0, "--flipd-t0")
    sweep = [_parse_t0(v, "--flipd-sweep") for v in flipd_sweep.split(",") if v.strip()]
    if nb_max_dim < 0:
        raise ValueError(f"--nb-max-dim={nb_max_dim} must be >= 0 (0 skips the normal bundle)")
    check_audit_options(out=out, model=model, num_samples=num_samples, sampling_steps=sampling_steps, flipd_t0=0.1 if t0 == "auto" else t0,
                        flipd_trace=flipd_trace, flipd_probes=flipd_probes, nb_t0=nb_t0, nb_scores=nb_scores, copy_k=copy_k,
                        exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
                        search=search, lpca_k=lpca_k, seed=seed)
    tr = load_training_images(train)
    check_finite_images(tr.images, "--train", train)
    n_train = len(tr.images)
    if lpca_k is None:  # the default adapts to a small training set (said below and in summary.json)
        k = default_lpca_k(n_train, "--train")
    elif lpca_k > n_train - 1:  # before the model loads
        raise ValueError(f"--lpca-k={lpca_k} must be <= n_train - 1 = {n_train - 1} for the {n_train} images of --train {train}; "
                         "lower it or leave --lpca-k out (default min(100, n_train - 1))")
    else:
        k = lpca_k
    if duplicates is not None:
        tr.duplicated = load_duplicate_flags(duplicates, tr.ids)
        tr.description["duplicates_file"] = str(duplicates)
    given, given_ids = (None, None) if samples is None else load_sample_images(samples)
    if given is not None:
        check_finite_images(given, "--samples", samples)
    net, kind = load_audit_model(model)
    check_audit_inputs(net, kind, tr.images, given, lpca_k=k, copy_k=copy_k)
    console.print(f"auditing a {kind} on {len(tr.images)} training images of shape {tuple(tr.images.shape[1:])}")
    if lpca_k is None:
        console.print(f"local PCA k = {k} ({lpca_k_note(k, n_train)}; set --lpca-k to change it)", highlight=False)
    # the estimators from the options; a generator keeps the audit's Jacobian-rank default
    lid_theta = FLIPD(net, t0=t0, trace=flipd_trace, n_probes=flipd_probes, seed=seed) if kind == "score_model" else None
    result = audit_memorization(
        net, tr, kind=kind, samples=given, sample_ids=given_ids, num_samples=num_samples, num_inference_steps=sampling_steps,
        lid_theta=lid_theta, normal_bundle=NormalBundle(net, t0=nb_t0, n_scores=nb_scores, threshold="percentile", seed=seed),
        lid_star=LocalPCA(k=k, tau=tau, radius=radius, seed=seed), t0_sweep=sweep, nb_max_dim=nb_max_dim,
        copy_k=copy_k, exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
        search=search, seed=seed, log=_log,
    )
    if lpca_k is None:
        result.summary["settings"]["lpca_k_rule"] = lpca_k_note(k, n_train)
    paths = write_audit(result, out, report=report)
    s = result.summary
    console.print(f"copy labels: {s['copy_label_counts']}   MMH classes: {s['mmh_class_counts']}")
    from ..memorization.metrics import format_with_interval as ci

    for row in s["detection"]:
        if row["auroc"] is not None:
            console.print(f"  {row['positive']:>22} | {row['score']:<20} AUROC {ci(row['auroc'], row.get('auroc_ci'))}  "
                          f"TPR@1%FPR {ci(row['tpr_at_1pct_fpr'], row.get('tpr_at_1pct_fpr_ci'))}  ({row['n_positive']} positives)",
                          highlight=False)
    if s["settings"].get("flipd_t0_used") is not None:
        console.print(f"FLIPD t0 = {s['settings']['flipd_t0_used']:.4g} ({s['settings']['flipd_t0']})")
    for row in s.get("flipd_t0_sweep", []):
        if row["auroc"] is not None:
            console.print(f"  FLIPD at t0 = {row['t0']:<6g} AUROC {ci(row['auroc'], row.get('auroc_ci'))}  "
                          f"TPR@1%FPR {ci(row['tpr_at_1pct_fpr'], row.get('tpr_at_1pct_fpr_ci'))}", highlight=False)
    rel = s.get("reliability")
    if rel is not None:
        console.print(f"reliability: {rel['verdict']}", highlight=False)
        for w in rel["warnings"]:
            console.print(f"  warning: {w}", highlight=False)
    for name, p in paths.items():
        console.print(f"wrote {name}: {p}")
    return s


def _parse_t0(text: str, option: str) -> float | str:
    """``auto`` or a float in (0, 1]."""
    text = text.strip()
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} must be 'auto' or a number in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{option}={text!r} must lie in (0, 1]")
    return value


def _log(message: str) -> None:
    """One timestamped progress line on stderr (readable in a log file, unlike a progress bar)."""
    import time

    console.print(f"[{time.strftime('%H:%M:%S')}] {message}", highlight=False, soft_wrap=True)


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem audit`` to the lidmem app."""

    @app.command("audit")
    def audit(
        model: Path = typer.Option(..., "--model", help="Model: lidmem checkpoint, diffusers folder (pixel, latent, text-to-image) or package.module:factory; check it with lidmem inspect."),
        train: str = typer.Option(..., "--train", help="Training images: a folder of images, a .npy (n,c,h,w) in [-1,1], or 'digits'."),
        out: Path = typer.Option(..., "--out", help="Output folder (samples.parquet, samples.npy, summary.json, report.html)."),
        num_samples: int = typer.Option(500, "--num-samples", help="Samples to generate (ignored with --samples)."),
        samples: Optional[Path] = typer.Option(None, "--samples", help="Audit these images (folder or .npy) instead of generating."),
        sampling_steps: int = typer.Option(50, help="Heun steps of the probability-flow ODE."),
        flipd_t0: str = typer.Option("auto", help="FLIPD time t0 in (0, 1], or 'auto' (noise length = twice the training set's median nearest-neighbour gap; docs/t0.md)."),
        flipd_sweep: str = typer.Option("0.003,0.01,0.03,0.1,0.3", help="Comma-separated extra FLIPD times whose AUROC the summary reports ('' skips)."),
        flipd_trace: str = typer.Option("hutchinson", help="FLIPD trace: hutchinson or exact."),
        n_probes: int = typer.Option(8, "--n-probes", help="FLIPD Hutchinson probes per sample."),
        flipd_probes: Optional[int] = typer.Option(None, "--flipd-probes", hidden=True, help="Deprecated spelling of --n-probes."),
        nb_t0: float = typer.Option(NB_T0, help="Normal-bundle time t0."),
        n_scores: Optional[int] = typer.Option(None, "--n-scores", help="Normal-bundle noisy copies per sample (default 4d); k < d bounds LID_NB below by d - k."),
        nb_scores: Optional[int] = typer.Option(None, "--nb-scores", hidden=True, help="Deprecated spelling of --n-scores."),
        nb_max_dim: int = typer.Option(1024, help="Skip the normal bundle for images with more than this many values d (0: always skip); it costs 4d network calls + an SVD per sample."),
        duplicates: Optional[Path] = typer.Option(None, "--duplicates", help="Text file naming the duplicated training images (ids = file stems, or row indices), one per line."),
        copy_k: int = typer.Option(5, help="Neighbours in the calibrated-l2 denominator."),
        exact_threshold: float = typer.Option(0.3, help="calibrated l2 <= this: exact_copy."),
        near_threshold: float = typer.Option(0.5, help="calibrated l2 <= this: near_copy."),
        cos_threshold: float = typer.Option(0.97, help="embedding cosine >= this: near_copy."),
        search: str = typer.Option("auto", help="Nearest-neighbour search: auto, exact or faiss."),
        lpca_k: Optional[int] = typer.Option(None, help="Neighbours of local PCA (LID_*); default min(100, n_train - 1), said in the output and summary.json."),
        lpca_tau: str = typer.Option("fo", help="Local PCA threshold: fo (Fukunaga-Olsen), percentile (paper) or a number."),
        lpca_radius: str = typer.Option("0", help="Local PCA neighbourhood restriction: a radius (0 = exact duplicates), percentile (paper) or none."),
        seed: int = typer.Option(0, help="Seed of sampling and estimators."),
        report: bool = typer.Option(True, help="Write report.html."),
    ) -> None:
        """Find copies of training images among a model's samples and explain them with LID (paper Sec. 4.1)."""
        with user_errors("audit"):
            probes = renamed_option(n_probes, flipd_probes, new="--n-probes", old="--flipd-probes", default=8)
            scores = renamed_option(n_scores, nb_scores, new="--n-scores", old="--nb-scores")
            run_audit_command(
                model, train, out, samples=samples, num_samples=num_samples, sampling_steps=sampling_steps,
                flipd_t0=flipd_t0, flipd_trace=flipd_trace, flipd_probes=probes, nb_t0=nb_t0, nb_scores=scores,
                nb_max_dim=nb_max_dim, duplicates=duplicates, flipd_sweep=flipd_sweep, copy_k=copy_k, exact_threshold=exact_threshold, near_threshold=near_threshold, cos_threshold=cos_threshold,
                search=search, lpca_k=lpca_k, lpca_tau=lpca_tau, lpca_radius=lpca_radius, seed=seed, report=report,
            )
