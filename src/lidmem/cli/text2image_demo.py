"""CLI: ``lidmem demo text2image`` — detection, attribution and mitigation on the shipped small model."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import check_out, console, user_errors


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add this module's commands to the lidmem app (or to lidmem demo)."""

    @demo_app.command("text2image")
    def text2image(
        out: Path = typer.Option(Path("text2image_demo"), "--out", help="Output folder: summary.json, CSV tables, report.html."),
        model: str = typer.Option(None, "--model", help="Model folder built by scripts/train_text2image.py (default: the shipped one)."),
        guidance_scale: float = typer.Option(5.0, help="Classifier-free guidance scale lambda."),
        num_inference_steps: int = typer.Option(20, help="DDIM steps of every sampler."),
        n_generations: int = typer.Option(4, help="Trajectories per prompt for the prompt metrics."),
        n_other_prompts: int = typer.Option(32, help="Non-memorized prompts."),
        n_other_images: int = typer.Option(200, help="Non-duplicated training images."),
        repeats: int = typer.Option(2, help="Mitigation repeats per (method, k)."),
        seed: int = typer.Option(0, help="Seed."),
    ) -> None:
        """Planted memorization in a small text-to-image model: prompt and image detection,
        token attribution, and prompt rewriting (paper Sec. 4.1-4.2). Image FLIPD uses t0 = 0.2, tuned
        for this demo (not the library default, lidmem.defaults.FLIPD_T0 = 0.05; docs/text2image.md)."""
        from ..experiments.text2image import Text2ImageDemoConfig, run_text2image_demo, write_text2image_demo

        with user_errors():
            from .._validation import check_finite, check_positive_int, check_seed

            check_out(out)
            check_finite(guidance_scale, "--guidance-scale")
            check_seed(seed, "--seed")
            if model is not None and not Path(model).is_dir():
                raise ValueError(f"--model {model} is not a folder; give a model folder built by scripts/train_text2image.py")
            for value, name in ((num_inference_steps, "--num-inference-steps"), (n_generations, "--n-generations"),
                                (n_other_prompts, "--n-other-prompts"), (n_other_images, "--n-other-images"), (repeats, "--repeats")):
                check_positive_int(value, name)
            cfg = Text2ImageDemoConfig(
                model=model, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, n_generations=n_generations,
                n_other_prompts=n_other_prompts, n_other_images=n_other_images, repeats=repeats, seed=seed,
            )
            result = run_text2image_demo(cfg)
            paths = write_text2image_demo(result, out)
        for _, r in result.prompt_detection.iterrows():
            console.print(f"prompt {r['metric']:<8} AUROC {r['auroc']:.3f}  TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f}")
        for _, r in result.image_detection.iterrows():
            console.print(f"image  {r['metric']:<12} AUROC {r['auroc']:.3f}  TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f}")
        console.print("attribution hit rate: " + ", ".join(f"{k} {v:.2f}" for k, v in result.attribution_hit_rate.items()))
        passed = result.acceptance.get("all_passed")
        console.print(f"acceptance checks all passed: {passed}")
        console.print(f"summary: {paths['summary']}  report: {paths['report']}")
