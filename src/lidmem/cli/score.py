"""CLI: ``lidmem score``: resumable, data-parallel batch scoring of image data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..defaults import CFG_T0, EULER_STEPS, FLIPD_T0, NB_T0, NB_THRESHOLD
from ._common import check_score_options, console, parse_rank_threshold, renamed_option, user_errors


def _floats(text: str, name: str, n: int | None = None) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}={text!r} must be comma-separated numbers, e.g. -1,1") from None
    if n is not None and len(vals) != n:
        raise ValueError(f"{name}={text!r} must hold {n} comma-separated numbers")
    return vals


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem score`` to the lidmem app."""

    @app.command("score")
    def score(
        data: Optional[str] = typer.Option(None, "--data", help="Folder of images, list file (.txt), .parquet file/folder/glob, WebDataset .tar file/folder/glob, or a `datasets` save_to_disk folder."),
        out: Path = typer.Option(..., "--out", help="Output folder: settings.json, shards/part-*.parquet, scores.parquet."),
        model: Optional[Path] = typer.Option(None, "--model", help="Model: lidmem checkpoint, diffusers folder (pixel, latent, text-to-image; cfg_norm needs text-to-image) or package.module:factory. Not needed for png_complexity alone."),
        metrics: str = typer.Option("flipd", "--metrics", help="Comma-separated: flipd, flipd_hutchinson, nb, png_complexity, cfg_norm."),
        shard_size: int = typer.Option(1024, "--shard-size", help="Rows per output shard (unit of resumption and of work split)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Rows per model call (part of the settings: random metrics draw per batch)."),
        seed: int = typer.Option(0, "--seed", help="Base seed; each batch's seed derives from its first global row."),
        device: Optional[str] = typer.Option(None, "--device", help="Default: cuda:LOCAL_RANK when CUDA is available, else cpu."),
        precision: str = typer.Option("float32", "--precision", help="float32 | bfloat16 | float16 (autocast; for GPUs)."),
        t0: float = typer.Option(FLIPD_T0, "--t0", help="FLIPD diffusion time in (0, 1] (the fixed default of commands without the training data; README, Conventions)."),
        n_probes: int = typer.Option(1, "--n-probes", help="Hutchinson probes per point (flipd_hutchinson)."),
        probe: str = typer.Option("rademacher", "--probe", help="rademacher | gaussian."),
        nb_t0: float = typer.Option(NB_T0, "--nb-t0", help="Normal-bundle diffusion time in (0, 1]."),
        n_scores: Optional[int] = typer.Option(None, "--n-scores", help="Noisy scores per point for nb (default 4d)."),
        nb_scores: Optional[int] = typer.Option(None, "--nb-scores", hidden=True, help="Deprecated spelling of --n-scores."),
        nb_threshold: str = typer.Option(NB_THRESHOLD, "--nb-threshold", help="nb rank cut: percentile (the paper's 10th percentile, fitted once on the first batch and applied to every shard), gap (per image) or a float."),
        cfg_t0: float = typer.Option(CFG_T0, "--cfg-t0", help="cfg_norm: time of the probability-flow ODE endpoint."),
        euler_steps: int = typer.Option(EULER_STEPS, "--euler-steps", help="cfg_norm: Euler steps to --cfg-t0."),
        value_range: str = typer.Option("-1,1", "--value-range", help="Images are mapped from [0, 1] to this range for the model."),
        kind: Optional[str] = typer.Option(None, "--kind", help="folder | list | parquet | webdataset | hf (default: detected)."),
        column: Optional[str] = typer.Option(None, "--column", help="Parquet/hf: image-bytes or numeric-list column (default: first found)."),
        id_column: Optional[str] = typer.Option(None, "--id-column", help="Parquet/hf: id column (default: id, key or __key__ if present)."),
        caption_column: Optional[str] = typer.Option(None, "--caption-column", help="Parquet/hf: caption column for cfg_norm (default: caption, text or prompt)."),
        shape: Optional[str] = typer.Option(None, "--shape", help="Parquet/hf array columns: sample shape, e.g. 1,8,8."),
        mode: Optional[str] = typer.Option(None, "--mode", help="L | RGB (default: that of the first image)."),
        merge: bool = typer.Option(False, "--merge", help="Only merge the finished shards in --out into scores.parquet."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."),
        bad_images: str = typer.Option("stop", "--bad-images", help="An image that cannot be decoded: stop (name it; finished shards are kept) or skip (null scores, listed in OUT/bad_rows.parquet)."),
    ) -> None:
        """Score a data set into resumable Parquet shards (rerun to resume; torchrun/accelerate to scale out).

        Example: lidmem score --model model.safetensors --data images/ --metrics flipd_hutchinson,png_complexity --out scores/
        Several workers: torchrun --nproc_per_node 4 -m lidmem.cli.main score ... (each takes shards i % 4).
        """
        from ..scoring import merge_shards, score_dataset
        from .._validation import check_choice, check_int_list
        from ..scoring.sources import open_source

        with user_errors("score"):
            if merge:
                path = merge_shards(out)
                console.print(f"merged {out} -> {path}")
                return
            if data is None:
                raise ValueError("--data is required (or pass --merge to merge a finished run)")
            n_scores = renamed_option(n_scores, nb_scores, new="--n-scores", old="--nb-scores")  # type: ignore[assignment]
            check_score_options(out=out, model=model, metrics=metrics, shard_size=shard_size, batch_size=batch_size, seed=seed,
                                device=device, precision=precision, t0=t0, n_probes=n_probes, probe=probe, nb_t0=nb_t0,
                                n_scores=n_scores, cfg_t0=cfg_t0, euler_steps=euler_steps, nb_threshold=nb_threshold)
            check_choice(bad_images, "--bad-images", ("stop", "skip"))
            source = open_source(
                data,
                kind=kind,
                column=column,
                id_column=id_column,
                shape=check_int_list(shape, "--shape") if shape else None,
                mode=mode,
                caption_column=caption_column,
            )
            lo, hi = _floats(value_range, "--value-range", 2)
            res = score_dataset(
                model,
                source,
                out,
                metrics=[m.strip() for m in metrics.split(",") if m.strip()],
                t0=t0,
                n_probes=n_probes,
                probe=probe,
                nb_t0=nb_t0,
                n_scores=n_scores,
                nb_threshold=parse_rank_threshold(nb_threshold, "--nb-threshold"),
                value_range=(lo, hi),
                cfg_t0=cfg_t0,
                euler_steps=euler_steps,
                shard_size=shard_size,
                batch_size=batch_size,
                seed=seed,
                precision=precision,
                device=device,
                progress=progress,
                bad_images=bad_images,
            )
        console.print(
            f"scored {res.rows_scored} rows in {len(res.shards_scored)} shards ({res.rows_per_second:.1f} rows/s); "
            f"skipped {len(res.shards_skipped)} finished shards; {res.n_shards} shards in all"
        )
        if res.bad_rows:
            console.print(f"skipped {len(res.bad_rows)} rows whose image could not be decoded (null scores; listed in {out / 'bad_rows.parquet'} after the merge)", soft_wrap=True)
        if res.merged is not None:
            console.print(f"table: {res.merged}")
        else:
            console.print(f"not merged (this worker has no rendezvous with the others): when every worker is done, run `lidmem score --out {out} --merge`", soft_wrap=True)
