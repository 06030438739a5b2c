"""CLI: ``lidmem demo digits`` - memorization audit of the shipped digits models (planted duplicates)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import check_out, console, user_errors


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem demo digits``."""

    @demo_app.command("digits")
    def digits(
        out: Path = typer.Option(Path("digits_audit"), "--out", help="Output folder (one subfolder per model)."),
        num_samples: int = typer.Option(300, help="Samples generated per model."),
        sampling_steps: int = typer.Option(30, help="Heun steps of the probability-flow ODE."),
        generator: bool = typer.Option(True, help="Also audit the shipped memorizing generator (Jacobian-rank LID)."),
        seed: int = typer.Option(0, help="Seed."),
    ) -> None:
        """Audit the shipped digits UNet (and generator) trained with 30 images duplicated 30x."""
        from ..experiments.digits import digits_demo

        with user_errors():
            from .._validation import check_positive_int, check_seed

            check_out(out)
            check_positive_int(num_samples, "--num-samples")
            check_positive_int(sampling_steps, "--sampling-steps")
            check_seed(seed, "--seed")
            results = digits_demo(out, num_samples=num_samples, num_inference_steps=sampling_steps, generator=generator, seed=seed)
        from ..memorization.metrics import format_with_interval as ci

        for name, res in results.items():
            s = res.summary
            copies = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in s["copy_label_counts"].items())
            classes = ", ".join(f"{v} {k}" for k, v in s["mmh_class_counts"].items())
            console.print(f"[bold]{name}[/]: {s['n_samples']} samples: {copies}; MMH classes: {classes}")
            if "planted_duplicates" in s:
                pdup = s["planted_duplicates"]
                console.print(f"  planted duplicates: {pdup['exact_copies_of_planted']} exact copies of planted images "
                              f"({pdup['distinct_planted_reproduced']} of {pdup['n_distinct_duplicated']} reproduced)")
            for row in s["detection"]:
                if row["auroc"] is not None:
                    console.print(f"  {row['positive']:>22} | {row['score']:<20} AUROC {ci(row['auroc'], row.get('auroc_ci'))}  "
                                  f"TPR@1%FPR {ci(row['tpr_at_1pct_fpr'], row.get('tpr_at_1pct_fpr_ci'))}", highlight=False)
            if s.get("jacobian_rank_auroc") is not None:
                console.print(f"  Jacobian-rank LID_theta separates copies from other samples: AUROC {s['jacobian_rank_auroc']:.3f}")
            if "reliability" in s:
                console.print(f"  reliability: {s['reliability']['verdict']}", highlight=False)
            console.print(f"  report: {Path(out) / name / 'report.html'}")
