"""CLI: ``lidmem lid`` - LID_* of every point of a data set (local PCA or scikit-dimension)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import check_lid_options, check_out, console, parse_lpca_radius, parse_lpca_tau, user_errors

ESTIMATORS = ("lpca", "mle", "twonn", "ess")


def lid_command(
    data: Path = typer.Argument(..., help="Data set: .npy, .csv, .parquet (numeric columns) or a folder of images."),
    estimator: str = typer.Option(
        "lpca", "--estimator", "-e", help="lpca (lidmem's local PCA), or scikit-dimension's mle, twonn, ess."
    ),
    k: int = typer.Option(100, "--k", "-k", help="Neighbourhood size (nearest neighbours per point)."),
    tau: str = typer.Option(
        "fo", help="lpca threshold: 'fo' (Fukunaga-Olsen alpha * largest; a dimension estimate), 'percentile' (paper: global percentile of explained variances; a ranking score) or a number."
    ),
    tau_percentile: float = typer.Option(10.0, help="lpca: percentile of pooled explained variances for --tau percentile."),
    alpha: float = typer.Option(0.05, help="Fukunaga-Olsen ratio (lpca with --tau fo; skdim lpca has no other)."),
    radius: str = typer.Option(
        "0", help="lpca neighbourhood restriction: a radius (0 = exact duplicates only, the default), 'percentile' (paper) or 'none'."
    ),
    radius_percentile: float = typer.Option(10.0, help="lpca: percentile of pairwise distances for --radius percentile."),
    seed: int = typer.Option(0, help="Seed for the subsample of pairs behind the distance percentile (large data)."),
    search: str = typer.Option(
        "auto", help="lpca nearest-neighbour search: exact, faiss (approximate, blocked; for 1e5-1e6 points) or auto (faiss above 5e7 pairs when installed), as in `lidmem audit`."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output table, .csv or .parquet; CSV to stdout when omitted."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (on a terminal)."),
    columns: str | None = typer.Option(None, "--columns", help="CSV/Parquet: comma-separated columns to use (needed when the table has non-numeric columns)."),
) -> None:
    """Estimate LID_* at every point of DATA and write one row per point (index, name, lid)."""
    with user_errors():
        import numpy as np
        import pandas as pd

        from .._validation import check_choice
        from ..data.io import load_image_folder, load_points
        from ..neighbors import SEARCHES

        if estimator not in ESTIMATORS:
            raise ValueError(f"--estimator={estimator!r} is not supported; choose one of {', '.join(ESTIMATORS)}")
        check_choice(search, "--search", SEARCHES)
        if out is not None:
            check_out(out, kind="file", suffixes=(".csv", ".parquet"))
        check_lid_options(k=k, tau=tau, tau_percentile=tau_percentile, alpha=alpha, radius=radius, radius_percentile=radius_percentile, seed=seed)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
        if not data.exists():
            raise FileNotFoundError(f"data path {data} does not exist")
        if data.is_dir():
            if cols is not None:
                raise ValueError(f"--columns applies to .csv and .parquet tables, not to the folder {data}")
            images, names = load_image_folder(data)
            points = images.reshape(len(images), -1)
        else:
            points = load_points(data, columns=cols)
            names = None
        if k >= len(points):
            raise ValueError(f"--k={k} must be < the number of points in {data} ({len(points)}); lower --k")
        if len(points) == 0:
            raise ValueError(f"data set {data} is empty")

        bar = None if progress else False  # shown on a terminal only
        info: dict[str, object] = {}
        if estimator == "lpca":
            from ..estimators import LocalPCA

            est = LocalPCA(
                k,
                tau=parse_lpca_tau(tau),
                tau_percentile=tau_percentile,
                alpha=alpha,
                radius=parse_lpca_radius(radius),
                radius_percentile=radius_percentile,
                seed=seed,
                progress=bar,
                search=search,
            ).fit(points)
            lid = est.estimate().numpy()
            info = {"search": est.search_, "tau": "fo" if est.tau_ is None else f"{est.tau_:.4g}", "radius": "none" if est.radius_ is None else f"{est.radius_:.4g}"}
        else:
            from ..estimators import SkdimEstimator

            lid = SkdimEstimator(estimator, k, alpha=alpha, progress=bar).fit(points).estimate().numpy()

        table = pd.DataFrame({"index": np.arange(len(lid))})
        if names is not None:
            table["name"] = names
        table["lid"] = lid
        if out is None:
            typer.echo(table.to_csv(index=False), nl=False)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix.lower() == ".csv":
                table.to_csv(out, index=False)
            else:
                table.to_parquet(out, index=False)

        summary = (
            f"[bold]{estimator}[/] LID_* of {len(lid)} points in R^{points.shape[1]} (k={k}"
            + "".join(f", {key}={val}" for key, val in info.items())
            + f"): mean {np.mean(lid):.2f}, median {np.median(lid):.2f}, min {np.min(lid):.2f}, max {np.max(lid):.2f}; "
            f"{int(np.sum(lid == 0))} at LID 0"
        )
        console.print(summary)
        if out is not None:
            console.print(f"wrote {out}")


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem lid`` to the lidmem app."""
    app.command("lid")(lid_command)
