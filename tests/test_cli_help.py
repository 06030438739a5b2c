"""Every ``lidmem`` command and sub-command answers ``--help`` with its own usage text."""

import typer
from typer.testing import CliRunner

from lidmem.cli.main import app


def _command_paths(cmd, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(cmd, "commands", {}).items():
        paths.extend(_command_paths(sub, prefix + (name,)))
    return paths


def test_every_command_has_help():
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    names = {" ".join(p) for p in paths}
    # the commands the issues promise
    for expected in ["lid", "mmh", "audit", "score", "demo vonmises", "demo digits", "demo text2image",
                     "t2i score-images", "t2i detect-prompts", "t2i attribute", "t2i mitigate", "benchmark detectors"]:
        assert expected in names, f"missing command: lidmem {expected}"
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
