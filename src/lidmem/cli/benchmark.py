"""CLI: ``lidmem benchmark`` - compare detectors side by side on the same inputs.

``lidmem benchmark detectors`` runs every registered prompt memorization detector
(:data:`lidmem.text2image.detectors.DETECTORS`) on the same memorized and generic prompt sets with
the same seeds, and writes one table (AUROC, TPR@1%FPR, UNet evaluations and seconds per prompt),
the per-prompt scores, one figure (AUROC against cost) and ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._common import console, user_errors

benchmark_app = typer.Typer(help="Compare detectors side by side on the same inputs and seeds.", no_args_is_help=True)


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add the ``benchmark`` command group to the lidmem app."""
    app.add_typer(benchmark_app, name="benchmark")


def _prompt_files(prompts: str | None, memorized: Path | None, generic: Path | None) -> tuple[Path, Path] | None:
    """The two prompt files (memorized, generic) from ``--prompts MEM,GEN`` or ``--memorized`` /
    ``--generic``; None when neither is given (the shipped model's planted sets)."""
    if prompts is not None:
        if memorized is not None or generic is not None:
            raise ValueError("give either --prompts MEM,GEN or --memorized MEM --generic GEN, not both")
        parts = [p.strip() for p in prompts.split(",") if p.strip()]
        if len(parts) != 2:
            raise ValueError(f"--prompts={prompts!r} must be two files separated by a comma: MEMORIZED,GENERIC (e.g. mem.txt,gen.txt)")
        return Path(parts[0]), Path(parts[1])
    if (memorized is None) != (generic is None):
        raise ValueError("--memorized and --generic go together: give both files (or --prompts MEM,GEN)")
    if memorized is None:
        return None
    return memorized, generic  # type: ignore[return-value]


@benchmark_app.command("detectors")
def detectors_command(
    model: str = typer.Option(None, "--model", "-m", help="Text-to-image model folder (default: the shipped small model with its planted memorized captions)."),
    prompts: str = typer.Option(None, "--prompts", "-p", help="MEMORIZED,GENERIC: two prompt files (.txt one per line, or .csv/.tsv/.parquet with a caption column)."),
    memorized: Path = typer.Option(None, "--memorized", help="Prompt file of memorized prompts (with --generic; alternative to --prompts)."),
    generic: Path = typer.Option(None, "--generic", help="Prompt file of generic (non-memorized) prompts (with --memorized)."),
    column: str = typer.Option(None, help="Caption column of table prompt files (default caption/prompt/text)."),
    detectors: str = typer.Option("all", help="Comma-separated detector names, or 'all' (a_cfg, a_scfg, a_flipd, wen, sharpness, sharpness_step1, anisotropy)."),
    n_generations: int = typer.Option(4, help="Initial noises per prompt (shared by all prompts and detectors)."),
    num_inference_steps: int = typer.Option(20, help="DDIM steps of every sampler (>= 3 for the anisotropy detector)."),
    guidance_scale: float = typer.Option(5.0, help="Classifier-free guidance scale lambda of the sampler and CFG quantities."),
    n_probes: int = typer.Option(1, help="Hutchinson probes per state for A^FLIPD."),
    batch_size: int = typer.Option(8, help="Prompts processed together (batch_size * n_generations rows per UNet call)."),
    n_other_prompts: int = typer.Option(32, help="Generic prompts of the shipped model's default sets (ignored with prompt files)."),
    seed: int = typer.Option(0, help="Seed of the shared initial noise and probes."),
    out: Path = typer.Option(Path("detector_benchmark"), "--out", "-o", help="Output folder: detectors.csv, detector_scores.csv, detectors_auroc_vs_cost.png, summary.json."),
    fmt: str = typer.Option("csv", "--format", help="Table format: csv or parquet."),
    device: str = typer.Option("cpu", help="Torch device."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
) -> None:
    """Every prompt memorization detector on the same prompt sets and seeds: AUROC, TPR@1%FPR,
    cost (UNet evaluations and seconds per prompt); one table and one AUROC-vs-cost figure."""
    from .._validation import check_choice, check_finite, check_positive_int, check_seed
    from ..text2image.detectors import detector_names

    with user_errors():
        from .t2i import _check_common

        from ..experiments.text2image import shipped_text2image_path

        model_path = shipped_text2image_path() if model is None else model
        _check_common(out=out, fmt=fmt, device=device, dtype=dtype, model=model_path, allow_download=False)
        names = list(detector_names()) if detectors.strip() == "all" else [d.strip() for d in detectors.split(",") if d.strip()]
        if not names:
            raise ValueError(f"--detectors={detectors!r} is empty; give 'all' or names from {', '.join(detector_names())}")
        for n in names:
            check_choice(n, "--detectors", detector_names())
        for value, name in ((n_generations, "--n-generations"), (num_inference_steps, "--num-inference-steps"), (n_probes, "--n-probes"),
                            (batch_size, "--batch-size"), (n_other_prompts, "--n-other-prompts")):
            check_positive_int(value, name)
        check_seed(seed, "--seed")
        check_finite(guidance_scale, "--guidance-scale")
        if "anisotropy" in names and num_inference_steps < 3:
            raise ValueError(f"--num-inference-steps={num_inference_steps} must be >= 3 for the anisotropy detector (it reads the third-to-last DDIM timestep)")
        files = _prompt_files(prompts, memorized, generic)
        if files is None and column is not None:
            raise ValueError(f"--column {column} names the caption column of prompt tables; give --prompts MEM,GEN or --memorized/--generic too")
        if files is None:
            from ..text2image.detectors import shipped_prompt_sets

            mem, gen = shipped_prompt_sets(model_path, n_other_prompts=n_other_prompts, seed=seed)
            source = {"memorized": f"the {len(mem)} planted memorized captions of {model_path} (lidmem.json)",
                      "generic": f"toydata.non_memorized_prompts({n_other_prompts}, seed={seed + 1}) (as lidmem demo text2image)"}
        else:
            from ..text2image import read_prompts

            mem = read_prompts(files[0], column=column)
            gen = read_prompts(files[1], column=column)
            source = {"memorized": str(files[0]), "generic": str(files[1])}
        _run(model_path, mem, gen, source, names, out, fmt, device, dtype, n_generations, num_inference_steps, guidance_scale,
             n_probes, batch_size, seed)


def _ci(row: Any, key: str) -> str:
    """``0.912 [0.871, 0.950]`` from a detectors-table row's ``key`` and its interval columns."""
    from ..memorization.metrics import format_with_interval

    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return format_with_interval(row[key], None if lo is None or hi is None else (lo, hi))


def _run(
    model_path: str, mem: list[str], gen: list[str], source: dict[str, str], names: list[str], out: Path, fmt: str, device: str,
    dtype: str, n_generations: int, steps: int, guidance_scale: float, n_probes: int, batch_size: int, seed: int,
) -> None:
    from rich.table import Table

    from ..text2image.detectors import benchmark_detectors, plot_detector_benchmark
    from .t2i import _load, _write

    console.print(f"loading {model_path}")
    mdl = _load(model_path, device, dtype, False)
    setting = f"DDIM {steps} steps, {n_generations} generations/prompt, guidance {guidance_scale:g}, seed {seed}, {n_probes} probe(s)"
    console.print(f"{len(mem)} memorized vs {len(gen)} generic prompts; {setting}", soft_wrap=True)

    def on_result(r: dict[str, Any]) -> None:
        console.print(f"  {r['detector']:<16} AUROC {_ci(r, 'auroc')}  TPR@1%FPR {_ci(r, 'tpr_at_1pct_fpr')}  "
                      f"{r['model_calls_per_prompt']} UNet evals/prompt  {r['seconds_per_prompt']:.3f} s/prompt", soft_wrap=True)

    table, scores = benchmark_detectors(mdl, mem, gen, detectors=names, n_generations=n_generations, num_inference_steps=steps,
                                        guidance_scale=guidance_scale, seed=seed, batch_size=batch_size, n_probes=n_probes,
                                        progress=None, on_result=on_result)
    t_path = _write(table, out, "detectors", fmt)
    s_path = _write(scores, out, "detector_scores", fmt)
    fig = out / "detectors_auroc_vs_cost.png"
    plot_detector_benchmark(table, fig, title=f"{Path(model_path).name}: {setting}")
    summary = {
        "model": model_path,
        "prompts": source,
        "n_memorized": len(mem),
        "n_generic": len(gen),
        "settings": {"num_inference_steps": steps, "n_generations": n_generations, "guidance_scale": guidance_scale,
                     "n_probes": n_probes, "seed": seed, "batch_size": batch_size, "device": device, "dtype": dtype},
        "setting": f"every row: {setting}; 'steps_used' says which sampler states each detector reads",
        "cost_convention": "UNet evaluations per prompt: one sample through the UNet once = 1, both CFG branches = 2, a forward-mode JVP = 2",
        "timing_note": "seconds_per_prompt is wall time of that detector over all prompts / number of prompts, in one process",
        "detectors": json.loads(table.to_json(orient="records")),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    rt = Table(title=f"Prompt detectors: {len(mem)} memorized vs {len(gen)} generic ({setting})")
    for col in ("detector", "AUROC [95% CI]", "TPR@1%FPR [95% CI]", "UNet evals/prompt", "s/prompt", "larger = memorized", "uses"):
        rt.add_column(col)
    for _, r in table.iterrows():
        rt.add_row(r["detector"], _ci(r, "auroc"), _ci(r, "tpr_at_1pct_fpr"), str(r["model_calls_per_prompt"]),
                   f"{r['seconds_per_prompt']:.3f}", str(bool(r["higher_is_memorized"])), r["steps_used"])
    import sys

    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(rt)
    console.print(f"wrote {t_path}, {s_path}, {fig}, {out / 'summary.json'}", soft_wrap=True)
