"""CLI: ``lidmem mmh`` - MMH analysis (OD-Mem / DD-Mem) of a score model on its training set."""

from __future__ import annotations

from pathlib import Path

import typer

from ..defaults import FLIPD_T0_WITH_TRAINING_DATA
from ._common import check_mmh_options, console, parse_lpca_radius, parse_lpca_tau, user_errors


def mmh_command(
    model: Path = typer.Option(..., "--model", "-m", help="Score model: lidmem checkpoint, diffusers folder or package.module:factory (see lidmem inspect)."),
    data: Path = typer.Option(..., "--data", "-d", help="Training data: .npy, .csv, .parquet (numeric columns) or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (mmh.csv + summary.json)."),
    columns: str | None = typer.Option(None, "--columns", help="Comma-separated columns of a .csv/.parquet --data table to use as coordinates, in order (default: every column; they must all be numeric), e.g. --columns x,y for the von Mises demo's training.csv."),
    t0: str = typer.Option(FLIPD_T0_WITH_TRAINING_DATA, help="FLIPD time t0 in (0, 1], or 'auto' (default: from the training data, lidmem.estimators.t0.t0_from_training_data; README Conventions)."),
    trace: str = typer.Option("exact", help="FLIPD trace: 'exact' (d JVPs per point) or 'hutchinson'."),
    n_probes: int = typer.Option(1, help="Hutchinson probes per point (--trace hutchinson)."),
    k: int | None = typer.Option(None, "--k", "-k", help="Local PCA neighbours (must be < number of points); default min(100, n - 1), said in the output and summary.json."),
    tau: str = typer.Option("fo", help="Local PCA threshold: 'fo' (Fukunaga-Olsen; a dimension estimate comparable with LID_theta), 'percentile' (paper; a ranking score) or a number."),
    tau_percentile: float = typer.Option(10.0, help="Percentile of pooled explained variances for --tau percentile."),
    alpha: float = typer.Option(0.05, help="Fukunaga-Olsen ratio for --tau fo."),
    radius: str = typer.Option("0", help="Neighbourhood restriction: a radius (0 = exact duplicates only), 'percentile' (paper) or 'none'."),
    radius_percentile: float = typer.Option(10.0, help="Percentile of pairwise distances for --radius percentile."),
    od_margin: float = typer.Option(0.5, help="OD-Mem: lid_theta < lid_star - od_margin."),
    dd_threshold: float = typer.Option(0.5, help="DD-Mem: lid_star <= dd_threshold and lid_theta <= dd_threshold + od_margin."),
    seed: int = typer.Option(0, help="Seed of Hutchinson probes and of the pair subsample."),
    batch_size: int | None = typer.Option(None, help="FLIPD points per chunk (default: automatic)."),
    device: str | None = typer.Option(None, help="torch device (default cpu)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars (on a terminal)."),
) -> None:
    """FLIPD (LID_theta) at every training point, local PCA (LID_*), and the MMH class of each point."""
    with user_errors("mmh"):
        import json

        import numpy as np
        import pandas as pd

        from ..data.io import load_points
        from ..memorization.audit import default_lpca_k, lpca_k_note
        from ..memorization.mmh import mmh_analysis
        from ..models import load_model

        # every option and the data before the model is loaded
        t0_value: float | str = t0 if t0 == "auto" else _float_option(t0, "--t0")
        check_mmh_options(out=out, model=model, t0=0.1 if t0_value == "auto" else t0_value, trace=trace, n_probes=n_probes, k=k, tau_percentile=tau_percentile, alpha=alpha,
                          radius_percentile=radius_percentile, od_margin=od_margin, dd_threshold=dd_threshold, seed=seed,
                          batch_size=batch_size, device=device)
        tau_value, radius_value = parse_lpca_tau(tau), parse_lpca_radius(radius)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
        points = load_points(data, columns=cols)
        k_rule = None
        if k is None:  # the default adapts to a small training set (said below and in summary.json)
            k = default_lpca_k(len(points), "--data")
            k_rule = lpca_k_note(k, len(points))
        elif k >= len(points):
            raise ValueError(f"--k={k} must be < the number of points in {data} ({len(points)}); lower --k or leave it out (default min(100, n - 1))")
        score_model = load_model(model, device=device or "cpu")
        if score_model.info.kind != "score_model":
            raise ValueError(f"--model {model} is a {score_model.info.kind}; lidmem mmh needs a score model (FLIPD)")
        if k_rule is not None:  # said once the inputs are known to be good (an error stays one line)
            console.print(f"local PCA k = {k} ({k_rule}; set --k to change it)", highlight=False)
        meta = score_model.metadata
        shape = meta.get("data_shape")
        if meta.get("space") == "latent":  # LID_theta and LID_* both on the encoded images (docs/models.md)
            import torch

            if int(np.prod(meta["image_shape"])) != points.shape[1]:
                raise ValueError(f"--data {data} has {points.shape[1]} features per point but --model {model} takes images of shape {tuple(meta['image_shape'])}")
            imgs = torch.from_numpy(points.astype(np.float32)).reshape(len(points), *meta["image_shape"])
            imgs = imgs * 2 - 1 if Path(data).is_dir() else imgs  # image folders load in [0, 1]
            points = torch.cat([score_model.encode(imgs[i:i + 64]) for i in range(0, len(imgs), 64)]).flatten(1).numpy()
        elif shape and int(np.prod(shape)) != points.shape[1]:
            raise ValueError(f"--data {data} has {points.shape[1]} features per point but --model {model} takes samples of shape {tuple(shape)}")
        from ..estimators.t0 import resolve_t0

        t0 = resolve_t0(t0_value, score_model.sde, points, name="--t0")  # type: ignore[assignment]
        result = mmh_analysis(
            score_model,
            points.astype(np.float32),
            t0=t0,
            trace=trace,
            n_probes=n_probes,
            k=k,
            tau=tau_value,
            tau_percentile=tau_percentile,
            alpha=alpha,
            radius=radius_value,
            radius_percentile=radius_percentile,
            od_margin=od_margin,
            dd_threshold=dd_threshold,
            data_shape=tuple(shape) if shape else None,
            seed=seed,
            batch_size=batch_size,
            progress=None if progress else False,
        )
        out.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({
            "index": np.arange(len(result)),
            "lid_theta": result.lid_theta,
            "lid_star": result.lid_star,
            "od_gap": result.od_gap,
            "mmh_class": result.mmh_class.astype(str),
        })
        table.to_csv(out / "mmh.csv", index=False)
        summary = {
            "model": str(model),
            "data": str(data),
            "columns": cols,
            "n_points": len(result),
            "settings": {
                "t0": t0, "trace": trace, "n_probes": n_probes, "seed": seed,
                "local_pca": {"k": k, "tau": tau, "tau_percentile": tau_percentile, "alpha": alpha, "radius": radius,
                              "radius_percentile": radius_percentile, **({"k_rule": k_rule} if k_rule else {})},
                "mmh": result.thresholds(),
            },
            "counts": result.counts(),
            "median_lid_theta": float(np.median(result.lid_theta)),
            "median_lid_star": float(np.median(result.lid_star)),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        c = result.counts()
        console.print(
            f"MMH of {len(result)} points (FLIPD t0={t0}, local PCA k={k}): "
            f"[bold]{c['od_mem']}[/] od_mem, [bold]{c['dd_mem']}[/] dd_mem, {c['none']} none; wrote {out / 'mmh.csv'} and {out / 'summary.json'}"
        )


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem mmh`` to the lidmem app."""
    app.command("mmh")(mmh_command)


def _float_option(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} must be a float in (0, 1] or 'auto'") from None
