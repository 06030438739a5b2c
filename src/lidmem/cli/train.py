"""CLI: ``lidmem train`` - train lidmem's image UNet on your images, then audit it.

    lidmem train --data imgs/ --out model.safetensors
    lidmem audit --model model.safetensors --train imgs/ --out audit/
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import check_device_option, check_out, console, user_errors


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem train`` to the lidmem app."""

    @app.command("train")
    def train(
        data: str = typer.Option(..., "--data", help="Images: a folder, a .npy (n,c,s,s) in [-1,1], Parquet file/folder, a save_to_disk folder, or 'digits'."),
        out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors); its .train_state sidecar makes reruns resume."),
        preset: Optional[str] = typer.Option(None, help="A measured recipe: photo16 (16x16 photos), photo32 (32x32 photos); see README 'Train a model worth auditing'. Default: from the image side."),
        steps: Optional[int] = typer.Option(None, help="Total optimisation steps (default from the image side or --preset; see docs/models.md)."),
        batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default from the image side)."),
        lr: Optional[float] = typer.Option(None, help="Adam learning rate (default from the image side)."),
        channels: Optional[str] = typer.Option(None, help="UNet block_out_channels, e.g. 32,64 (default from the image side)."),
        ema_decay: Optional[float] = typer.Option(None, help="EMA decay of the weights (the checkpoint holds the EMA; default 0.999 or --preset's)."),
        checkpoint_every: int = typer.Option(500, help="Write the checkpoint every N steps (and on Ctrl-C)."),
        resume: bool = typer.Option(True, "--resume/--restart", help="Continue from --out's training state when it exists."),
        column: Optional[str] = typer.Option(None, help="Parquet / save_to_disk: the image column (default: first found)."),
        grid: int = typer.Option(64, help="Samples in the PNG grid written next to --out at the end (0: none)."),
        sampling_steps: int = typer.Option(50, help="Heun steps of the probability-flow ODE for the grid."),
        seed: int = typer.Option(0, help="Seed of the initial weights, minibatches, times and noise."),
        device: Optional[str] = typer.Option(None, help="torch device (default cpu)."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar with the loss (default: on a terminal)."),
        monitor: bool = typer.Option(False, "--monitor", help="Watch for memorization at the default interval (every 100 steps: lidmem.monitor.DEFAULT_EVERY; docs/monitor.md)."),
        monitor_every: Optional[int] = typer.Option(None, help="Score probe training images with FLIPD every N steps (lidmem.monitor; docs/monitor.md; default with --monitor: 100); --out m.safetensors gets m.monitor.parquet and m.monitor.png."),
        monitor_probes: Optional[int] = typer.Option(None, help="Distinct training images the monitor watches (default 256, lidmem.monitor.DEFAULT_PROBE_IMAGES: every duplicated image first, then random ones)."),
        stop_when_memorizing: bool = typer.Option(False, "--stop-when-memorizing", help="Stop at the monitor's first alarm; the checkpoint keeps the last save before it."),
    ) -> None:
        """Train lidmem's pixel-space image UNet (VP-SDE, epsilon, EMA) on your images; Ctrl-C saves, rerun resumes."""
        from ..workflows.train import check_sample_grid, read_training_images, train_image_model

        with user_errors():
            # every option and --out before the data are read and any step is taken
            from .._validation import check_choice, check_finite, check_int_list, check_positive_int, check_seed
            from ..workflows.train import TRAIN_PRESETS, train_settings

            check_out(out, kind="file", suffixes=(".safetensors",))
            if preset is not None:
                check_choice(preset, "preset", tuple(TRAIN_PRESETS))
            for value, name in ((steps, "--steps"), (batch_size, "--batch-size")):
                if value is not None:
                    check_positive_int(value, name)
            if lr is not None and not check_finite(lr, "--lr") > 0:
                raise ValueError(f"--lr={lr} must be > 0")
            if ema_decay is not None and not 0.0 <= check_finite(ema_decay, "--ema-decay") < 1.0:
                raise ValueError(f"--ema-decay={ema_decay} must lie in [0, 1)")
            check_positive_int(checkpoint_every, "--checkpoint-every")
            check_positive_int(grid, "--grid", minimum=0)
            check_positive_int(sampling_steps, "--sampling-steps")
            check_seed(seed, "--seed")
            check_device_option(device)
            if monitor_every is not None:
                check_positive_int(monitor_every, "--monitor-every")
            elif monitor:
                from ..monitor import DEFAULT_EVERY

                monitor_every = DEFAULT_EVERY
            if monitor_probes is not None:
                check_positive_int(monitor_probes, "--monitor-probes", minimum=2)
            if stop_when_memorizing and monitor_every is None:
                raise ValueError("--stop-when-memorizing needs --monitor (or --monitor-every N)")
            chans = tuple(check_int_list(channels, "--channels")) if channels else None
            images, desc = read_training_images(data, column=column)
            d = train_settings(int(images.shape[-1]), preset)
            console.print(
                f"training on {len(images)} images of shape {tuple(images.shape[1:])}{f' (preset {preset})' if preset else ''}: "
                f"channels {chans or d.block_out_channels}, {d.steps if steps is None else steps} steps, "
                f"batch {d.batch_size if batch_size is None else batch_size}, lr {d.lr if lr is None else lr:g}, {d.prediction} prediction"
            )
            try:
                res = train_image_model(
                    images, out, preset=preset, steps=steps, batch_size=batch_size, lr=lr, block_out_channels=chans, ema_decay=ema_decay,
                    checkpoint_every=checkpoint_every, resume=resume, seed=seed, extra={"data": desc}, progress=progress, device=device,
                    monitor_every=monitor_every, monitor_probes=monitor_probes, stop_when_memorizing=stop_when_memorizing,
                )
            except KeyboardInterrupt:
                console.print(f"interrupted; the checkpoint {out} holds the last step. Rerun the same command to resume.")
                raise typer.Exit(code=130) from None
        note = f" (resumed from step {res.resumed_from})" if res.resumed_from else ""
        model = res.model
        if res.stopped_at is not None:
            if out.is_file():
                from ..models import load_model

                model = load_model(out, device=device or "cpu")
                console.print(f"memorization alarm at step {res.stopped_at}: stopped; {out} keeps the last checkpoint before it")
            else:
                console.print(f"memorization alarm at step {res.stopped_at}, before the first checkpoint (--checkpoint-every {checkpoint_every}): nothing was saved")
                model = None
        else:
            console.print(f"{res.steps} steps{note}, final loss {res.losses[-50:].mean():.4f}; wrote {out}")
        if monitor_every is not None:
            _write_monitor_outputs(out)
        if grid > 0 and model is not None:
            _report_grid(check_sample_grid(model, tuple(images.shape[1:]), out.with_suffix(".samples.png"), n=grid,
                                           steps=sampling_steps, seed=seed), out, res.steps)
        console.print(f"next: lidmem audit --model {out} --train {data} --out audit/")


def _report_grid(check: dict, out: Path, steps: int) -> None:
    """Print the sample grid's in-range share, warn when it is low, and write ``<out>.samples.json``."""
    import json

    from ..memorization.reliability import IN_RANGE_TARGET

    r = check["in_range"]
    console.print(f"wrote {check['png']}")
    console.print(f"sample grid: {r['n_in_range']} of {r['n']} samples ({r['fraction']:.0%}) inside the data range [-1, 1] "
                  f"(values in [{r['sample_min']:.2f}, {r['sample_max']:.2f}])", highlight=False)
    weak = r["fraction"] < IN_RANGE_TARGET
    if weak:
        console.print(f"warning: below {IN_RANGE_TARGET:.0%} in range the model is too weak to audit (its samples are not images of "
                      "the data); train longer (--steps) and rerun the same command to resume. README: 'Train a model worth auditing'.",
                      highlight=False)
    summary = {"checkpoint": str(out), "steps": int(steps), "sample_grid": str(check["png"]), "in_range": r,
               "in_range_target": IN_RANGE_TARGET, "too_weak_to_audit": bool(weak)}
    path = out.with_suffix(".samples.json")
    path.write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {path}")


def _write_monitor_outputs(out: Path) -> None:
    """Print the monitor's verdict and write its figure next to ``out``."""
    import pandas as pd

    from ..workflows.train import monitor_log_path
    from ..monitor import step_summaries
    from ..reports.figures import monitor_figure, save_figure

    log = monitor_log_path(out)
    if not log.is_file():
        console.print("monitor: no step was scored (fewer steps than --monitor-every)")
        return
    df = pd.read_parquet(log)
    steps = step_summaries(df)
    alarms = steps[steps["memorizing"]]
    last = steps.iloc[-1]
    verdict = f"first alarm at step {int(alarms.step.iloc[0])}" if len(alarms) else "no alarm"
    console.print(f"monitor: {len(steps)} steps scored, {verdict}; last signal {last.signal:.3f} ({int(last.n_flagged)} flagged); wrote {log}")
    png = save_figure(monitor_figure(df), log.with_suffix(".png"))
    console.print(f"wrote {png}")
