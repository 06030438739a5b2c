"""CLI: ``lidmem inspect MODEL`` - what lidmem detected in a model reference, before a long run."""

from __future__ import annotations

import json

import typer

from ._common import user_errors


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add ``lidmem inspect`` to the lidmem app."""

    @app.command("inspect")
    def inspect(
        model: str = typer.Argument(..., help="lidmem checkpoint (.safetensors), diffusers folder or package.module:factory."),
        as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
        device: str = typer.Option("cpu", "--device", help="torch device to load the model on."),
    ) -> None:
        """Load MODEL the way audit / mmh / score do and print its kind, SDE and t range,
        parametrisation, data shape, value range, pixel or latent space and parameter count."""
        from ..models import check_model_call, load_model
        from ._common import check_device_option, check_model_file

        with user_errors():
            check_device_option(device)
            check_model_file(model, "a lidmem checkpoint (.safetensors), a diffusers model folder or package.module:factory", "MODEL")
            loaded = load_model(model, device=device)
            info = loaded.info
            # a factory's network is the user's code: run it once, as the commands will
            call = check_model_call(loaded) if info.source == "entry_point" else None
        if as_json:
            typer.echo(json.dumps({**info.to_dict(), **({"model_call": call} if call else {})}, indent=2))
        else:
            lines = info.lines()
            width = lines[0].index(" : ")
            typer.echo("\n".join(lines + ([f"{'model call':<{width}} : {call}"] if call else [])))
