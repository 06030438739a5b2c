"""CLI: ``lidmem demo vonmises`` - the paper's Fig. 4 experiment (OD-Mem and DD-Mem in 2-D)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import check_out, console, user_errors


def vonmises_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (samples.csv, training.csv, summary.json, figure.png)."),
    retrain: bool = typer.Option(False, "--retrain", help="Train the model from scratch instead of loading the shipped weights (minutes)."),
    steps: int | None = typer.Option(None, help="Training steps with --retrain (default: those of the shipped checkpoint)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Use this lidmem checkpoint instead of the shipped one."),
    seed: int = typer.Option(1, "--seed", help="Seed of the generated samples."),
    train_seed: int | None = typer.Option(None, help="Seed of network init and training with --retrain (default: the shipped one's)."),
    n_samples: int = typer.Option(1000, help="Number of generated samples."),
    t0: float = typer.Option(0.005, help="FLIPD time t0, tuned for this demo (0.005, not the library default of lidmem.defaults; docs/vonmises.md explains the choice)."),
    k: int = typer.Option(10, "--k", "-k", help="Local PCA neighbours for LID_* (n = 100 training points)."),
    od_margin: float = typer.Option(0.5, help="OD-Mem: lid_theta < lid_star - od_margin."),
    dd_threshold: float = typer.Option(0.5, help="DD-Mem: lid_star <= dd_threshold and lid_theta <= dd_threshold + od_margin."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars (on a terminal)."),
) -> None:
    """von Mises mixture + point mass (paper Sec. 4.1, Fig. 4): samples, FLIPD, local PCA and MMH classes."""
    with user_errors():
        from ..experiments import vonmises as vm

        from .._validation import check_finite, check_positive_int, check_seed, check_t0

        check_out(out)
        check_t0(t0, "--t0")
        check_positive_int(n_samples, "--n-samples")
        check_positive_int(k, "--k")
        check_seed(seed, "--seed")
        if train_seed is not None:
            check_seed(train_seed, "--train-seed")
        if k > vm.N_TRAIN - 1:
            raise ValueError(f"--k={k} must be <= {vm.N_TRAIN - 1}: local PCA runs on the {vm.N_TRAIN} training points; lower --k")
        if steps is not None:
            check_positive_int(steps, "--steps")
        check_finite(od_margin, "--od-margin")
        check_finite(dd_threshold, "--dd-threshold")
        if model is not None and not model.is_file():
            raise ValueError(f"--model {model} is not a file; give a lidmem checkpoint (.safetensors)")
        bar = None if progress else False
        if retrain and model is not None:
            raise ValueError("--retrain and --model exclude each other; give one")
        if retrain:
            ckpt = out / "model.safetensors"
            console.print(f"training the von Mises model ({steps or vm.TRAIN_STEPS} steps) -> {ckpt}")
            trained = vm.train_vonmises_model(
                steps=steps or vm.TRAIN_STEPS, seed=vm.TRAIN_SEED if train_seed is None else train_seed, checkpoint=ckpt, progress=bar
            )
            console.print(f"trained {trained.steps} steps in {trained.elapsed_s:.0f} s")
            source: Path | None = ckpt
        else:
            source = model
        result = vm.run_vonmises(source, n_samples=n_samples, sample_seed=seed, t0=t0, k=k, od_margin=od_margin,
                                 dd_threshold=dd_threshold, progress=bar)
        paths = vm.write_vonmises(result, out)
        s = result.summary
        console.print(
            f"median FLIPD of samples near the origin: {s['median_lid_theta_samples_near_origin']}, "
            f"near the circle: {s['median_lid_theta_samples_near_circle']}; MMH classes of the training points: {s['mmh_counts']}"
        )
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem demo vonmises`` to the demo group."""
    demo_app.command("vonmises")(vonmises_command)
